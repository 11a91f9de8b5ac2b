"""``vitrt compile`` on the trained digits models (64 x 64, fast): the stage cache (a re-run reuses every
stage; a new precision redoes only the stages after export / prepare), a failing stage, an ONNX file from
another exporter, the report's keys and a self-contained report.html (rendered to text, and screenshotted in
headless Chromium where one is installed); bad options refused before any folder exists, and the bundle a
TensorRT target gets without TensorRT."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.compiler.test_prepare import DIGITS, train_digits
from vitrt.compiler.compile import CompileError, compile_model
from vitrt.errors import ConfigError
from vitrt.models.config import PreprocessConfig

DESCRIPTION = DIGITS / "digits_deit.json"
CHECKPOINT = DIGITS / "digits_deit.safetensors"
FAST = {
    "target": "cpu",
    "runtime": "onnxruntime",  # one CPU runtime: no OpenVINO conversion or runtime race in the tests
    "eval_data": "sklearn-digits",
    "eval_samples": 48,
    "convert_channels": True,
    "iterations": 5,
    "threads": 1,
}
REPORT_KEYS = {
    "format", "vitrt_version", "status", "error", "started", "seconds", "model", "options", "stages", "files",
    "sizes", "precision", "build", "accuracy", "latency", "plots", "summary",
}  # fmt: skip


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["stages"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One output folder compiled three times: FP32, FP32 again, then INT8."""
    out = tmp_path_factory.mktemp("compile") / "out"
    lines: list[str] = []
    first = compile_model(DESCRIPTION, out, checkpoint=CHECKPOINT, progress=lines.append, **FAST)
    export_file = out / first.report["files"]["fp32_onnx"]
    mtime = export_file.stat().st_mtime_ns
    second = compile_model(DESCRIPTION, out, checkpoint=CHECKPOINT, **FAST)
    int8 = compile_model(
        DESCRIPTION,
        out,
        checkpoint=CHECKPOINT,
        precision="int8",
        calib_data="sklearn-digits",
        calib_samples=32,
        **FAST,
    )
    return {"out": out, "first": first, "second": second, "int8": int8, "lines": lines, "mtime": mtime}


@pytest.mark.slow
def test_rerun_reuses_stages_and_a_new_precision_redoes_only_what_depends_on_it(runs: dict[str, Any]) -> None:
    first, second, int8 = (runs[k].report for k in ("first", "second", "int8"))
    assert statuses(first) == {
        "export": "ran", "prepare": "ran", "precision": "skipped", "build": "ran", "verify": "ran",
        "profile": "ran", "report": "ran",
    }  # fmt: skip
    assert statuses(second) == {
        **statuses(first),
        **dict.fromkeys(("export", "prepare", "build", "verify", "profile"), "cached"),
    }
    assert statuses(int8) == {
        **statuses(second),
        "precision": "ran",
        "build": "ran",
        "verify": "ran",
        "profile": "ran",
    }
    # the cached export is the same file, untouched; the INT8 run built from the same prepared file
    assert (runs["out"] / first["files"]["fp32_onnx"]).stat().st_mtime_ns == runs["mtime"]
    assert int8["files"]["fp32_onnx"] == first["files"]["fp32_onnx"]
    assert second["accuracy"] == first["accuracy"]  # the cached verify result, as recorded
    # one progress line per stage, saying what happened
    assert [line.split()[1:3] for line in runs["lines"]] == [
        [s["name"], s["status"]] for s in first["stages"]
    ]


@pytest.mark.slow
def test_a_compiled_description_verifies_against_the_model_it_describes(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """vitrt verify of a compile output made from a model description rebuilds the model from the
    description recorded in the file (its class among vitrt's own, its kwargs, the checkpoint) and compares
    on fresh random inputs; a description naming any other class is refused, never imported."""
    import onnx

    from vitrt.compiler.export import ExportConfig, model_from_config, read_export_config
    from vitrt.compiler.verify import verify_onnx

    fp32 = runs["out"] / runs["first"].report["files"]["fp32_onnx"]
    report, feeds, _ = verify_onnx(fp32, iterations=2)  # compile exports a batch of 1
    assert report.reference == "torch (digits_deit)" and report.passed and len(feeds) == 2
    assert all(o.max_abs < 1e-3 for o in report.outputs), report.outputs
    config = read_export_config(onnx.load(str(fp32)))
    assert (
        isinstance(config, ExportConfig)
        and config.extra["arch"]["class"] == "vitrt.models.deit.VisionTransformer"
    )
    config.extra["arch"] = {"class": "os.system", "kwargs": {"command": "true"}}
    with pytest.raises(
        ConfigError, match=r"the export config's description: a model description needs an 'arch'"
    ):
        model_from_config(config)


@pytest.mark.slow
def test_accuracy_and_latency_numbers(runs: dict[str, Any]) -> None:
    fp32, int8 = runs["first"].report, runs["int8"].report
    acc = fp32["accuracy"]
    assert acc["labelled"] and acc["samples"] == 48
    # FP32 on ONNX Runtime vs PyTorch FP32 on the same 48 labelled digits: the same function
    assert acc["top1"] == acc["reference_top1"] >= 0.9
    assert acc["top1_agreement"] == 1.0 and acc["mean_cosine"] > 0.99999 and acc["max_abs_error"] < 1e-3
    q = int8["accuracy"]
    assert q["reference_top1"] == acc["reference_top1"]  # the same reference and data
    assert abs(q["top1"] - q["reference_top1"]) <= 2 / 48 and q["mean_cosine"] > 0.99
    assert int8["precision"]["int8_form"] == "onnxruntime"  # cpu on ONNX Runtime: its INT8 form
    assert int8["precision"]["calibration"]["layers_int8"] > 0
    lat = fp32["latency"]
    assert lat["artifact"]["iterations"] >= 5 and lat["pytorch_eager"]["iterations"] >= 5
    assert lat["ratio_vs_eager"] == pytest.approx(lat["artifact"]["median"] / lat["pytorch_eager"]["median"])
    assert lat["torch_threads"] == 1


@pytest.mark.slow
def test_report_json_keys_and_files(runs: dict[str, Any]) -> None:
    out, report = runs["out"], runs["int8"].report
    on_disk = json.loads((out / "report.json").read_text())
    assert set(on_disk) == REPORT_KEYS and on_disk["status"] == "ok" and on_disk["error"] is None
    assert on_disk["stages"][-1]["name"] == "report" and on_disk == report
    assert set(report["plots"]) == {"accuracy", "latency", "size", "stages"}
    for rel in report["plots"].values():
        assert (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        report["build"]["kind"] == "cpu" and (out / report["files"]["artifact"] / "manifest.json").is_file()
    )
    assert report["sizes"]["final_onnx_bytes"] < report["sizes"]["fp32_onnx_bytes"]  # int8 weights
    assert runs["int8"].artifact == out / report["files"]["artifact"]


class _Text(HTMLParser):
    """The visible text of an HTML page and its <img> sources (the HTML rendered to text)."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self._skip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip = tag in ("style", "script")
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        self._skip = False

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.text.append(data.strip())


@pytest.mark.slow
def test_report_html_is_self_contained(runs: dict[str, Any]) -> None:
    out, report = runs["out"], runs["int8"].report
    page = (out / "report.html").read_text()
    assert not re.search(r"https?://", page) and "<link" not in page and "<script" not in page
    parsed = _Text()
    parsed.feed(page)
    assert len(parsed.images) == 4
    for src, rel in zip(parsed.images, report["plots"].values(), strict=True):
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]) == (out / rel).read_bytes()
    text = "\n".join(parsed.text)
    acc = report["accuracy"]
    assert f"FP32 {100 * acc['reference_top1']:.1f} % -> INT8 {100 * acc['top1']:.1f} %" in text
    assert f"{100 * acc['top1']:.2f} %" in text  # the accuracy table
    assert f"{report['latency']['artifact']['median']:.3f}" in text  # the latency table
    for stage in report["stages"]:
        assert stage["folder"] is None or stage["folder"] in text


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.slow
def test_report_html_screenshot_in_headless_chromium(runs: dict[str, Any], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no headless browser here: no chromium / google-chrome on PATH (playwright's browser download "
            "needs the internet); test_report_html_is_self_contained checks the page as text"
        )
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,1600",
            f"--screenshot={shot}",
            (runs["out"] / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1000)
    # a rendered page: mostly white background, with text, tables and the four plots (not a blank page)
    assert pixels.mean() > 180 and pixels.std() > 20
    assert (pixels < 128).mean() > 0.01


@pytest.mark.slow
def test_a_failing_stage_says_which_and_keeps_the_earlier_stages(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    out = runs["out"]
    corrupt = tmp_path / "calib.npy"
    corrupt.write_bytes(b"not an array")
    with pytest.raises(CompileError, match=r"stage precision failed: .*calib\.npy.*kept in") as err:
        compile_model(
            DESCRIPTION,
            out,
            checkpoint=CHECKPOINT,
            precision="int8",
            calib_data=corrupt,
            calib_samples=32,
            **FAST,
        )
    assert err.value.stage == "precision"
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and report["error"]["stage"] == "precision"
    assert statuses(report) == {"export": "cached", "prepare": "cached", "precision": "failed"}
    for stage in report["stages"][:2]:
        assert (out / stage["folder"] / "stage.json").is_file()
    assert not list((out / "stages").glob(".*"))  # no half-written stage folder
    # the earlier good run's report.html and plots are replaced, not left looking current
    page = (out / "report.html").read_text()
    assert '<b class="status-failed">failed</b>' in page and "stage precision failed" in page
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["size.png", "stages.png"]
    assert set(report["plots"]) == {"size", "stages"}
    assert report["summary"][-1] == f"report: {out / 'report.html'} (also report.md, report.json)"


def test_bad_options_fail_before_any_stage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown target"):
        compile_model(DESCRIPTION, tmp_path / "a", checkpoint=CHECKPOINT, target="jetson-xavier")
    with pytest.raises(ConfigError, match="needs calibration data"):
        compile_model(DESCRIPTION, tmp_path / "b", checkpoint=CHECKPOINT, precision="int8")
    with pytest.raises(ConfigError, match="unknown model 'deit_smal'; did you mean"):
        compile_model("deit_smal", tmp_path / "c")
    with pytest.raises(ConfigError, match=r"^checkpoint .*missing\.pth does not exist$"):
        compile_model(
            "deit_tiny_patch16_224", tmp_path / "e" / "deit.cpu", checkpoint=tmp_path / "missing.pth"
        )
    # calibration options change nothing outside INT8: refused, not silently dropped
    for options, message in [
        (
            {"calib_data": "synthetic", "calib_samples": 7},
            "--calib-data and --calib-samples only apply to --precision int8 or int8[+]fp16 .*fp16 has no "
            "calibration: leave --calib-data and --calib-samples out",
        ),
        ({"calib_samples": 7}, "--calib-samples only applies to --precision int8"),
    ]:
        with pytest.raises(ConfigError, match=message):
            compile_model(DESCRIPTION, tmp_path / "f", checkpoint=CHECKPOINT, precision="fp16", **options)
    # a data source that is not there is found now, not in the precision / verify stage after the export
    for options, message in [
        ({"precision": "int8", "calib_data": tmp_path / "images"}, "--calib-data '.*images': no such file"),
        ({"eval_data": tmp_path / "held.npz"}, "--eval-data '.*held.npz': no such file or folder. Fix: give"),
        ({"precision": "int8", "calib_data": DESCRIPTION}, "--calib-data '.*json': not a data source"),
    ]:
        with pytest.raises(ConfigError, match=message):
            compile_model(DESCRIPTION, tmp_path / "g", checkpoint=CHECKPOINT, **options)
    # a description fixes its input side and classes (its weights and preprocessing are made for them)
    with pytest.raises(
        ConfigError,
        match=r"digits_deit.json describes a model with img_size 64 \(arch.kwargs\); --img-size 32 does not "
        r"apply to a description. Leave --img-size out \(or give 64\)",
    ):
        compile_model(DESCRIPTION, tmp_path / "h", img_size=32)
    with pytest.raises(ConfigError, match=r"with num_classes 10 .*--num-classes 5 does not apply"):
        compile_model(DESCRIPTION, tmp_path / "h", num_classes=5)
    # the registered model's own rules (input side, classes, fusion), checked without building it
    for options, message in [
        ({"img_size": 33}, "^img_size 33 is not a positive multiple of the patch size 16; use 32 or 48$"),
        ({"img_size": "32"}, "^img_size must be a whole number of pixels such as 224, got '32'$"),
        ({"num_classes": -1}, "^num_classes must be a whole number >= 0"),
        ({"img_size": 32, "fusion": "bogus"}, "^unknown token-fusion preset 'bogus'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            compile_model("deit_tiny_patch16_224", tmp_path / "h", **options)
    for folder in ("a", "b", "c", "e", "f", "g", "h"):
        assert not (tmp_path / folder).exists()  # a refused run leaves no (empty) output folder
    # an ONNX file fixes its weights, fusion and input: model options would be ignored
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    for options, flag in [
        ({"fusion": "mctf"}, "--fusion"),
        ({"checkpoint": CHECKPOINT}, "--checkpoint"),
        ({"img_size": 64, "num_classes": 10}, "--img-size, --num-classes"),
    ]:
        with pytest.raises(ConfigError, match=f"is an ONNX file.*: {flag} only apply to a model name"):
            compile_model(onnx_file, tmp_path / "d", **options)
    assert not (tmp_path / "d").exists()


def test_the_report_names_only_files_it_wrote_and_clears_an_earlier_runs(tmp_path: Path) -> None:
    from vitrt.compiler.compile_report import report_data, write_report

    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    stale = {name: out / "plots" / f"{name}.png" for name in ("accuracy", "latency", "size", "stages")}
    for path in [*stale.values(), out / "report.html"]:
        path.write_bytes(b"an earlier run's")
    seconds = float(np.random.default_rng().uniform(1, 5))

    def failed() -> dict[str, Any]:
        return report_data(
            outdir=out,
            entries=[
                {
                    "name": "export",
                    "status": "failed",
                    "seconds": seconds,
                    "built_seconds": 0.0,
                    "folder": None,
                    "key": None,
                    "note": "boom",
                }
            ],
            results={},
            model={"kind": "onnx", "file": "m.onnx"},
            options={"target": "cpu", "precision": "fp32"},
            started="now",
            seconds=seconds,
            error={"stage": "export", "message": "stage export failed: boom"},
        )

    data = failed()
    written = write_report(out, data)
    assert set(written) == {"stages", "json", "md", "html"}
    html_line = f"report: {out / 'report.html'} (also report.md, report.json)"
    assert data["summary"] == ["FAILED: stage export failed: boom", html_line]
    assert '<b class="status-failed">failed</b>' in (out / "report.html").read_text()
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["stages.png"]  # no other run's plots
    assert stale["stages"].read_bytes()[:4] == b"\x89PNG"
    # without the HTML, the summary names the files written and no earlier report.html is left
    data = failed()
    assert set(write_report(out, data, html=False)) == {"json", "md"}
    assert data["summary"][-1] == f"report: {out / 'report.md'} (also report.json)"
    assert not (out / "report.html").exists() and not (out / "plots" / "stages.png").exists()
    assert json.loads((out / "report.json").read_text())["summary"] == data["summary"]


@pytest.mark.slow
def test_foreign_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vitrt.compiler.cli import main

    td = train_digits()
    model, _ = td.load_trained(DIGITS, "digits_deit")  # type: ignore[attr-defined]
    foreign = td.export_foreign(model, tmp_path / "foreign.onnx", 64)  # type: ignore[attr-defined]
    out = tmp_path / "out"
    # no vitrt export config: the preprocessing must be given, and nothing runs without it
    assert main(["compile", str(foreign), "-o", str(out)]) == 2
    assert "pass --mean and --std" in capsys.readouterr().err and not (out / "stages").exists()
    args = [
        "--mean",
        "0.5",
        "--std",
        "0.5",
        "--size",
        "64",
        "--crop-pct",
        "1.0",
        "--interpolation",
        "bilinear",
    ]
    common = [
        "--eval-data",
        "sklearn-digits",
        "--eval-samples",
        "48",
        "--convert-channels",
        "--iterations",
        "5",
    ]
    assert main(["compile", str(foreign), "-o", str(out), *args, *common, "--runtime", "onnxruntime"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert statuses(report)["export"] == "skipped" and report["model"] == {
        "kind": "onnx",
        "file": str(foreign),
    }
    acc = report["accuracy"]
    assert acc["reference"] == "FP32 ONNX on ONNX Runtime (foreign.onnx)"
    assert acc["top1_agreement"] == 1.0 and acc["max_abs_error"] < 1e-3 and acc["top1"] >= 0.9
    assert report["latency"]["pytorch_eager"] is None and report["latency"]["ratio_vs_eager"] is None
    assert f"top-1 on 48 samples of sklearn-digits: FP32 {100 * acc['reference_top1']:.1f} %" in printed


def test_a_tensorrt_target_without_tensorrt_says_where_the_bundle_is(
    precision_files: dict[str, Path], tmp_path: Path
) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the build stage builds an engine, not a bundle")
    out = tmp_path / "out"
    result = compile_model(precision_files["fp32"], out, target="h100", eval_samples=4, iterations=1)
    report = result.report
    bundle = out / report["files"]["artifact"]
    assert report["build"]["kind"] == "bundle" and (bundle / "bundle.json").is_file()
    assert result.artifact == bundle and bundle.parent.parent == out / "stages"
    note = (
        f"TensorRT is not installed here, so no engine was built: {bundle} is a bundle to build on the "
        f"NVIDIA H100 80 GB: copy that folder to the device and run `vitrt build --bundle {bundle}` there"
    )
    assert report["build"]["note"] == note and note in result.summary()
    assert statuses(report)["profile"] == "skipped"


class _FailsToExport(nn.Module):
    """A model whose export fails: its logits broadcast against a tensor of the wrong width."""

    img_size, num_classes = 8, 10

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 10)
        self.width = width
        self.preprocess = PreprocessConfig(input_size=(3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + torch.ones(1, self.width)


def test_a_failed_export_in_a_fresh_folder_reports_without_torch_log_noise(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    width = int(np.random.default_rng().integers(11, 40))
    with pytest.raises(
        ConfigError,
        match=r"^the module was built with img_size 8; img_size=16 does not apply to a built module. Fix: "
        r"leave img_size out",
    ):
        compile_model(_FailsToExport(width), tmp_path / "refused", img_size=16)
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "out"
    with pytest.raises(CompileError, match=f"stage export failed: .*dimension of length {width}") as err:
        compile_model(_FailsToExport(width), out, iterations=1)
    assert err.value.stage == "export"
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err and "fake_tensor" not in printed.err and "E1" not in printed.err
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and statuses(report) == {"export": "failed"}
    # the summary names report.html, and it is there (with the failure)
    assert report["summary"][-1] == f"report: {out / 'report.html'} (also report.md, report.json)"
    assert "stage export failed" in (out / "report.html").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        "plots",
        "report.html",
        "report.json",
        "report.md",
        "stages",
    ]
    assert not list((out / "stages").iterdir())  # no half-written stage folder
