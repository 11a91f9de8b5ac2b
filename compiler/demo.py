"""`make demo` / `vitrt demo`: ``vitrt compile`` on a trained model, for the CPU, and its summary.

The model is one of the digits models that ship in the repository (``benchmarks/digits/``: T2T-ViTs at 128 x
128 (the default) and 64 x 64 and a DeiT at 64 x 64, trained on scikit-learn's digits, the only trained
weights available offline) with MCTF token fusion (the schedule ``vitrt tune`` measured, ``DEMO_FUSION``),
compiled to INT8 for ``cpu``. The demo writes its data first (``<workdir>/data/``): the 500 held-out digits
with their labels (evaluation) and 320 digits of the training split (calibration, so that calibration never
sees an evaluation image), both preprocessed as the model takes them. Then it runs the same stages as
``vitrt compile <description>.json --checkpoint <name>.safetensors --fusion <schedule> --target cpu
--precision int8 --calib-data <train.npz> --eval-data <held_out.npz> -o <workdir>/<name>``, and prints the
summary: held-out top-1 FP32 vs INT8, latency against PyTorch eager in the same run, where the report is.
"""

from __future__ import annotations

import json
import shlex
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_output, source_checkout

DIGITS_MODELS = ("digits_t2t_vit_128", "digits_t2t_vit", "digits_deit")
# The MCTF schedule `vitrt tune` measured for the demo model (README, Tuning): r = 32 in block 2 of 6 took
# 0.94x of the unfused INT8 latency at 98.2 % held-out top-1 (unfused 98.4 %). The "mctf" preset (r = 16
# in blocks 1-5) would leave 10 of the 65 tokens; the closest trial, r = [0, 32, 16, 7, 0, 0], lost 1.8
# points.
DEMO_FUSION: dict[str, dict[str, Any]] = {"digits_t2t_vit_128": {"preset": "mctf", "r": [0, 0, 32, 0, 0, 0]}}
CALIBRATION_SAMPLES = 320  # the calibration takes 256; calibrate checks its INT8 file on the next 64
# One thread for ONNX Runtime and PyTorch alike when timing: on a 2-core machine shared with other work, two
# spinning thread pools made PyTorch eager 10-40x slower than with one (measured here), which says nothing
# about the model.
PROFILE_THREADS = 1


def digits_folder() -> Path:
    """``benchmarks/digits`` of this source checkout; VitrtError for an installed wheel (they do not ship)."""
    root = source_checkout()
    folder = (root or Path.cwd()) / "benchmarks" / "digits"
    if not (folder / "split.json").is_file():
        raise VitrtError(
            "the demo's trained digits models live in the repository (benchmarks/digits/), not in the wheel: "
            "run `make demo` / `vitrt demo` from a clone of vitrt"
        )
    return folder


def write_digits_data(folder: Path, description: Path, out: Path) -> tuple[Path, Path]:
    """(calibration .npz, held-out .npz) in ``out``: model-ready float32 digits (N, 3, S, S) under
    ``images`` (S: the model's input side, in the file names), the held-out set with ``labels``; the split
    is ``folder/split.json``'s. Written once per input size."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    from vitrt.calibration.data import open_source
    from vitrt.models.config import PreprocessConfig

    pre = json.loads(description.read_text())["preprocess"]
    side = int(pre["input_size"][-1])
    calib, held = out / f"digits_train_{side}px.npz", out / f"digits_held_out_{side}px.npz"
    if calib.is_file() and held.is_file():
        return calib, held
    out.mkdir(parents=True, exist_ok=True)
    cfg = PreprocessConfig(
        input_size=tuple(pre["input_size"]),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
        crop_pct=pre["crop_pct"],
        interpolation=pre["interpolation"],
    )
    data = open_source("sklearn-digits", cfg, 1797, convert_channels=True, progress=False)
    split = json.loads((folder / "split.json").read_text())
    labels = np.asarray(load_digits().target, dtype=np.int64)
    for path, indices, with_labels in (
        (calib, split["train"][:CALIBRATION_SAMPLES], False),
        (held, split["held_out"], True),
    ):
        images = np.stack([data.sample(int(i)).numpy() for i in indices]).astype(np.float32)
        arrays = {"images": images, **({"labels": labels[indices]} if with_labels else {})}
        with atomic_output(path, suffix=".npz") as tmp:
            _save_npz(tmp, arrays)
    return calib, held


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` at zlib level 1 instead of 6 (what np.load reads either way): the 500 held-out
    digits at 128 px (98 MB of float32) take about a sixth of the time for 8 % more bytes (1.7 s and
    36.7 MB against 9.7 s and 34.1 MB on the 2-core workstation)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _relative(arg: str) -> str:
    """``arg`` relative to the working folder when it is a path inside it (a shorter command line)."""
    try:
        return str(Path(arg).resolve().relative_to(Path.cwd())) if "/" in arg else arg
    except ValueError:
        return arg


def _fusion_arg(fusion: str | dict[str, Any]) -> str:
    """``fusion`` as ``vitrt compile --fusion`` takes it: a preset name, or compact JSON."""
    return fusion if isinstance(fusion, str) else json.dumps(fusion, separators=(",", ":"))


def run_demo(
    model_name: str = "digits_t2t_vit_128",
    fusion: str | dict[str, Any] | None = "auto",
    precision: str = "int8",
    workdir: str = "artifacts/demo",
    verbose: bool = False,
) -> int:
    """Compile the trained ``model_name`` for the CPU and print the summary; returns the exit status.

    fusion: a preset or JSON dict as ``vitrt compile --fusion`` takes it, None for none, or "auto": the
    model's ``DEMO_FUSION`` schedule (the "mctf" preset for a model without one)."""
    from .compile import compile_model

    if model_name not in DIGITS_MODELS:
        raise VitrtError(f"the demo compiles one of {', '.join(DIGITS_MODELS)}, not {model_name!r}")
    if fusion == "auto":
        fusion = DEMO_FUSION.get(model_name, "mctf")
    folder = digits_folder()
    description, checkpoint = folder / f"{model_name}.json", folder / f"{model_name}.safetensors"
    work = Path(workdir)
    calib, held = write_digits_data(folder, description, work / "data")
    out = work / model_name
    calib_data = calib if precision.startswith("int8") else None  # compile refuses it for fp32 / fp16
    command = [
        "vitrt", "compile", str(description), "--checkpoint", str(checkpoint),
        *(["--fusion", _fusion_arg(fusion)] if fusion else []), "--target", "cpu", "--precision", precision,
        *(["--calib-data", str(calib_data)] if calib_data else []), "--eval-data", str(held),
        "--threads", str(PROFILE_THREADS), "-o", str(out),
    ]  # fmt: skip
    print("$ " + shlex.join(_relative(c) for c in command), flush=True)
    start = time.perf_counter()
    result = compile_model(
        description,
        out,
        checkpoint=checkpoint,
        fusion=fusion,
        target="cpu",
        precision=precision,
        calib_data=calib_data,
        eval_data=held,
        threads=PROFILE_THREADS,
        verbose=verbose,
        progress=lambda line: print(line, flush=True),
    )
    print(f"\ncompiled in {time.perf_counter() - start:.1f} s", flush=True)
    for line in result.summary():
        print(f"  {line}")
    return 0
