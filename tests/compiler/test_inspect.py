"""`vitrt inspect` / ``vitrt.model_card``: model descriptions, sizes a model cannot take, and the note when
a token fusion removes fewer tokens than its r asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitrt.compiler.cli import main
from vitrt.compiler.inspect import model_card
from vitrt.errors import ConfigError

DIGITS = Path(__file__).resolve().parents[2] / "benchmarks" / "digits"
NOTE_WHY = "a fusion merges at most (N-1)//2 of N tokens and leaves at least 10"


def test_a_model_description_is_inspected_like_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    description, weights = DIGITS / "digits_deit.json", DIGITS / "digits_deit.safetensors"
    argv = ["inspect", str(description), "--checkpoint", str(weights), "--fusion", "mctf"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == "digits_deit  (VisionTransformer from a model description; fusion=mctf, attention=dense)"
    )
    assert lines[1] == f"  checkpoint      {weights} (loaded strictly: every key and shape matches)"
    assert "  parameters      325,162" in lines
    assert "  tokens per block [65, 65, 49, 33] -> 17 out" in lines  # 64 px, patch 8: 64 tokens + class
    assert lines[-2] == (  # the description's preprocessing, not the registered models' default
        "  preprocessing   input (3, 64, 64), mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5), "
        "crop_pct 1.0, bilinear"
    )
    assert lines[-1].startswith("  architecture    {'class': 'vitrt.models.deit.VisionTransformer'")
    assert not any("paper reports" in line or "note:" in line for line in lines)


def test_a_description_keeps_its_own_image_size(capsys: pytest.CaptureFixture[str]) -> None:
    description = DIGITS / "digits_t2t_vit_128.json"
    assert main(["inspect", str(description), "--img-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vitrt inspect: error: {description} describes a model with img_size 128 ")
    assert "--img-size 64 does not apply to a description. Leave --img-size out (or give 128)" in err
    assert "tokens per block [65, 65, 65, 65, 65, 65] -> 65 out" in model_card(str(description), img_size=128)


@pytest.mark.parametrize(
    ("img_size", "message"),
    [
        ("0", "img_size 0 is not a positive multiple of the patch size 16; use 16\n"),
        ("-32", "img_size -32 is not a positive multiple of the patch size 16; use 16\n"),
        ("8", "img_size 8 is not a positive multiple of the patch size 16; use 16\n"),
        ("40", "img_size 40 is not a positive multiple of the patch size 16; use 32 or 48\n"),
    ],
)
def test_sizes_the_model_cannot_take_exit_2_with_sizes_that_work(
    img_size: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "deit_tiny_patch16_224", "--img-size", img_size]) == 2
    assert capsys.readouterr().err == f"vitrt inspect: error: {message}"


def test_a_fusion_that_merges_nothing_or_less_than_asked_is_noted() -> None:
    nothing = model_card("deit_tiny_patch16_224", img_size=32, fusion="tome").splitlines()
    assert "  tokens per block [5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5] -> 5 out" in nothing
    assert (
        f"  note: nothing is fused at img_size 32: 5 tokens enter the blocks, and {NOTE_WHY}. "
        "Use a larger --img-size"
    ) in nothing
    capped = model_card("deit_tiny_patch16_224", img_size=64, fusion="mctf").splitlines()
    assert "  tokens per block [17, 17, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10] -> 10 out" in capped
    assert f"  note: capped in blocks 1-11: 7 tokens removed there, not the 176 r asks ({NOTE_WHY})" in capped
    one = model_card("deit_tiny_patch16_224", fusion="tome").splitlines()  # ToMe's r = 16 at 224: 21 -> 11
    assert f"  note: capped in block 11: 10 tokens removed there, not the 16 r asks ({NOTE_WHY})" in one
    # 197 - 11 x 16 = 21 tokens: every block removes its 16
    assert "note:" not in model_card("deit_tiny_patch16_224", fusion="mctf")
    with pytest.raises(ConfigError, match="r = 2 is too large: a block of this model can remove at most 0"):
        model_card("deit_tiny_patch16_224", img_size=32, fusion={"r": 2})  # a user's r: checked, not noted


def test_a_checkpoint_with_its_own_classes_and_a_built_model(tmp_path: Path) -> None:
    import torch

    from vitrt.errors import CheckpointError
    from vitrt.plugins import create_model

    classes = int(torch.randint(2, 50, ()).item())
    model = create_model("deit_tiny_patch16_224", img_size=32, num_classes=classes)
    ckpt = tmp_path / "w.pth"
    torch.save(model.state_dict(), ckpt)
    card = model_card("deit_tiny_patch16_224", img_size=32, num_classes=classes, checkpoint=str(ckpt))
    assert f"  checkpoint      {ckpt} (loaded strictly: every key and shape matches)" in card.splitlines()
    params = sum(p.numel() for p in model.parameters())
    assert f"  parameters      {params:,}" in card.splitlines()
    with pytest.raises(CheckpointError, match=rf"head.weight \({classes}, 192\) vs model \(1000, 192\)"):
        model_card("deit_tiny_patch16_224", img_size=32, checkpoint=str(ckpt))  # the default 1000 classes
    with pytest.raises(
        ConfigError,
        match=r"^model_card takes a model name \(vitrt list-models\) or a model description .json; you "
        r"passed a VisionTransformer",
    ):
        model_card(model)  # type: ignore[arg-type]
