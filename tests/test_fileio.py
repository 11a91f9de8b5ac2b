"""Where vitrt keeps its builds (``vitrt.fileio.cache_dir``); the installed-wheel case is in
``tests/test_packaging.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitrt.fileio import cache_dir, source_checkout
from vitrt.plugins.cuda_build import default_build_dir, fatbin_path

ROOT = Path(__file__).resolve().parents[1]


def test_a_source_checkout_builds_into_its_build_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VITRT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent")  # a checkout ignores the user cache
    assert source_checkout() == ROOT
    assert cache_dir() == ROOT / "build"
    assert fatbin_path("token_fusion") == ROOT / "build" / "plugins" / "token_fusion.fatbin"


def test_vitrt_cache_dir_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VITRT_CACHE_DIR", str(tmp_path))
    assert default_build_dir() == tmp_path / "plugins"
