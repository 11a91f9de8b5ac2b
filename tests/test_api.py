"""``import vitrt``: the public API, imported lazily, and ``python -m vitrt``."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import vitrt

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "numpy", "tensorrt")


def _run(script: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(
    "statement", ["import vitrt", "import vitrt.plugins", "import vitrt.plugins.cuda_launcher"]
)
def test_importing_vitrt_loads_no_heavy_dependency(statement: str) -> None:
    loaded = _run(f"""
        import json, sys
        {statement}
        import vitrt
        vitrt.VitrtError, vitrt.ConfigError, dir(vitrt)
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
    """)
    assert json.loads(loaded) == []


def test_the_public_names_resolve_to_the_stage_functions() -> None:
    from vitrt.calibration.calibrate import calibrate_onnx
    from vitrt.compiler.export import export_onnx
    from vitrt.models import load_checkpoint

    assert vitrt.export_onnx is export_onnx and vitrt.calibrate is calibrate_onnx
    assert vitrt.load_checkpoint is load_checkpoint
    for name in vitrt.__all__:
        assert getattr(vitrt, name) is not None
    assert set(vitrt.__all__) <= set(dir(vitrt)) and "models" in dir(vitrt)
    assert vitrt.models.list_models is vitrt.list_models
    with pytest.raises(AttributeError, match="module 'vitrt' has no attribute 'export'"):
        vitrt.export  # noqa: B018


def test_the_functions_take_the_options_of_their_command() -> None:
    from vitrt.compiler.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    # command option -> function parameter, where the function names it otherwise
    renamed = {"load_inputs": "inputs", "dynamic_batch": "batch", "no_simplify": "simplify"}
    renamed |= {"no_sensitivity": "sensitivity", "no_progress": "progress", "no_prepare": "prepare"}
    renamed |= {"no_check": "check", "no_telemetry": "telemetry", "no_layers": "layers"}
    renamed |= {"compile_verbose": "verbose"}  # compile's own -v (the global one is before the command)
    for command, function in [
        ("inspect", vitrt.model_card),
        ("export", vitrt.export_onnx),
        ("verify", vitrt.verify_onnx),
        ("calibrate", vitrt.calibrate),
        ("prepare", vitrt.prepare),
        ("fp16", vitrt.fp16),
        ("build", vitrt.build),
        ("bundle", vitrt.bundle),
        ("profile", vitrt.profile),
        ("run", vitrt.run),
        ("compile", vitrt.compile),
        ("tune", vitrt.tune),
    ]:
        params = list(inspect.signature(function).parameters)
        actions = [a for a in commands[command]._actions if a.dest != "help"]  # type: ignore[index]
        positional = {a.dest: params[0] for a in actions if not a.option_strings}  # model / onnx
        options = {positional.get(a.dest) or renamed.get(a.dest, a.dest) for a in actions}
        if command == "run":
            options -= {"json"}  # how the command prints its RunResult (RunResult.to_dict)
        assert options <= set(params), (command, options - set(params))


def test_python_dash_m_vitrt_is_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vitrt", "list-models", "deit*"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["deit_base_patch16_224", "deit_small_patch16_224", "deit_tiny_patch16_224"]
