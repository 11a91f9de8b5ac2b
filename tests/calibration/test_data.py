"""Calibration data sources: folders, arrays, offline image sets, synthetic; preprocessing; errors."""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitrt.calibration._optional import has_module, import_optional
from vitrt.calibration.data import open_source
from vitrt.calibration.errors import ChannelMismatchError, DataSourceError, MissingDependencyError
from vitrt.calibration.preprocess import preprocess_image, resize_size
from vitrt.errors import ConfigError
from vitrt.models.config import PreprocessConfig
from vitrt.progress import _NullProgress, _StderrProgress, progress_bar

CFG = PreprocessConfig(input_size=(3, 32, 32), crop_pct=0.875, interpolation="bicubic")
MEAN = torch.tensor(CFG.mean).view(3, 1, 1)
STD = torch.tensor(CFG.std).view(3, 1, 1)

needs_pil = pytest.mark.skipif(not has_module("PIL"), reason="Pillow is not installed (pip install Pillow)")
needs_sklearn = pytest.mark.skipif(
    not has_module("sklearn"), reason="scikit-learn is not installed (pip install scikit-learn)"
)


def _save(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _constant(rgb: tuple[int, int, int], h: int = 40, w: int = 60) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def _expected_constant(rgb: tuple[int, int, int]) -> torch.Tensor:
    return (torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255 - MEAN) / STD


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Six constant-colour images (png and jpg, nested), plus files the loader must skip."""
    root = tmp_path / "images"
    colours = [(10 * i + 5, 200 - 20 * i, 40 * i) for i in range(6)]
    for i, rgb in enumerate(colours):
        sub = root / ("a" if i % 2 else "b/c")
        _save(sub / f"img{i}.{'png' if i < 4 else 'jpg'}", _constant(rgb, 40 + i, 60 - i))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"macOS resource fork")
    return root


def _order(data_iter: list[torch.Tensor]) -> list[int]:
    """Which constant-colour image each sample is, from its mean red value."""
    means = [float(b[0].mean() * STD[0, 0, 0] + MEAN[0, 0, 0]) * 255 for batch in data_iter for b in batch]
    return [round((m - 5) / 10) for m in means]


@needs_pil
def test_image_folder_is_recursive_batched_and_preprocessed(folder: Path) -> None:
    data = open_source(folder, CFG, num_samples=5, batch_size=2, seed=0, progress=False)
    batches = list(data)
    assert [tuple(b.shape) for b in batches] == [(2, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 32)]
    assert all(b.dtype == torch.float32 for b in batches)
    assert data.num_samples == 5 and data.num_batches() == 3 and data.num_batches(drop_last=True) == 2
    assert data.describe()["available"] == 6
    # every sample is one of the constant colours, normalised by mean/std; tolerance 4 grey levels
    # for jpg's lossy colour conversion (png is exact to 1e-5)
    order = _order(batches)
    for sample, idx in zip([s for b in batches for s in b], order, strict=True):
        expected = _expected_constant((10 * idx + 5, 200 - 20 * idx, 40 * idx))
        torch.testing.assert_close(sample, expected.expand(3, 32, 32), atol=4.0 / 255 / 0.224, rtol=0)


@needs_pil
def test_sample_order_is_seeded_and_repeatable(folder: Path) -> None:
    first = open_source(folder, CFG, num_samples=6, batch_size=4, seed=1, progress=False)
    again = open_source(folder, CFG, num_samples=6, batch_size=3, seed=1, progress=False)
    other = open_source(folder, CFG, num_samples=6, batch_size=4, seed=2, progress=False)
    order = _order(list(first))
    assert order == _order(list(first))  # every iteration
    assert order == _order(list(again))  # batch size does not change the order
    assert sorted(order) == list(range(6))
    assert order != _order(list(other))
    np.testing.assert_array_equal(first.indices, np.random.default_rng(1).permutation(6))


@needs_pil
def test_preprocessing_matches_pil_resize_and_center_crop() -> None:
    # timm's eval transform on a PIL image: Resize(floor(224 / 0.875) = 256) bicubic, CenterCrop(224)
    cfg = PreprocessConfig(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic")
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:300, 0:451]
    img = np.stack([128 + 100 * np.sin(xx / 17 + c) * np.cos(yy / 23 - c) for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    assert resize_size(300, 451, cfg) == (256, 384)
    out = preprocess_image(torch.from_numpy(img).permute(2, 0, 1).float() / 255, cfg)
    ref = np.asarray(Image.fromarray(img).resize((384, 256), Image.BICUBIC), dtype=np.float32) / 255
    top, left = round((256 - 224) / 2), round((384 - 224) / 2)
    ref_t = (torch.from_numpy(ref[top : top + 224, left : left + 224]).permute(2, 0, 1) - MEAN) / STD
    # PIL rounds to 8 bits after resampling, torch does not: within 1.5 grey levels, 0.5 on average
    diff = (out - ref_t) * STD * 255
    assert float(diff.abs().max()) < 1.5 and float(diff.abs().mean()) < 0.5


def test_resize_rules() -> None:
    assert resize_size(300, 451, CFG) == (36, 54)  # floor(32 / 0.875) = 36 on the shorter side
    assert resize_size(451, 300, CFG) == (54, 36)
    wide = PreprocessConfig(input_size=(3, 32, 64), crop_pct=1.0)
    assert resize_size(100, 100, wide) == (32, 64)  # non-square inputs: both sides, as timm


def test_npy_and_npz_sources(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ready = rng.standard_normal((7, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "ready.npy", ready)
    data = open_source(tmp_path / "ready.npy", CFG, num_samples=7, batch_size=4, seed=3, progress=False)
    got = torch.cat(list(data)).numpy()
    np.testing.assert_array_equal(got, ready[data.indices])  # model-ready tensors pass unchanged

    images = rng.integers(0, 256, (5, 20, 30, 3), dtype=np.uint8)  # NHWC uint8 images
    np.savez(tmp_path / "two.npz", images=images, labels=np.arange(5))
    with pytest.raises(DataSourceError, match="npz_key"):
        open_source(tmp_path / "two.npz", CFG, 5, progress=False)
    data = open_source(tmp_path / "two.npz", CFG, 5, 5, npz_key="images", progress=False)
    batch = next(iter(data))
    i = int(data.indices[0])
    expected = preprocess_image(torch.from_numpy(images[i]).permute(2, 0, 1).float() / 255, CFG)
    torch.testing.assert_close(batch[0], expected, atol=1e-6, rtol=0)

    np.save(tmp_path / "wrong.npy", rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    with pytest.raises(DataSourceError, match=r"model-ready tensors \(N, 3, 32, 32\)"):
        open_source(tmp_path / "wrong.npy", CFG, 4, progress=False)
    np.save(tmp_path / "ints.npy", np.zeros((4, 8, 8), dtype=np.int32))
    with pytest.raises(DataSourceError, match="uint8"):
        open_source(tmp_path / "ints.npy", CFG, 4, progress=False)


def test_synthetic_is_seeded_and_independent_of_batching() -> None:
    a = torch.cat(list(open_source("synthetic", CFG, 7, 3, seed=5, progress=False)))
    b = torch.cat(list(open_source("synthetic", CFG, 7, 7, seed=5, progress=False)))
    c = torch.cat(list(open_source("synthetic", CFG, 7, 7, seed=6, progress=False)))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.equal(a, c)
    assert a.shape == (7, 3, 32, 32)
    pixels = a * STD + MEAN  # back on [0, 1]
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6


@needs_sklearn
def test_sklearn_digits_need_an_explicit_channel_conversion() -> None:
    with pytest.raises(ChannelMismatchError, match="convert_channels=True"):
        open_source("sklearn-digits", CFG, 4, progress=False)
    data = open_source("sklearn-digits", CFG, 10, 4, convert_channels=True, progress=False)
    batch = next(iter(data))
    assert batch.shape == (4, 3, 32, 32)
    pixels = batch * STD + MEAN
    torch.testing.assert_close(pixels[:, 0], pixels[:, 1], atol=1e-6, rtol=0)  # replicated gray
    gray = PreprocessConfig(input_size=(1, 32, 32), mean=(0.5,), std=(0.5,), crop_pct=1.0)
    assert next(iter(open_source("sklearn-digits", gray, 4, progress=False))).shape == (4, 1, 32, 32)


@needs_sklearn
@needs_pil
def test_sklearn_sample_images_warn_when_fewer_than_asked(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vitrt"):
        data = open_source("sklearn-images", CFG, 8, 4, progress=False)
    assert data.num_samples == 2
    assert "fewer than the 8 asked for" in caplog.text
    assert next(iter(data)).shape == (2, 3, 32, 32)


@pytest.mark.skipif(
    not has_module("skimage"), reason="scikit-image is not installed (pip install scikit-image)"
)
def test_skimage_natural_images() -> None:
    data = open_source("skimage", CFG, 3, 3, seed=0, progress=False)
    assert next(iter(data)).shape == (3, 3, 32, 32)
    assert data.describe()["available"] == 8  # the RGB images; gray ones need convert_channels
    assert open_source("skimage", CFG, 100, convert_channels=True, progress=False).num_samples == 21


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images")
    with pytest.raises(DataSourceError, match=r"no jpg/jpeg/png images under .*empty"):
        open_source(empty, CFG, 4)
    with pytest.raises(DataSourceError, match=r"no such file or folder.*synthetic"):
        open_source(tmp_path / "missing", CFG, 4)
    with pytest.raises(DataSourceError, match="not a data source"):
        open_source(empty / "sub" / "readme.txt", CFG, 4)
    with pytest.raises(ConfigError, match="num_samples"):
        open_source("synthetic", CFG, 0)
    with pytest.raises(ConfigError, match="batch_size"):
        open_source("synthetic", CFG, 4, batch_size=0)
    with pytest.raises(ConfigError, match="interpolation"):
        open_source("synthetic", PreprocessConfig(interpolation="lanczos"), 4)


@needs_pil
def test_unreadable_image_is_named(tmp_path: Path) -> None:
    _save(tmp_path / "good.png", _constant((1, 2, 3)))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataSourceError, match=r"broken\.jpg: cannot decode the image"):
        for seed in range(4):  # whichever comes first, the broken one is reached
            list(open_source(tmp_path, CFG, 2, 1, seed=seed, progress=False))


@needs_pil
def test_wrong_channel_count_is_an_error_unless_converted(tmp_path: Path) -> None:
    gray = _save(tmp_path / "gray" / "g.png", np.full((40, 40), 128, dtype=np.uint8))
    rgba = _save(tmp_path / "rgba" / "a.png", np.full((40, 40, 4), 200, dtype=np.uint8))
    for path, what in ((gray, "grayscale image"), (rgba, "RGBA image")):
        with pytest.raises(ChannelMismatchError, match=f"{what}.*convert_channels=True"):
            open_source(path.parent, CFG, 1)
        batch = next(iter(open_source(path.parent, CFG, 1, convert_channels=True, progress=False)))
        value = 128 if path == gray else 200
        torch.testing.assert_close(
            batch[0], _expected_constant((value,) * 3).expand(3, 32, 32), atol=1e-5, rtol=0
        )


@needs_pil
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    _save(locked / "x.png", _constant((1, 2, 3)))
    locked.chmod(0)
    try:
        with pytest.raises(DataSourceError, match="cannot read the data folder"):
            open_source(locked, CFG, 1)
    finally:
        locked.chmod(0o755)


def test_progress_fallback_and_missing_packages(capsys: pytest.CaptureFixture[str]) -> None:
    bar = _StderrProgress(total=20, desc="calibration data (x)")
    for _ in range(10):
        bar.update(2)
    lines = capsys.readouterr().err.splitlines()
    assert (
        lines[0] == "calibration data (x): 2/20 samples"
        and lines[-1] == "calibration data (x): 20/20 samples"
    )
    assert len(lines) == 10
    with pytest.raises(MissingDependencyError, match="pip install some-wheel"):
        import_optional("vitrt_no_such_module", pip_name="some-wheel", purpose="A test")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_redraw_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # a log or a CI job (stderr not a terminal) gets one plain line per 10 %, not tqdm's \r frames
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(30, "sensitivity (one layer at a time)", unit="layer")
    assert isinstance(bar, _StderrProgress)
    for _ in range(30):
        bar.update(1)
    bar.close()
    lines = log.getvalue().split("\n")
    assert "\r" not in log.getvalue() and len(lines) == 12 and lines[-1] == ""  # 11 lines: 0 % to 100 %
    assert lines[0] == "sensitivity (one layer at a time): 1/30 layers"
    assert lines[-2] == "sensitivity (one layer at a time): 30/30 layers"
    assert isinstance(progress_bar(30, "off", enabled=False), _NullProgress)
    monkeypatch.setattr(sys, "stderr", _Terminal())
    if has_module("tqdm"):
        import tqdm

        bar = progress_bar(30, "on a terminal")
        assert isinstance(bar, tqdm.tqdm)
        bar.close()


def test_following_samples_are_disjoint_held_out_data() -> None:
    cfg = PreprocessConfig(input_size=(3, 16, 16))
    data = open_source(
        "sklearn-digits", cfg, 100, batch_size=16, seed=3, convert_channels=True, progress=False
    )
    held = data.following(50)
    assert held is not None and held.num_samples == 50 and held.seed == 3
    assert not set(data.indices.tolist()) & set(held.indices.tolist())
    assert data.following(5000).num_samples == 1797 - 100  # type: ignore[union-attr]  # what is left
    everything = open_source("sklearn-digits", cfg, 1797, convert_channels=True, progress=False)
    assert everything.following(1) is None
    synthetic = open_source("synthetic", cfg, 8, progress=False)
    more = synthetic.following(4)
    assert more is not None and more.indices.tolist() == [8, 9, 10, 11]
    assert not torch.equal(more.sample(8), synthetic.sample(0))
