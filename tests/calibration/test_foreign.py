"""INT8 of a foreign export (TorchScript exporter, opset 14, dynamic batch, default names, no vitrt
metadata) of the trained digits DeiT: preprocessing from options, a clear error without them, and
agreement with FP32 at least that of ONNX Runtime's quantize_static on the same calibration data, in
both INT8 forms (TensorRT's, the default, and ONNX Runtime's, ``--for onnxruntime``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.compiler.test_prepare import DIGITS, train_digits
from vitrt.calibration.calibrate import calibrate_onnx
from vitrt.calibration.errors import CalibrationError
from vitrt.calibration.metrics import agreement
from vitrt.calibration.recipe import read_recipe
from vitrt.compiler.cli import main
from vitrt.deploy.runners import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(foreign FP32 file, 128 calibration digits, 64 held-out digits), preprocessed (N, 3, 64, 64)."""
    td = train_digits()
    folder = tmp_path_factory.mktemp("foreign")
    model, _ = td.load_trained(DIGITS, "digits_deit")  # type: ignore[attr-defined]
    path = td.export_foreign(model, folder / "deit.onnx", 64)  # type: ignore[attr-defined]
    x, _ = td.digits_tensors("digits_deit")  # type: ignore[attr-defined]
    train, held = td.digits_split()  # type: ignore[attr-defined]
    calib = x[np.random.default_rng(1).choice(train, 128, replace=False)].numpy()
    return path, calib, x[held[:64]].numpy()


def test_a_foreign_file_needs_its_preprocessing(
    foreign: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path, _, _ = foreign
    with pytest.raises(CalibrationError, match=r"no vitrt export config.*pass --mean and --std"):
        calibrate_onnx(path, "sklearn-digits", tmp_path / "q.onnx", num_samples=8, progress=False)
    with pytest.raises(CalibrationError, match="pass --std"):
        calibrate_onnx(
            path, "sklearn-digits", tmp_path / "q.onnx", num_samples=8, progress=False, mean=(0.5,)
        )
    with pytest.raises(CalibrationError, match="size \\(32, 32\\) differs from the model's input"):
        calibrate_onnx(
            path, "sklearn-digits", tmp_path / "q.onnx", num_samples=8, progress=False, mean=(0.5,),
            std=(0.5,), size=32, convert_channels=True,
        )  # fmt: skip
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_foreign_int8_agrees_at_least_as_well_as_quantize_static(
    foreign: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    path, calib, held = foreign
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "held.npy", held)
    out = tmp_path / "deit.int8.onnx"
    args = [
        "calibrate",
        str(path),
        "--data",
        str(tmp_path / "calib.npy"),
        "-o",
        str(out),
        "--num-samples",
        "128",
    ]
    args += ["--eval-data", str(tmp_path / "held.npy"), "--mean", "0.5", "--std", "0.5", "--crop-pct", "1"]
    args += [
        "--interpolation",
        "bilinear",
        "--no-progress",
        "--threads",
        "1",
        "--no-sensitivity",
        "--size",
        "64",
    ]
    assert main(args) == 0
    assert "prepared: opset 14 -> 17" in capsys.readouterr().out
    recipe = read_recipe(onnx.load(str(out)))
    assert (
        recipe is not None
        and recipe.prepared is not None
        and recipe.prepared["fused"] == {"LayerNormalization": 9}
    )
    assert len(recipe.int8_layers) == 26 and len(recipe.residual_adds) == 8
    assert recipe.int8_form == "tensorrt"
    # the ONNX Runtime form: int32 biases; the patch-embedding Conv, the 65-token attention matmuls and
    # the 96 -> 10 head stay float (too small to gain on ONNX Runtime's int8 kernels)
    ort_form = tmp_path / "deit.ort-form.onnx"
    assert main([*args[:5], str(ort_form), *args[6:], "--for", "onnxruntime"]) == 0
    assert (
        "ONNX Runtime form: int32 biases, 10 layers kept float by its cost model" in capsys.readouterr().out
    )
    ort_recipe = read_recipe(onnx.load(str(ort_form)))
    assert ort_recipe is not None and ort_recipe.int8_form == "onnxruntime"
    assert len(ort_recipe.int8_layers) == 16 and set(ort_recipe.int8_layers) < set(recipe.int8_layers)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"pixel_values": x[None]}

    ort_out = tmp_path / "deit.ort.onnx"
    quantize_static(str(path), str(ort_out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)

    def logits(file: Path) -> np.ndarray:
        runner = OnnxRuntimeRunner(file, threads=1)
        name = next(iter(runner.input_shapes))
        return np.concatenate([runner.infer({name: held[i : i + 1]})["logits"] for i in range(len(held))])

    fp32 = logits(path)
    ort = agreement(fp32, logits(ort_out))
    for file in (out, ort_form):
        vitrt = agreement(fp32, logits(file))
        assert vitrt.mean_cosine >= ort.mean_cosine, (file.name, vitrt, ort)
        assert vitrt.mean_cosine > 0.999 and vitrt.top1_agreement >= 0.98, (file.name, vitrt)
