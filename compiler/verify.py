"""Verify an ONNX model against a reference: PyTorch, or outputs another backend saved.

Inputs and outputs are stored in Polygraphy's JSON formats (a list of {name: array} feeds, and
``RunResults``), so a Jetson can check its TensorRT engine against the workstation's results with
``polygraphy run model.onnx --trt --load-inputs inputs.json --load-outputs outputs.json``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitrt.errors import ConfigError, VitrtError
from vitrt.fileio import atomic_output, load_onnx

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class OutputError:
    """Error of one output over all iterations: max |a - b| and max |a - b| / |b|
    (|b| floored at 1e-12). ``passed``: |a - b| <= atol + rtol * |b| everywhere."""

    name: str
    max_abs: float
    max_rel: float
    passed: bool


@dataclass(frozen=True)
class VerifyReport:
    """Result of ``verify_onnx``: one OutputError per output, and the tolerances used."""

    reference: str
    outputs: list[OutputError]
    atol: float
    rtol: float
    iterations: int
    precision: str = "fp32"

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def format(self) -> str:
        lines = [
            f"onnxrt ({self.precision} file) vs {self.reference}: {self.iterations} input set(s), "
            f"atol {self.atol}, rtol {self.rtol}"
        ]
        for o in self.outputs:
            verdict = "PASS" if o.passed else "FAIL"
            lines.append(f"  {o.name:<12} max abs {o.max_abs:.3e}  max rel {o.max_rel:.3e}  {verdict}")
        return "\n".join(lines)


def random_inputs(
    input_shapes: dict[str, list[Any]], *, iterations: int = 1, batch: int = 1, seed: int = 0
) -> list[Feed]:
    """Fresh N(0, 1) float32 feeds for each input (dynamic axes take ``batch``), seeded."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(iterations):
        feed = {}
        for name, shape in input_shapes.items():
            dims = [d if isinstance(d, int) and d > 0 else batch for d in shape]
            feed[name] = rng.standard_normal(dims, dtype=np.float32)
        feeds.append(feed)
    return feeds


@contextmanager
def _quiet_polygraphy() -> Iterator[None]:
    """Polygraphy logs every save/load at INFO, prints its errors (a wrong kind of JSON: the whole array
    dump) before raising them, and a "'colored' module is not installed" line with its first message; vitrt
    reports what it did and what went wrong itself, so nothing of Polygraphy's is printed."""
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):
        yield


def _read_polygraphy_json(path: str | os.PathLike[str], what: str) -> Any:
    """The object in a Polygraphy JSON file (a list of feeds, RunResults); VitrtError naming the file and
    the first line of the problem (not Polygraphy's message, which can hold a whole array)."""
    from polygraphy.json import load_json

    if not os.path.isfile(path):
        raise VitrtError(f"cannot read {what} from {path}: no such file")
    try:
        with _quiet_polygraphy():
            return load_json(str(path))
    except Exception as err:  # polygraphy raises PolygraphyException / JSONDecodeError / UnicodeDecodeError
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise VitrtError(f"cannot read {what} from {path}: not JSON ({first})") from err


INPUTS_KIND = "a Polygraphy inputs file (a JSON list of {name: array}, as --save-inputs writes)"
OUTPUTS_KIND = "a Polygraphy RunResults file (outputs, as --save-outputs writes)"


def save_inputs(feeds: list[Feed], path: str | os.PathLike[str]) -> None:
    """Write feeds in Polygraphy's ``--save-inputs`` JSON format (atomically)."""
    from polygraphy.json import save_json

    with atomic_output(path, suffix=".json") as tmp, _quiet_polygraphy():
        save_json(feeds, str(tmp))


def load_inputs(path: str | os.PathLike[str]) -> list[Feed]:
    """Read feeds saved by ``save_inputs`` or ``polygraphy run --save-inputs``."""
    from polygraphy.comparator import RunResults

    data = _read_polygraphy_json(path, "inputs")
    if isinstance(data, RunResults):
        raise VitrtError(
            f"{path} is {OUTPUTS_KIND}, not inputs: --load-inputs takes {INPUTS_KIND}; give the outputs "
            "file to --against"
        )
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise VitrtError(f"{path} is not {INPUTS_KIND}")
    return [{k: np.asarray(v) for k, v in d.items()} for d in data]


def save_outputs(outputs: list[Feed], path: str | os.PathLike[str], runner_name: str) -> None:
    """Write outputs as Polygraphy ``RunResults`` (what ``--save-outputs``/``--load-outputs`` use)."""
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult

    results = RunResults()
    results.append((runner_name, [IterationResult(dict(o), runner_name=runner_name) for o in outputs]))
    with atomic_output(path, suffix=".json") as tmp, _quiet_polygraphy():
        results.save(str(tmp))


def load_outputs(path: str | os.PathLike[str]) -> tuple[str, list[Feed]]:
    """(runner name, outputs per iteration) of the first runner in a Polygraphy RunResults file."""
    from polygraphy.comparator import RunResults

    results = _read_polygraphy_json(path, "reference outputs")
    if not isinstance(results, RunResults):
        if isinstance(results, list) and results and all(isinstance(d, dict) for d in results):
            found = "is a Polygraphy inputs file (as --save-inputs writes); give it to --load-inputs"
        else:
            found = f"holds a JSON {type(results).__name__}"
        raise VitrtError(f"{path} {found}. --against takes 'torch' or {OUTPUTS_KIND}")
    if not len(results):
        raise VitrtError(f"{path} holds no results")
    name, iterations = results[0]
    return name, [{k: np.asarray(v) for k, v in it.items()} for it in iterations]


def compare(actual: list[Feed], expected: list[Feed], *, atol: float, rtol: float) -> list[OutputError]:
    """Per-output errors of ``actual`` against ``expected`` over all iterations."""
    if len(actual) != len(expected):
        raise VitrtError(f"{len(actual)} result set(s) to compare with {len(expected)} reference set(s)")
    errors = []
    for name in expected[0]:
        max_abs = max_rel = 0.0
        passed = True
        for a, e in zip(actual, expected, strict=True):
            if name not in a:
                raise VitrtError(f"output {name!r} missing from the model's outputs {sorted(a)}")
            if a[name].shape != e[name].shape:
                raise VitrtError(f"output {name!r} has shape {a[name].shape}, reference {e[name].shape}")
            diff = np.abs(a[name].astype(np.float64) - e[name].astype(np.float64))
            ref = np.abs(e[name].astype(np.float64))
            max_abs = max(max_abs, float(diff.max(initial=0.0)))
            max_rel = max(max_rel, float((diff / np.maximum(ref, 1e-12)).max(initial=0.0)))
            passed &= bool(np.all(diff <= atol + rtol * ref))
        errors.append(OutputError(name, max_abs, max_rel, passed))
    return errors


# Default tolerances by what the file holds (its PrecisionRecipe), for logits of O(1). float16 keeps ~3
# decimal digits per op over a dozen blocks; INT8's error is judged by agreement (vitrt calibrate's report):
# its default here is a gross-error check only.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-3),
    "fp16": (2e-2, 2e-2),
    "int8": (0.25, 0.1),
    "int8+fp16": (0.25, 0.1),
}


def verify_onnx(
    path: str | os.PathLike[str],
    *,
    against: str = "torch",
    atol: float | None = None,
    rtol: float | None = None,
    inputs: Feed | list[Feed] | str | os.PathLike[str] | None = None,
    iterations: int | None = None,
    batch: int | None = None,
    save_inputs: str | os.PathLike[str] | None = None,
    save_outputs: str | os.PathLike[str] | None = None,
    custom_ops_library: str | None = None,
) -> tuple[VerifyReport, list[Feed], list[Feed]]:
    """Run ``path`` on ONNX Runtime (CPU) and compare it with a reference: ``vitrt verify`` as a
    function (``vitrt.verify_onnx``).

    against: ``"torch"`` rebuilds the PyTorch model from the ExportConfig stored in the file (same
    checkpoint or seed), or a path to a Polygraphy RunResults JSON (then ``inputs`` must be the feeds
    those outputs were computed from). atol / rtol: an output passes where |a - b| <= atol + rtol |b|;
    None: the default for what the file holds (its precision recipe, ``DEFAULT_TOLERANCES``): float32
    1e-4 / 1e-3, FP16 2e-2 / 2e-2, INT8 and INT8+FP16 0.25 / 0.1.
    inputs: a feed ({name: array}: one set), a list of feeds, a Polygraphy inputs JSON to load them from,
    or None for ``iterations`` random sets (default 1) at ``batch`` (the batch of a dynamic batch axis,
    default 1; a fixed batch axis of another size is a BatchError). iterations and batch make random
    inputs: given with ``inputs`` they are refused (VitrtError). save_inputs / save_outputs: also write
    the feeds used / ONNX Runtime's outputs as Polygraphy JSON.
    Returns (report, inputs used, ONNX Runtime outputs); ``report.passed`` says whether it held. Raises
    ConfigError for an option of the wrong type or an ``against`` that is neither, VitrtError when the
    PyTorch model cannot be rebuilt (``model_from_config``: a module exported without a checkpoint).
    """
    from vitrt.deploy.runners import OnnxRuntimeRunner, TorchRunner
    from vitrt.deploy.sources import BatchError

    from .build_plan import fixed_batch
    from .export import model_from_config, read_export_config
    from .model_facts import read_model_facts

    for key, value in (("iterations", iterations), ("batch", batch)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise VitrtError(f"{key} must be a positive integer, got {value!r}. Fix: --{key} 1 or more")
    for key, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0):
            raise ConfigError(f"{key} must be a number >= 0 such as 1e-3, got {tol!r}")
    if not isinstance(against, (str, os.PathLike)):
        raise ConfigError(f"against is 'torch' or a path, got a {type(against).__name__}")
    if against != "torch" and not os.path.isfile(against):
        raise ConfigError(
            f"against is 'torch' (the PyTorch model rebuilt from the export config) or {OUTPUTS_KIND}; "
            f"{os.fspath(against)!r} is neither: no such file"
        )
    if isinstance(inputs, dict):
        inputs = [inputs]  # one feed: one input set
    if inputs is not None:
        given = [f"--{key}" for key, value in (("iterations", iterations), ("batch", batch)) if value]
        if given:
            flags = " and ".join(given)
            raise VitrtError(
                f"{flags} shape random inputs, but --load-inputs gives the inputs: its sets run as they "
                f"are, at their own batch. Fix: leave out {flags}, or --load-inputs"
            )
        if isinstance(inputs, (str, os.PathLike)):
            inputs = load_inputs(inputs)
        elif not isinstance(inputs, list) or not all(isinstance(f, dict) for f in inputs):
            raise ConfigError(
                "inputs is a feed ({name: array}), a list of feeds, or a Polygraphy inputs JSON path; got "
                + (
                    f"a list holding a {_first_other(inputs)}"
                    if isinstance(inputs, list)
                    else type(inputs).__name__
                )
            )
        elif not inputs:
            raise VitrtError("inputs is an empty list: give at least one feed ({name: array})")
    if against != "torch":
        if inputs is None:
            raise VitrtError(
                "saved outputs are compared on the inputs they came from: pass --load-inputs too"
            )
        reference_name, expected = load_outputs(against)
    from vitrt.calibration.recipe import read_recipe

    proto = load_onnx(path)
    if batch is not None:
        for t in read_model_facts(proto).inputs:
            first = fixed_batch(t.shape)
            if first is not None and first != batch:
                raise BatchError(
                    f"{path} takes batches of exactly {first} (its input {t.name!r} has a fixed batch axis), "
                    f"not {batch}. Fix: --batch {first} (or leave it out), or export with --dynamic-batch"
                )
    recipe = read_recipe(proto)
    precision = recipe.precision if recipe is not None else "fp32"
    default_atol, default_rtol = DEFAULT_TOLERANCES[precision]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    runner = OnnxRuntimeRunner(path, custom_ops_library=custom_ops_library)
    if against == "torch":
        config = read_export_config(proto)
        if config is None:
            raise VitrtError(
                f"{path} was not exported by vitrt (no {'vitrt.export_config'} metadata), so the PyTorch "
                "model is unknown: verify it against saved outputs instead (--against outputs.json)"
            )
        feeds = inputs or random_inputs(runner.input_shapes, iterations=iterations or 1, batch=batch or 1)
        reference = TorchRunner(model_from_config(config))
        expected = [reference.infer(f) for f in feeds]
        reference_name = f"torch ({config.model})"
    else:
        assert inputs is not None  # checked above
        feeds = inputs
    actual = [runner.infer(f) for f in feeds]
    report = VerifyReport(
        reference_name, compare(actual, expected, atol=atol, rtol=rtol), atol, rtol, len(feeds), precision
    )
    if save_inputs is not None:
        _save_inputs(feeds, save_inputs)
    if save_outputs is not None:
        _save_outputs(actual, save_outputs, runner_name="onnxrt-runner-N0")
    return report, feeds, actual


def _first_other(feeds: list[Any]) -> str:
    return next(type(f).__name__ for f in feeds if not isinstance(f, dict))


# ``verify_onnx``'s keyword arguments shadow these two inside it.
_save_inputs, _save_outputs = save_inputs, save_outputs
