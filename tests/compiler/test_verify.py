"""``vitrt verify``'s bad input: iterations and batch checked before any work, options that cannot apply
refused, and a wrong kind of Polygraphy JSON named in one vitrt error with nothing of Polygraphy's printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vitrt.compiler.cli import main
from vitrt.compiler.verify import load_inputs, load_outputs, save_inputs, save_outputs, verify_onnx
from vitrt.deploy.sources import BatchError
from vitrt.errors import ConfigError, VitrtError


def _feeds(count: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng()
    return [{"images": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)} for _ in range(count)]


def test_iterations_and_batch_are_checked_first(
    precision_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp32 = precision_files["fp32"]  # a fixed batch axis of 1
    for key, value in [("iterations", 0), ("batch", 0), ("iterations", -2), ("batch", True)]:
        match = rf"^{key} must be a positive integer, got {value!r}. Fix: --{key} 1 or more$"
        with pytest.raises(VitrtError, match=match):
            verify_onnx(fp32, **{key: value})
    assert main(["verify", str(fp32), "--iterations", "0", "--save-inputs", str(tmp_path / "in.json")]) == 2
    assert capsys.readouterr().err == (
        "vitrt verify: error: iterations must be a positive integer, got 0. Fix: --iterations 1 or more\n"
    )
    with pytest.raises(
        BatchError,
        match=r"deit_t.onnx takes batches of exactly 1 \(its input 'images' has a fixed batch axis\), not 4. "
        r"Fix: --batch 1 \(or leave it out\), or export with --dynamic-batch",
    ):
        verify_onnx(fp32, batch=4)
    # random inputs' options with loaded inputs would be ignored
    inputs = tmp_path / "in.json"
    save_inputs(_feeds(2), inputs)
    assert main(["verify", str(fp32), "--load-inputs", str(inputs), "--iterations", "3"]) == 2
    assert capsys.readouterr().err == (
        "vitrt verify: error: --iterations shape random inputs, but --load-inputs gives the inputs: its sets "
        "run as they are, at their own batch. Fix: leave out --iterations, or --load-inputs\n"
    )
    with pytest.raises(VitrtError, match=r"^--iterations and --batch shape random inputs"):
        verify_onnx(fp32, inputs=inputs, iterations=2, batch=1)
    with pytest.raises(VitrtError, match=r"inputs is an empty list"):
        verify_onnx(fp32, inputs=[])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]  # nothing written on the way
    report, feeds, _ = verify_onnx(fp32, batch=1, iterations=2)
    assert report.passed and report.iterations == len(feeds) == 2


def test_a_wrong_kind_of_json_is_one_vitrt_error(
    precision_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp32 = str(precision_files["fp32"])
    inputs, outputs = tmp_path / "in.json", tmp_path / "out.json"
    feeds = _feeds()
    save_inputs(feeds, inputs)
    logits = np.random.default_rng().standard_normal((1, 10)).astype(np.float32)
    save_outputs([{"logits": logits}], outputs, "r")
    capsys.readouterr()
    # the inputs file given as the reference outputs: Polygraphy printed its error with the whole array
    assert main(["verify", fp32, "--against", str(inputs), "--load-inputs", str(inputs)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing of Polygraphy's ([W] 'colored' module..., [!] Provided JSON cannot be decoded)
    assert err == (
        f"vitrt verify: error: {inputs} is a Polygraphy inputs file (as --save-inputs writes); give it to "
        "--load-inputs. --against takes 'torch' or a Polygraphy RunResults file (outputs, as --save-outputs "
        "writes)\n"
    )
    assert main(["verify", fp32, "--against", str(outputs), "--load-inputs", str(outputs)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(
        f"vitrt verify: error: {outputs} is a Polygraphy RunResults file (outputs, as --save-outputs "
        "writes), not inputs: --load-inputs takes a Polygraphy inputs file"
    )
    with pytest.raises(VitrtError, match=r"cannot read reference outputs from .*deit_t.onnx: not JSON \("):
        load_outputs(fp32)
    with pytest.raises(VitrtError, match=r"cannot read inputs from .*absent.json: no such file"):
        load_inputs(tmp_path / "absent.json")
    with pytest.raises(VitrtError, match=r"pass --load-inputs too"):
        verify_onnx(fp32, against=str(outputs))
    np.testing.assert_array_equal(load_inputs(inputs)[0]["images"], feeds[0]["images"])
    assert capsys.readouterr().out == ""


def test_options_of_the_wrong_type_are_config_errors_and_one_feed_is_one_set(
    precision_files: dict[str, Path], tmp_path: Path
) -> None:
    fp32 = precision_files["fp32"]
    for options, message in [
        ({"atol": "1e-3"}, r"^atol must be a number >= 0 such as 1e-3, got '1e-3'$"),
        ({"rtol": -0.1}, r"^rtol must be a number >= 0 such as 1e-3, got -0.1$"),
        ({"atol": float("nan")}, r"^atol must be a number >= 0 such as 1e-3, got nan$"),
        (
            {"against": "pytorch"},
            r"^against is 'torch' \(the PyTorch model rebuilt from the export config\) or a Polygraphy "
            r"RunResults file .*; 'pytorch' is neither: no such file$",
        ),
        ({"against": 1}, r"^against is 'torch' or a path, got a int$"),
        (
            {"inputs": [np.zeros((1, 3, 32, 32))]},
            r"^inputs is a feed \(\{name: array\}\), a list of feeds.* "
            r"got a list holding a ndarray$",
        ),
        ({"inputs": np.zeros((1, 3, 32, 32))}, r"^inputs is a feed .* got ndarray$"),
    ]:
        with pytest.raises(ConfigError, match=message):
            verify_onnx(fp32, **options)  # type: ignore[arg-type]
    feed = _feeds()[0]
    report, feeds, outputs = verify_onnx(fp32, inputs=feed)  # a single feed dict: one input set
    assert report.passed and report.iterations == len(feeds) == len(outputs) == 1
    np.testing.assert_array_equal(feeds[0]["images"], feed["images"])
    assert list(tmp_path.iterdir()) == []
