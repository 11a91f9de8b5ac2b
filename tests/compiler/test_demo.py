"""``vitrt demo``'s choices: the tuned fusion schedule is valid for its model, and the data it writes per
input size (the demo itself is ``make demo``: a full compile, timed in the README)."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from vitrt.compiler.demo import DEMO_FUSION, DIGITS_MODELS, _fusion_arg, write_digits_data
from vitrt.compiler.tune_model import resolve_model

DIGITS = Path(__file__).resolve().parents[2] / "benchmarks" / "digits"


@pytest.mark.parametrize("name", sorted(DEMO_FUSION))
def test_the_demo_schedule_fuses_what_it_says_on_its_model(name: str) -> None:
    assert name in DIGITS_MODELS
    source = resolve_model(str(DIGITS / f"{name}.safetensors"))
    fusion = DEMO_FUSION[name]
    model = source.build(fusion=fusion)
    counts = [int(n) for n in model.token_schedule()]
    # every requested r is removed exactly (the caps change nothing) in the block that asks for it
    removed = [a - b for a, b in pairwise(counts)]
    assert removed == list(fusion["r"]), (counts, fusion)
    # the command line the demo prints parses back to the same schedule
    assert json.loads(_fusion_arg(fusion)) == fusion and _fusion_arg("mctf") == "mctf"


def test_digits_data_is_written_per_input_size(tmp_path: Path) -> None:
    files = {}
    for name in ("digits_t2t_vit_128", "digits_deit"):
        calib, held = write_digits_data(DIGITS, DIGITS / f"{name}.json", tmp_path)
        side = json.loads((DIGITS / f"{name}.json").read_text())["preprocess"]["input_size"][-1]
        with np.load(held) as npz:
            assert npz["images"].shape == (500, 3, side, side) and npz["labels"].shape == (500,)
        with np.load(calib) as npz:
            assert npz["images"].shape[1:] == (3, side, side) and "labels" not in npz.files
        files[name] = (calib, held)
    assert files["digits_t2t_vit_128"] != files["digits_deit"]  # one model's data never serves another


def test_the_training_log_keeps_each_models_own_lines() -> None:
    """``train_digits.py`` rewrites the sections of the models it retrains and keeps the others' (its
    shipped log holds three sections, the older two written by one run)."""
    from tests.compiler.test_prepare import train_digits

    sections = train_digits()._log_sections((DIGITS / "train_log.txt").read_text())  # type: ignore[attr-defined]
    assert set(sections) == set(DIGITS_MODELS)
    for name, text in sections.items():
        lines = text.splitlines()
        assert lines[0].startswith("# train_digits.py") and lines[1].startswith(f"## {name}:")
        assert all(line.startswith((f"{name} ", f"# {name}:")) for line in lines[2:]), name
        assert any(line.startswith(f"{name} epoch  40") for line in lines), name
