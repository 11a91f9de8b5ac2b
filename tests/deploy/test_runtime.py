"""One runner interface over every runtime, ``open_runner`` on each kind of source, ``vitrt run`` (the
model's own preprocessing, top-k, labels, batches) and the errors for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import vitrt
from vitrt.compiler.cli import main
from vitrt.deploy.predict import softmax
from vitrt.deploy.profiling import runtime_options
from vitrt.deploy.runners import FeedError, TensorSpec
from vitrt.deploy.sources import (
    BatchError,
    ModelSource,
    SourceError,
    check_batch,
    check_graph_options,
    check_model_options,
    check_runtime_options,
    resolve_source,
)
from vitrt.errors import ConfigError, VitrtError


def _split(runner: object, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    runner.prepare(feed)  # type: ignore[attr-defined]
    runner.enqueue()  # type: ignore[attr-defined]
    runner.synchronize()  # type: ignore[attr-defined]
    return runner.fetch()  # type: ignore[attr-defined,no-any-return]


def test_every_runner_has_the_interface(tiny: dict[str, Path]) -> None:
    x = np.random.default_rng().standard_normal((1, 3, 32, 32)).astype(np.float32)
    spec = TensorSpec("images", (1, 3, 32, 32), "float32")
    artifact = vitrt.open_runner(tiny["fp32.cpu"])
    onnx_ort = vitrt.open_runner(tiny["fp32"], threads=1)
    onnx_ov = vitrt.open_runner(tiny["fp32"], runtime="openvino", threads=1, inference_precision="f32")
    torch_cpu = vitrt.open_runner("deit_tiny_patch16_224", img_size=32, num_classes=10)
    for runner in (artifact, onnx_ort, onnx_ov):
        assert runner.input_specs == [spec], runner.name
    assert torch_cpu.input_specs == [TensorSpec("images", ("batch", 3, 32, 32), "float32")]
    assert (artifact.runtime, onnx_ort.runtime, onnx_ov.runtime, torch_cpu.runtime) == (
        "onnxruntime",
        "onnxruntime",
        "openvino",
        "torch",
    )
    assert artifact.threads == 1 and onnx_ov.inference_precision == "f32"
    reference = onnx_ort.infer({"images": x})["logits"]
    for runner in (artifact, onnx_ort, onnx_ov, torch_cpu):
        # the timing split computes what infer computes
        np.testing.assert_array_equal(
            _split(runner, {"images": x})["logits"], runner.infer({"images": x})["logits"]
        )
    # the same file on three runtimes: the same function (OpenVINO f32 to float32 rounding)
    np.testing.assert_allclose(artifact.infer({"images": x})["logits"], reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(onnx_ov.infer({"images": x})["logits"], reference, rtol=1e-3, atol=1e-3)
    assert str(artifact.device) == "cpu" and str(torch_cpu.device) == "cpu"
    with pytest.raises(VitrtError, match="before prepare"):
        vitrt.open_runner(tiny["fp32"]).enqueue()


def test_sources_and_their_errors(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import vitrt.deploy

    assert vitrt.deploy.open_runner is vitrt.open_runner
    art = resolve_source(tiny["int8.cpu"])
    assert (art.kind, art.runtime, art.fixed_batch()) == ("artifact", "onnxruntime", 1)
    assert resolve_source(tiny["int8.cpu"] / "model.onnx").kind == "artifact"  # a file inside one
    assert resolve_source(tiny["fp32"]).preprocess().input_size == (3, 32, 32)
    assert resolve_source("deit_tiny_patch16_224").kind == "model"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\x00garbage")
    (tmp_path / "empty").mkdir()
    (tmp_path / "w.pth").write_bytes(b"")
    for spec, match in [
        (notes, "not something vitrt runs"),
        (fake, "not a readable ONNX file|holds no ONNX graph"),
        (tmp_path / "empty", "without manifest.json"),
        (tmp_path / "w.pth", "--checkpoint"),
        ("no_such_model", "not a model name"),
    ]:
        with pytest.raises(SourceError, match=match):
            vitrt.open_runner(spec)
    with pytest.raises(BatchError, match="exactly 1"):
        vitrt.profile_artifact(tiny["fp32.cpu"], batch=2, duration_s=0.0)
    # the command cannot proceed: exit 2 with the message
    assert main(["profile", str(tiny["fp32.cpu"]), "--batch", "2", "--quiet"]) == 2
    assert "--batch 1" in capsys.readouterr().err
    assert main(["profile", str(notes), "--quiet"]) == 2
    assert "not something vitrt runs" in capsys.readouterr().err
    profiled = ModelSource("artifact", "engine/", inputs=[{"name": "images", "shape": ["batch", 3, 8, 8]}])
    ranged = ModelSource("artifact", "engine/", inputs=profiled.inputs, batch_range=(1, 8))
    check_batch(profiled, 64)  # dynamic, no profile: anything
    check_batch(ranged, 8)
    with pytest.raises(BatchError, match="batches 1 to 8"):
        check_batch(ranged, 9)


def test_model_name_options_are_refused_for_files(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file fixes its weights, fusion, size and device: these options would be ignored, and a user who
    # asked for --device cuda or --fusion mctf would read the timings of something else.
    for options, flag in [
        ({"fusion": "mctf"}, "--fusion"),
        ({"checkpoint": "w.pth"}, "--checkpoint"),
        ({"attention": "scatterbrain"}, "--attention"),
        ({"img_size": 64}, "--img-size"),
        ({"num_classes": 10}, "--num-classes"),
        ({"half": True}, "--half"),
        ({"device": "cuda"}, "--device cuda"),
    ]:
        for spec in (tiny["fp32"], tiny["fp32.cpu"]):
            with pytest.raises(SourceError, match=f"runs on the CPU .*{flag} only apply to a model name"):
                vitrt.open_runner(spec, **options)
    assert vitrt.open_runner(tiny["fp32"], device="cpu").runtime == "onnxruntime"  # what it runs on anyway
    engine = ModelSource("plan", "e.plan")
    check_model_options(engine, device="cuda:0")
    for device in ("cpu", "cuda:1"):
        with pytest.raises(SourceError, match=f"on the GPU it was built for .*--device {device} only"):
            check_model_options(engine, device=device)
    assert main(["profile", str(tiny["fp32"]), "--fusion", "mctf", "--quiet"]) == 2
    assert "--fusion only apply to a model name" in capsys.readouterr().err
    image = _png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["run", str(tiny["fp32"]), str(image), "--device", "cuda"]) == 2
    assert "--device cuda only apply to a model name" in capsys.readouterr().err
    # with a model name among the sources, the options are the model's: a file compared with a model
    report = vitrt.profile(
        [tiny["fp32"], "deit_tiny_patch16_224"],
        img_size=32,
        num_classes=10,
        fusion="tome",
        warmup_s=0,
        duration_s=0,
        iterations=2,
        e2e_s=0,
        telemetry=False,
        layers=False,
        quiet=True,
    )
    assert [r.source for r in report.artifacts] == [str(tiny["fp32"]), "deit_tiny_patch16_224"]
    assert "onnxruntime" in report.artifacts[0].runner and "torch" in report.artifacts[1].runner


def test_labels() -> None:
    digits = ModelSource("onnx", "d.onnx", export_config={"model": "digits_deit", "num_classes": 10})
    assert digits.labels() == (tuple("0123456789"), "digits 0-9")
    named = ModelSource("onnx", "x.onnx", export_config={"model": "m", "extra": {"labels": ["cat", "dog"]}})
    assert named.labels()[0] == ("cat", "dog")
    labels, note = ModelSource(
        "onnx", "i.onnx", export_config={"model": "deit", "num_classes": 1000}
    ).labels()
    assert labels is None and "class indices" in note and "1000 classes" in note


def _png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(pixels).save(path)
    return path


def test_run_classifies_with_the_models_preprocessing(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng()
    colours = rng.integers(0, 256, size=(3, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, colour in enumerate(colours):  # constant images of odd sizes: resize and crop keep the colour
        _png(folder / f"{i}.png", np.broadcast_to(colour, (50 + 7 * i, 40, 3)).copy())
    result = vitrt.run(tiny["fp32.cpu"], folder, top=3)
    assert result.batch == 1 and len(result.predictions) == 3
    # by hand: a constant image normalises to (v / 255 - mean) / std per channel (ImageNet mean / std)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    runner = vitrt.open_runner(tiny["fp32"])
    for colour, prediction in zip(colours, result.predictions, strict=True):
        x = np.broadcast_to(((colour / 255.0 - mean) / std)[None, :, None, None], (1, 3, 32, 32))
        probs = softmax(runner.infer({"images": x.astype(np.float32)})["logits"])[0]
        order = np.argsort(-probs)[:3]
        assert [c for c, _, _ in prediction.top] == order.tolist()
        np.testing.assert_allclose([p for _, _, p in prediction.top], probs[order], rtol=1e-4)
        assert all(label is None for _, label, _ in prediction.top)
    assert "class indices" in result.labels_note

    # dynamic batch on the bare ONNX? this export has a fixed batch: --batch 2 is refused
    with pytest.raises(BatchError):
        vitrt.run(tiny["fp32"], folder, batch=2)
    assert main(["run", str(tiny["int8.cpu"]), str(folder / "0.png"), "--top", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["predictions"]) == 1 and len(data["predictions"][0]["top"]) == 2
    assert main(["run", str(folder / "0.png"), str(folder)]) == 2  # an image is not a model
    assert "not something vitrt runs" in capsys.readouterr().err


def test_runtime_options_that_cannot_apply_are_refused(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An artifact runs on its manifest's runtime and only OpenVINO has an inference precision: asking
    # otherwise ran the artifact (or the file) as it was, without a word.
    with pytest.raises(
        SourceError,
        match=r"fp32.cpu is an artifact built for onnxruntime: --runtime openvino would be ignored. Fix: "
        r"leave out --runtime, or build one for openvino \(`vitrt build MODEL.onnx --target cpu --runtime "
        r"openvino`\)",
    ):
        vitrt.open_runner(tiny["fp32.cpu"], runtime="openvino")
    for spec, fix in [(tiny["fp32.cpu"], "build it for OpenVINO"), (tiny["fp32"], "run it on OpenVINO")]:
        with pytest.raises(
            SourceError,
            match=rf"runs on onnxruntime: --inference-precision bf16 is OpenVINO's compute precision and "
            rf"would be ignored. Fix: leave it out, or {fix}",
        ):
            vitrt.open_runner(spec, inference_precision="bf16")
    model = "deit_tiny_patch16_224"
    with pytest.raises(SourceError, match=r"is a model name \(run in PyTorch\): --runtime onnxruntime would"):
        check_runtime_options(resolve_source(model), runtime="onnxruntime")
    with pytest.raises(SourceError, match=r"runs on torch: --threads sets ONNX Runtime's and OpenVINO's"):
        check_runtime_options(resolve_source(model), threads=2)
    with pytest.raises(SourceError, match=r"e.plan runs on tensorrt: --inference-precision f32 is OpenVINO"):
        check_runtime_options(ModelSource("plan", "e.plan"), inference_precision="f32")
    runner = vitrt.open_runner(tiny["fp32"], runtime="openvino", inference_precision="f32", threads=1)
    assert (runner.runtime, runner.inference_precision) == ("openvino", "f32")
    assert vitrt.open_runner(tiny["fp32.cpu"], runtime="onnxruntime").runtime == "onnxruntime"  # its own
    image = _png(tmp_path / "x.png", np.random.default_rng().integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert main(["run", str(tiny["fp32.cpu"]), str(image), "--runtime", "openvino"]) == 2
    assert "--runtime openvino would be ignored" in capsys.readouterr().err
    assert main(["profile", str(tiny["fp32"]), "--inference-precision", "bf16", "--quiet"]) == 2
    assert "--inference-precision bf16 is OpenVINO's compute precision" in capsys.readouterr().err
    # several sources: each option goes to the sources it applies to; one that applies to none is refused
    art, onnx_file = resolve_source(tiny["fp32.cpu"]), resolve_source(tiny["fp32"])
    assert runtime_options([art, onnx_file], runtime="openvino", inference_precision="bf16", threads=1) == [
        {"threads": 1},
        {"runtime": "openvino", "threads": 1, "inference_precision": "bf16"},
    ]
    with pytest.raises(SourceError, match=r"fp32.cpu runs on onnxruntime: --inference-precision f32"):
        runtime_options([art, onnx_file], inference_precision="f32")


def test_export_profile_names_only_the_files_written(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quick = ["--warmup-s", "0", "--duration-s", "0", "--iterations", "2", "--e2e-s", "0", "--no-telemetry"]
    sources = [str(tiny["fp32.cpu"]), str(tiny["fp32"])]
    # a folder that is not there fails before anything is timed
    assert main(["profile", *sources, *quick, "--export-profile", str(tmp_path / "no" / "l.json")]) == 2
    assert "cannot write" in capsys.readouterr().err and not (tmp_path / "no").exists()
    # the .onnx runs on OpenVINO (--runtime is the file's), which has no per-layer profile
    path = tmp_path / "layers.json"
    argv = ["profile", *sources, "--runtime", "openvino", *quick, "--quiet", "--export-profile", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.0.json"]
    assert f"wrote {tmp_path / 'layers.0.json'}\n" in out and "layers.1.json\n" not in out
    assert out.endswith(
        f"note: {tmp_path / 'layers.1.json'} not written: {tiny['fp32'].name} (openvino) has no per-layer "
        "profile (above)\n"
    )
    assert json.loads((tmp_path / "layers.0.json").read_text())[0] == {"count": 20}


def test_run_takes_a_model_names_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from vitrt.deploy.predict import load_image

    model = vitrt.create_model("deit_tiny_patch16_224", img_size=32, num_classes=10)
    torch.nn.init.normal_(model.head.weight, std=1.0)  # trained-looking logits: distinct probabilities
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    image = _png(tmp_path / "x.png", np.random.default_rng().integers(0, 256, (40, 48, 3), dtype=np.uint8))
    argv = ["run", "deit_tiny_patch16_224", str(image), "--img-size", "32", "--num-classes", "10", "--json"]
    assert main([*argv, "--checkpoint", str(weights), "--top", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["notes"] == [] and data["preprocess"]["input_size"] == [3, 32, 32]
    with torch.inference_mode():
        x = torch.from_numpy(load_image(image, model.preprocess))[None]
        expected = torch.softmax(model.eval()(x).double(), dim=1)[0].numpy()
    top = data["predictions"][0]["top"]
    assert [t["class"] for t in top] == np.argsort(-expected, kind="stable").tolist()
    np.testing.assert_allclose([t["probability"] for t in top], np.sort(expected)[::-1], rtol=1e-4)
    # without weights: random init, and the result says so
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == [
        "deit_tiny_patch16_224 has random weights (no checkpoint given): the classes mean nothing. Fix: "
        "--checkpoint WEIGHTS (or give an artifact or .onnx made from trained weights)"
    ]
    assert main([*argv[:-1], "--fusion", "tome", "--attention", "dense"]) == 0
    assert "note: deit_tiny_patch16_224 has random weights" in capsys.readouterr().out


def test_run_refuses_a_size_the_model_does_not_take(
    tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _png(tmp_path / "x.png", np.random.default_rng().integers(0, 256, (40, 48, 3), dtype=np.uint8))
    side = int(np.random.default_rng().integers(33, 256))
    for spec in (tiny["fp32.cpu"], tiny["fp32"]):
        with pytest.raises(
            VitrtError,
            match=rf"takes 32 x 32 pixel inputs \(its input size is fixed\), not {side} x {side}: --size "
            r"only names the size of a file that does not record it. Fix: leave out --size \(images are "
            r"resized to 32 x 32\)$",
        ):
            vitrt.run(spec, image, size=side)
    same = vitrt.run(tiny["fp32.cpu"], image, size=[32, 32])
    assert same.predictions == vitrt.run(tiny["fp32.cpu"], image).predictions
    assert main(["run", str(tiny["fp32.cpu"]), str(image), "--size", str(side)]) == 2
    assert f"not {side} x {side}: --size only names" in capsys.readouterr().err
    assert main(["run", "deit_tiny_patch16_224", str(image), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "Fix: leave out --size (images are resized to 224 x 224), or --img-size 64 for the model" in err


def test_a_wrong_feed_names_the_inputs_the_runner_takes(tiny: dict[str, Path]) -> None:
    takes = r"It takes \(runner.input_specs\): images \[1, 3, 32, 32\] float32$"
    x = np.random.default_rng().standard_normal((1, 3, 32, 32)).astype(np.float32)
    for runner in (vitrt.open_runner(tiny["fp32"]), vitrt.open_runner(tiny["fp32"], runtime="openvino")):
        name = re.escape(runner.name)
        feed: dict[str, np.ndarray]
        for feed, problem in (
            ({"x": x}, r"inputs \['x'\] given, but it takes \['images'\]"),
            (
                {"images": x[:, :, :16]},
                r"input 'images' has shape \[1, 3, 16, 32\]: axis 2 is 16, the model takes 32",
            ),
            ({"images": x[0]}, r"input 'images' has shape \[3, 32, 32\]: rank 3, not 4"),
            ({"images": x.astype(np.float64)}, r"input 'images' is float64, the model takes float32"),
            ({"images": np.concatenate([x, x])}, r"the batch axis is 2, the model takes 1"),
        ):
            if runner.runtime == "openvino" and "float64" in problem:
                continue  # OpenVINO converts another float type itself
            with pytest.raises(FeedError, match=rf"^{name} cannot run this feed: .*{problem}\. {takes}"):
                runner.infer(feed)
        assert runner.infer({"images": x})["logits"].shape == (1, 10)  # the runner still works
    ort = vitrt.open_runner(tiny["fp32"])
    with pytest.raises(FeedError, match=r"inputs \['x'\] given, but it takes \['images'\]"):
        vitrt.profile_runner(ort, feed={"x": x}, progress=False)
    with pytest.raises(FeedError, match=r"the batch axis is 2, the model takes 1"):
        vitrt.profile_runner(ort, batch=2, progress=False)
    with pytest.raises(
        ConfigError, match=r"^threads must be a positive integer \(intra-op threads\), got '1'$"
    ):
        vitrt.open_runner(tiny["fp32"], threads="1")


def test_graph_options_and_opening_options_that_would_be_ignored_are_refused(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    for spec, runtime in ((tiny["fp32"], "onnxruntime"), (tiny["fp32.cpu"], "onnxruntime")):
        with pytest.raises(
            SourceError,
            match=rf"runs on the CPU \({runtime}\): cuda_graph and spin_wait would be ignored \(a TensorRT "
            r"engine takes both, a model name on CUDA takes cuda_graph\). Fix: leave them out",
        ):
            vitrt.open_runner(spec, cuda_graph=True, spin_wait=True)
    with pytest.raises(SourceError, match=r"spin_wait would be ignored .* Fix: leave it out, or give"):
        vitrt.open_runner(tiny["fp32"], spin_wait=True)
    with pytest.raises(SourceError, match=r"runs in PyTorch: spin_wait is a TensorRT runner's"):
        vitrt.open_runner("deit_tiny_patch16_224", img_size=32, spin_wait=True)
    check_graph_options(ModelSource("plan", "e.plan"), cuda_graph=True, spin_wait=True)  # an engine's
    # profile's trtexec defaults (11: graph and spin-wait) still open a host source; the result says n/a
    result = vitrt.profile_artifact(
        tiny["fp32"], warmup_s=0, duration_s=0, e2e_s=0, layers=False, progress=False, telemetry=False
    )
    assert result.settings["cuda_graph"] == "n/a (host runner)" and result.defaults["applied"] == []

    runner = vitrt.open_runner(tiny["fp32"])
    image = _png(tmp_path / "x.png", np.random.default_rng().integers(0, 256, (40, 48, 3), dtype=np.uint8))
    for options, said in (
        ({"threads": 1}, "threads=1"),
        ({"img_size": 32, "half": True}, "img_size=32, half=True"),
        ({"check": False}, "check=False"),
    ):
        with pytest.raises(
            VitrtError,
            match=rf"^{re.escape(said)}: options for opening a model, but the runner 'deit_t.onnx "
            r"\(onnxruntime\)' is already open and would ignore them. Fix: pass them to open_runner",
        ):
            vitrt.run(runner, image, **options)  # type: ignore[arg-type]
    assert len(vitrt.run(runner, image).predictions) == 1
    with pytest.raises(
        VitrtError, match=r"^images are jpg/png files or folders of them \(paths\), not a ndarray"
    ):
        vitrt.run(tiny["fp32"], np.zeros((1, 3, 32, 32), np.float32))  # type: ignore[arg-type]
    with pytest.raises(SourceError, match=r"^cannot open a ndarray: give an artifact folder"):
        vitrt.open_runner(np.zeros(3))  # type: ignore[arg-type]


def test_a_module_opens_as_a_pytorch_runner_at_its_own_size(tmp_path: Path) -> None:
    from vitrt.deploy.predict import load_image

    side = int(np.random.default_rng().choice([32, 48]))
    model = vitrt.create_model("deit_tiny_patch16_224", img_size=side, num_classes=10)
    plain = vitrt.TorchModelRunner(model)  # its input size is the model's own, not 224
    assert plain.input_specs == [TensorSpec("images", ("batch", 3, side, side), "float32")]
    profiled = vitrt.profile_torch(plain, warmup_s=0, duration_s=0, iterations=10, progress=False)
    assert profiled.latency.iterations == 10
    runner = vitrt.open_runner(model)
    assert runner.input_specs == plain.input_specs and runner.source.kind == "module"
    image = _png(tmp_path / "x.png", np.random.default_rng().integers(0, 256, (40, 48, 3), dtype=np.uint8))
    result = vitrt.run(model, image, top=3)
    x = load_image(image, model.preprocess)[None]
    probs = softmax(runner.infer({"images": x})["logits"])[0]
    assert [c for c, _, _ in result.predictions[0].top] == np.argsort(-probs)[:3].tolist()
    assert result.notes == [] and list(result.preprocess["input_size"]) == [3, side, side]  # weights: its own
    with pytest.raises(
        SourceError,
        match=r"^the VisionTransformer module is already built with its weights, fusion, attention, input "
        r"size and classes: img_size=64 would be ignored",
    ):
        vitrt.open_runner(model, img_size=64)
    with pytest.raises(SourceError, match=r"^the VisionTransformer module runs on torch: --threads"):
        vitrt.run(model, image, threads=2)
