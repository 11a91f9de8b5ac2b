"""The command line: every module imports, every --help runs, errors exit 2 with a message."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from vitrt.compiler.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["compiler", "plugins", "calibration", "deploy", "models"]


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:  # by their one import name: ``vitrt.<stage>``
        names.append(f"vitrt.{pkg}")
        path = ROOT / pkg
        names += [m.name for m in pkgutil.walk_packages([str(path)], prefix=f"vitrt.{pkg}.")]
    return names


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports_without_optional_dependencies(module: str) -> None:
    # tensorrt / cuda are imported lazily inside functions, so this holds on a CPU-only machine.
    importlib.import_module(module)


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_help(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    assert "usage: vitrt" in capsys.readouterr().out


def test_console_script_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vitrt.compiler.cli", "list-models", "deit*"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0
    assert out.stdout.split() == ["deit_base_patch16_224", "deit_small_patch16_224", "deit_tiny_patch16_224"]


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    # `vitrt list-models | head -1`: the pipe is closed before the command writes
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitrt.compiler.cli", "list-models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and err == ""


def test_inspect_counts_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "t2t_vit_7", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "parameters      4,264,142" in out  # 4,310,222 - (197 - 17) * 256: a 17-row sinusoid table
    assert "soft split 1 -> attention1     256" in out
    assert "tokens per block [17, 17, 17, 17, 17, 17, 17] -> 17 out" in out
    assert "crop_pct 0.9, bicubic" in out


def test_bad_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from vitrt.models import create_model

    good = tmp_path / "good.pth.tar"
    torch.save({"state_dict_ema": create_model("t2t_vit_7", img_size=64).state_dict()}, good)
    assert main(["inspect", "t2t_vit_7", "--img-size", "64", "--checkpoint", str(good)]) == 0
    assert "loaded strictly" in capsys.readouterr().out
    assert main(["inspect", "t2t_vit_10", "--img-size", "64", "--checkpoint", str(good)]) == 2
    assert "missing keys (33): blocks.7.norm1.weight" in capsys.readouterr().err  # 3 blocks x 11
    text = tmp_path / "readme.pth"
    text.write_text("hello")
    assert main(["inspect", "t2t_vit_7", "--checkpoint", str(text)]) == 2
    assert "is not a PyTorch checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "t2t_vit14"], "unknown model 't2t_vit14'; did you mean t2t_vit_14"),
        (["inspect", "t2t_vit_7", "--img-size", "70"], "img_size 70 does not fit"),
    ],
)
def test_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_export_hides_other_packages_logs_unless_verbose(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # onnx_ir and onnxscript log their passes at INFO ("Removed 17 unused nodes"...); `vitrt export` lets
    # them through only with -v, as compile does. The exporter's "torchvision is not installed" warnings,
    # which export_model drops for every caller, stay out either way.
    import logging

    caplog.set_level(logging.INFO)
    path = str(tmp_path / "t2t7.onnx")
    assert main(["export", "t2t_vit_7", "--img-size", "32", "-o", path]) == 0
    quiet = capfd.readouterr()
    assert quiet.out.startswith("wrote ") and quiet.err == ""
    assert not [r for r in caplog.records if r.name.startswith(("onnx_ir", "onnxscript", "torch"))]
    assert main(["-v", "export", "t2t_vit_7", "--img-size", "32", "-o", path]) == 0
    assert "torchvision" not in capfd.readouterr().err
    assert any(r.name.startswith("onnx_ir.passes") for r in caplog.records)
    assert not any("torchvision" in r.getMessage() for r in caplog.records)
