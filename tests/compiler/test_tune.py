"""vitrt tune: a failing trial is recorded, not fatal; the report under / over budget; a small end-to-end
search on the shipped digits T2T-ViT on a local Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vitrt.compiler.tune import _report, compile_command
from vitrt.compiler.tune_model import ModelSource, resolve_model
from vitrt.compiler.tune_space import TrialConfig
from vitrt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DIGITS_T2T = ROOT / "benchmarks" / "digits" / "digits_t2t_vit.safetensors"


def test_an_invalid_r_is_a_failed_trial_record_not_an_exception() -> None:
    from vitrt.compiler.tune_trial import build_trial

    source = resolve_model(str(DIGITS_T2T))
    bad = TrialConfig(fusion={"preset": "tome", "r": [8, 0, 0, 0]}, precision="fp32")  # 17 tokens: at most 7
    images = np.zeros((2, 3, 64, 64), np.float32)
    record = build_trial(
        source,
        bad,
        weights=None,
        calibration=images,
        images=images,
        labels=None,
        reference=np.zeros((2, 10), np.float32),
    )
    assert record["status"] == "failed" and record["stage"] == "model"
    assert "r[0] = 8 is too large" in record["error"] and "use r <= 7" in record["error"]
    assert record["config"]["name"] == "tome[8,0,0,0]+fp32" and "artifact" not in record


def test_trials_share_an_export_exactly_when_fusion_and_attention_match() -> None:
    from vitrt.compiler.tune_trial import export_key

    tome = {"preset": "tome", "r": [7, 0, 0, 0]}
    sb = {"cluster_size": {"attention1": 32}, "n_hashes": 1, "n_features": {"attention1": 24}}
    fp32, int8 = TrialConfig(role="baseline-fp32"), TrialConfig(precision="int8", role="baseline-int8")
    assert export_key(fp32) == export_key(int8)
    reordered = dict(reversed(tome.items()))  # the same fusion, keys in another order
    assert export_key(TrialConfig(fusion=tome)) == export_key(TrialConfig(fusion=reordered, precision="int8"))
    keys = {export_key(c) for c in (fp32, TrialConfig(fusion=tome), TrialConfig(attention=sb))}
    assert len(keys) == 3 and export_key(TrialConfig(fusion=tome, attention=sb)) not in keys


def _records() -> list[dict[str, object]]:
    def rec(cfg: TrialConfig, latency: float | None, acc: float | None) -> dict[str, object]:
        ok = latency is not None
        return {
            "config": cfg.to_dict(),
            "status": "ok" if ok else "failed",
            "latency_ms": latency,
            "accuracy": acc,
            "tokens": [17, 17],
            **({} if ok else {"stage": "model", "error": "ConfigError: r too large"}),
        }

    fused = TrialConfig(fusion={"preset": "tome", "r": [7, 0, 0, 0]}, precision="int8")
    return [
        rec(TrialConfig(role="baseline-fp32"), 1.5, 99.0),
        rec(TrialConfig(precision="int8", role="baseline-int8"), 1.2, 98.8),
        rec(fused, 1.0, 98.0),
        rec(TrialConfig(fusion={"preset": "tome", "r": [8, 0, 0, 0]}), None, None),
    ]


def test_the_report_picks_under_budget_or_says_none_fits(tmp_path: Path) -> None:
    source = resolve_model(str(DIGITS_T2T))
    result = _report(source, "cpu", 1.1, _records(), "data", [], tmp_path, 0.0, "onnxruntime", 1)
    assert result.front == [2, 1, 0] and result.chosen == 2
    assert result.command == (
        f"vitrt compile {DIGITS_T2T.with_suffix('.json')} --checkpoint {DIGITS_T2T} "
        '--fusion \'{"preset":"tome","r":[7,0,0,0]}\' --attention dense '
        "--precision int8 --target cpu --runtime onnxruntime --calib-data CALIB_DATA -o OUT"
    )
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["chosen"] == 2 and saved["trials"][3]["error"] == "ConfigError: r too large"
    assert (saved["img_size"], saved["num_classes"], saved["checkpoint"]) == (64, 10, str(DIGITS_T2T))
    assert "- tome[8,0,0,0]+fp32: model: ConfigError: r too large" in (tmp_path / "pareto.md").read_text()
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    none = _report(source, "cpu", 0.9, _records(), "data", [], tmp_path, 0.0, "onnxruntime", 1)
    assert none.chosen is None and none.command is None
    assert none.message.startswith("none under budget: no trial runs in 0.9 ms (the fastest takes 1.000 ms)")
    assert "| vs INT8 |" in (tmp_path / "pareto.md").read_text()
    # FP32 alone (precisions=("fp32",)): no INT8 trial, the FP32 baseline is the reference
    fp32 = [r for r in _records() if r["config"]["precision"] == "fp32"]  # type: ignore[index]
    only = _report(source, "cpu", 2.0, fp32, "data", [], tmp_path, 0.0, "onnxruntime", 1)
    assert only.chosen == 0 and only.command is not None and "--precision fp32" in only.command
    md = (tmp_path / "pareto.md").read_text()
    assert "| vs FP32 |" in md and "interleaved with the unfused FP32 baseline" in md and "INT8" not in md


def test_the_compile_line_of_the_baseline_and_bad_options(tmp_path: Path) -> None:
    source = resolve_model(str(DIGITS_T2T))
    assert compile_command(source, TrialConfig(), "cpu").endswith(
        "--fusion none --attention dense --precision fp32 --target cpu -o OUT"
    )
    from vitrt.compiler.tune import tune

    with pytest.raises(ConfigError, match="only the 'cpu' target"):
        tune(str(DIGITS_T2T), target="h100", latency_budget=1.0)
    with pytest.raises(ConfigError, match=r"^unknown target 'foo'; one of: jetson-orin-nano, .*, cpu"):
        tune(str(DIGITS_T2T), target="foo", latency_budget=1.0)
    # options are checked before the model (an unknown one here) and its data are read
    with pytest.raises(ConfigError, match=r"precisions \['foo'\]: choose from fp32, int8"):
        tune("digits_t2t", latency_budget=1.0, precisions=["foo"])
    with pytest.raises(ConfigError, match="eval_samples must be a positive integer, got 0"):
        tune("digits_t2t", latency_budget=1.0, eval_samples=0)
    with pytest.raises(ConfigError, match="trials = 1: a search needs at least 2"):
        tune("digits_t2t", latency_budget=1.0, trials=1)
    # one string is one precision; the precisions bound every trial, explicit ones and baselines included
    with pytest.raises(ConfigError, match=r"^precisions \['int9'\]: choose from fp32, int8$"):
        tune("digits_t2t", latency_budget=1.0, precisions="int9")
    with pytest.raises(ConfigError, match=r"^unknown model 'digits_t2t'"):  # "int8" passed: the model is next
        tune("digits_t2t", latency_budget=1.0, precisions="int8", trials=1)
    int8 = TrialConfig(fusion={"preset": "tome", "r": [7, 0, 0, 0]}, precision="int8")
    with pytest.raises(
        ConfigError, match=r"^configs \['tome\[7,0,0,0\]\+int8'\] are not in precisions \['fp32'\]"
    ):
        tune("digits_t2t", latency_budget=1.0, precisions=("fp32",), configs=[int8])
    for options, message in (
        ({"latency_budget": "1.0"}, r"^latency_budget must be a number of ms > 0, got '1.0'$"),
        ({"latency_budget": 1.0, "threads": "1"}, r"^threads must be a positive integer, got '1'$"),
        ({"latency_budget": 1.0, "trials": 2.5}, r"^trials = 2.5: a search needs at least 2"),
    ):
        with pytest.raises(ConfigError, match=message):
            tune("digits_t2t", **options)  # type: ignore[arg-type]
    import torch

    with pytest.raises(ConfigError, match=r"^tune builds the model itself .*not a Linear$"):
        tune(torch.nn.Linear(2, 2), latency_budget=1.0)  # type: ignore[arg-type]
    # a checkpoint with its JSON fixes the input side and classes it was trained with
    with pytest.raises(
        ConfigError,
        match=r"digits_t2t_vit.safetensors is trained with img_size 64 \(digits_t2t_vit.json\); "
        r"--img-size 32 does not apply to it",
    ):
        resolve_model(str(DIGITS_T2T), img_size=32)
    with pytest.raises(ConfigError, match=r"trained with num_classes 10 .*--num-classes 5 does not apply"):
        resolve_model(str(DIGITS_T2T), num_classes=5)
    (tmp_path / "alone.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"has no metadata beside it \(alone.json with 'arch'"):
        resolve_model(str(tmp_path / "alone.safetensors"))
    with pytest.raises(ConfigError, match="unknown model 'digits_t2t'"):
        resolve_model("digits_t2t")
    with pytest.raises(ConfigError, match="unknown model 'digits_t2t'"):
        tune("digits_t2t", target="cpu", latency_budget=1.0, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # a failed start leaves no output folder behind


@pytest.mark.slow
def test_a_small_search_on_the_digits_t2t_vit_on_local_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    import vitrt
    from vitrt.compiler.tune_model import load_eval_data

    fused = TrialConfig(fusion={"preset": "tome", "r": [7, 0, 0, 0]}, precision="fp32", rule="single")
    invalid = TrialConfig(fusion={"preset": "tome", "r": [9, 0, 0, 0]}, precision="fp32")
    result = vitrt.tune(
        str(DIGITS_T2T),
        target="cpu",
        latency_budget=1000.0,
        output=tmp_path,
        configs=[fused, invalid],  # the two baselines are added in front
        jobs=2,
        eval_samples=40,
        calib_samples=16,
        iterations=20,
        progress=True,
    )
    err = capsys.readouterr().err
    assert "tune: trials built" in err and "tune: trials timed" in err  # the progress bars, on stderr
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert set(saved) >= {"model", "target", "latency_budget_ms", "trials", "front", "chosen", "command"}
    names = [t["name"] for t in saved["trials"]]
    assert names == ["unfused+fp32", "unfused+int8", "tome[7,0,0,0]+fp32", "tome[9,0,0,0]+fp32"]
    base_fp32, base_int8, tome, bad = saved["trials"]
    assert bad["status"] == "failed" and "too large" in bad["error"]
    for trial in (base_fp32, base_int8, tome):
        assert trial["status"] == "ok" and trial["latency_ms"] > 0, trial
        assert set(trial["seconds"]) >= {"export", "build", "accuracy"}
    assert base_int8["ratio"] == 1.0 and "calibrate" in base_int8["seconds"]
    # the baselines differ only in precision: one export serves both (its seconds, the same float, in each)
    assert base_fp32["seconds"]["export"] == base_int8["seconds"]["export"] != tome["seconds"]["export"]
    assert tome["tokens"] == [17, 10, 10, 10, 10]
    # the FP32 artifact computes what PyTorch does: same top-1 on all 40 held-out digits, same accuracy
    source = resolve_model(str(DIGITS_T2T))
    model = source.build(state_dict=source.read_weights())
    data = load_eval_data(source, model.preprocess, eval_samples=40, calib_samples=16)
    with torch.inference_mode():
        torch_top1 = 100.0 * float(
            (model(torch.from_numpy(data.images)).argmax(1).numpy() == data.labels).mean()
        )
    assert base_fp32["agreement"] == 100.0 and base_fp32["top1"] == pytest.approx(torch_top1)
    assert base_int8["agreement"] >= 97.5  # at most one of 40 digits changes its class in INT8
    assert result.chosen is not None and saved["trials"][result.chosen]["latency_ms"] <= 1000.0
    assert result.command is not None and result.command.startswith("vitrt compile ")
    assert (tmp_path / "pareto.png").stat().st_size > 10_000


def test_the_compile_line_rebuilds_the_tuned_model() -> None:
    size, classes = (int(v) for v in np.random.default_rng().choice([32, 48, 64, 96], 2, replace=False))
    source = resolve_model("deit_tiny_patch16_224", checkpoint="w.pth", img_size=size, num_classes=classes)
    fused = TrialConfig(fusion={"preset": "tome", "r": [1, 0]}, precision="int8")
    assert compile_command(source, fused, "cpu", "openvino", ("skimage", 13)) == (
        f"vitrt compile deit_tiny_patch16_224 --checkpoint w.pth --img-size {size} --num-classes {classes} "
        '--fusion \'{"preset":"tome","r":[1,0]}\' --attention dense --precision int8 --target cpu --runtime '
        "openvino --calib-data skimage --calib-samples 13 --convert-channels -o OUT"
    )
    # compile's defaults are left out; without a calibration source compile reads, a placeholder
    plain = resolve_model("deit_tiny_patch16_224")
    assert compile_command(plain, TrialConfig(precision="int8"), "cpu") == (
        "vitrt compile deit_tiny_patch16_224 --fusion none --attention dense --precision int8 --target cpu "
        "--calib-data CALIB_DATA -o OUT"
    )


def _unlabelled_images(tmp_path: Path) -> tuple[Path, int, ModelSource, Any]:
    """A fresh .npy of 10 to 29 random images, and the digits T2T-ViT's source and PreprocessConfig."""
    from vitrt.models.config import PreprocessConfig

    n = int(np.random.default_rng().integers(10, 30))
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng().standard_normal((n, 3, 64, 64)).astype(np.float32))
    source = resolve_model(str(DIGITS_T2T))
    pre = dict(source.preprocess)
    pre.update({k: tuple(pre[k]) for k in ("input_size", "mean", "std")})
    return path, n, source, PreprocessConfig(**pre)


def test_no_int8_trial_reads_no_calibration_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """calib_samples=0 (tune's searches without INT8): no calibration image is read; a short source is
    judged whole, with a warning that speaks of evaluation only; the labelled digits give their held-out
    set."""
    from vitrt.compiler.tune_model import load_eval_data

    path, n, source, preprocess = _unlabelled_images(tmp_path)
    eval_samples = int(np.random.default_rng().integers(2, n))
    with caplog.at_level("WARNING", logger="vitrt"):
        data = load_eval_data(source, preprocess, str(path), eval_samples=eval_samples, calib_samples=0)
    assert data.calibration.shape == (0, *data.images.shape[1:]) and data.calibration.dtype == np.float32
    assert data.images.shape == (eval_samples, 3, *preprocess.input_size[-2:])
    assert "calibration" not in data.description
    assert caplog.records == []
    with caplog.at_level("WARNING", logger="vitrt"):
        short = load_eval_data(source, preprocess, str(path), eval_samples=n + 5, calib_samples=0)
    assert len(short.images) == n and len(short.calibration) == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"eval data {path} has {n} images, fewer than the {n + 5} evaluation images tune asks for; judging "
        "trials on all of them"
    ]
    digits = load_eval_data(source, preprocess, eval_samples=12, calib_samples=0)
    assert digits.images.shape[0] == 12 and digits.labels is not None and len(digits.calibration) == 0


def test_eval_samples_are_honoured_and_a_short_source_says_what_it_lacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vitrt.compiler.tune_model import load_eval_data

    path, n, source, preprocess = _unlabelled_images(tmp_path)
    eval_samples = int(np.random.default_rng().integers(2, n // 2))
    with caplog.at_level("WARNING", logger="vitrt"):
        data = load_eval_data(source, preprocess, str(path), eval_samples=eval_samples)
    assert len(data.images) == eval_samples and len(data.calibration) == n - eval_samples
    assert data.calib_source == str(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"eval data {path} has {n} images, fewer than the {256 + eval_samples} tune asks for (256 "
        f"calibration + {eval_samples} evaluation images); judging trials on {eval_samples} and calibrating "
        f"INT8 on {n - eval_samples} others"
    ]
    # asked for more than half: half of them (rounded up) are judged, the others calibrate
    data = load_eval_data(source, preprocess, str(path), eval_samples=500)
    assert len(data.images) == n - n // 2 and len(data.calibration) == n // 2
