"""Where vitrt keeps its builds (``vitrt.fileio.cache_dir``; the installed-wheel case is in
``tests/test_packaging.py``), and artifact folders that appear whole or not at all (``atomic_directory``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_directory, cache_dir, file_sha256, source_checkout
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


def _is_old_artifact(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def test_an_artifact_folder_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "art"
    with atomic_directory(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".art.") and not out.exists()
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"] and (out / "manifest.json").is_file()
    with (
        pytest.raises(RuntimeError, match="build failed"),
        atomic_directory(out, replaceable=_is_old_artifact) as tmp,
    ):
        (tmp / "model.plan").write_bytes(b"half an engine")
        raise RuntimeError("build failed")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # the earlier artifact, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temporary folder left behind
    with atomic_directory(out, replaceable=_is_old_artifact) as tmp:
        (tmp / "model.plan").write_bytes(b"engine")
    assert sorted(p.name for p in out.iterdir()) == ["model.plan"]  # replaced as a whole
    assert file_sha256(out / "model.plan") == hashlib.sha256(b"engine").hexdigest()


def test_an_unrelated_folder_or_file_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"cat")
    with (
        pytest.raises(VitrtError, match="exists and is not a vitrt artifact"),
        atomic_directory(tmp_path / "photos"),
    ):
        pass
    (tmp_path / "notes").write_text("text")
    with pytest.raises(VitrtError, match="a file of that name exists"), atomic_directory(tmp_path / "notes"):
        pass
    with (
        pytest.raises(VitrtError, match=r"folder .*missing does not exist"),
        atomic_directory(tmp_path / "missing" / "a"),
    ):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "photos"]
