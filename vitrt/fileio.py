"""Writing artifacts so that a failure never leaves a half-written file (``atomic_output``) or folder
(``atomic_directory``) behind, ONNX files in and out (``save_onnx``, ``load_onnx``), and where vitrt keeps
what it builds (``cache_dir``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vitrt.errors import VitrtError

TWO_GB = 2**31
"""protobuf's limit on one serialised message: larger ONNX models keep their weights in a .data file."""

CACHE_ENV = "VITRT_CACHE_DIR"
_PACKAGE = Path(__file__).resolve().parent


def source_checkout() -> Path | None:
    """The repository root when vitrt runs from a source checkout (plain or ``pip install -e``), else
    None (an installed wheel). A checkout's ``vitrt/<stage>`` are symbolic links beside a
    ``pyproject.toml``; a wheel holds real folders."""
    root = _PACKAGE.parent
    return root if (_PACKAGE / "plugins").is_symlink() and (root / "pyproject.toml").is_file() else None


def cache_dir() -> Path:
    """The folder vitrt's builds and caches go under (kernel fatbins in ``plugins/``, NVRTC cubins in
    ``plugins/nvrtc/``, emulator libraries in ``plugins/emulated/``); created by whoever writes there.

    1. ``$VITRT_CACHE_DIR`` when set;
    2. ``<repository>/build`` in a source checkout (git-ignored), where ``vitrt plugins build`` has
       always put the fatbins;
    3. otherwise (an installed wheel, whose site-packages may be read-only and is no place for build
       outputs) the user's cache: ``$XDG_CACHE_HOME/vitrt``, else ``~/.cache/vitrt``.
    """
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    checkout = source_checkout()
    if checkout is not None:
        return checkout / "build"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vitrt"


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise VitrtError unless ``path``'s folder exists and is writable; return ``path``.

    Called before long work (tracing, calibration) so that a bad output path fails in a second,
    not after minutes.
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise VitrtError(f"cannot write {dest}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise VitrtError(f"cannot write {dest}: folder {folder} is not writable")
    if dest.is_dir():
        raise VitrtError(f"cannot write {dest}: it is a folder; give a file name")
    return dest


@contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination folder so that the final rename is atomic (same
    file system); it is fsynced first, so a crash never leaves a truncated file under the real name.
    The result gets the mode of the file it replaces, else rw-r--r-- (mkstemp would leave 0600).
    Raises VitrtError naming the problem when the folder or the file cannot be written; on any
    failure the destination is left as it was and the temporary file is removed.
    """
    dest = check_writable(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    except OSError as err:
        raise VitrtError(f"cannot write {dest}: {err.strerror} (check the folder's permissions)") from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, dest.stat().st_mode & 0o777 if dest.exists() else 0o644)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as err:
        raise VitrtError(f"cannot write {dest}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(
    path: str | os.PathLike[str], *, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block succeeds it becomes ``path``.

    The artifact folders vitrt writes (an engine and its manifest, a bundle) are several files that are
    only meaningful together, so they are assembled in a hidden sibling folder (same file system) and
    renamed into place at the end: a failed or interrupted build leaves no folder, or the previous one
    unchanged. An existing folder at ``path`` is replaced only when it is empty or ``replaceable(path)``
    says it is an earlier artifact of the same kind (never a user's unrelated folder); it is moved aside
    first and deleted once the new one is in place.
    Raises VitrtError naming the problem when ``path`` cannot be written or may not be replaced.
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    if not folder.is_dir():
        raise VitrtError(f"cannot write {dest}: folder {folder} does not exist (create it first)")
    if dest.exists() and not dest.is_dir():
        raise VitrtError(f"cannot write the folder {dest}: a file of that name exists; choose another name")
    if dest.is_dir() and any(dest.iterdir()) and not (replaceable and replaceable(dest)):
        raise VitrtError(
            f"{dest} exists and is not a vitrt artifact of this kind; choose another output folder or "
            "remove it"
        )
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder))
    except OSError as err:
        raise VitrtError(f"cannot write {dest}: {err.strerror} (check the folder's permissions)") from err
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=folder))
            os.replace(dest, old / dest.name)
            try:
                os.replace(tmp, dest)
            except OSError:
                os.replace(old / dest.name, dest)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except OSError as err:
        raise VitrtError(f"cannot write {dest}: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks); VitrtError naming the file if unreadable."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise VitrtError(f"cannot read {path}: {err.strerror}") from err
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``atomic_output``; returns the path."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_onnx(
    model: Any, path: str | os.PathLike[str], *, external: bool | None = None, data_name: str = ""
) -> Path:
    """Save the ONNX ``model`` at ``path``; its weights go to one external file ``data_name`` (default
    ``<path name>.data``, resolved beside ``path``) when ``external`` is true, by default when the model
    is 2 GB or more. Pass ``data_name`` when ``path`` is a temporary file that will be renamed."""
    import onnx

    if external is None:
        external = model.ByteSize() >= TWO_GB
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name or Path(path).name + ".data",
        )
    else:
        onnx.save_model(model, str(path))
    return Path(path)


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """``onnx.load`` with a clear VitrtError for a missing or non-ONNX file."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise VitrtError(f"{p} does not exist or is not a file")
    try:
        # format="protobuf": onnx would otherwise guess JSON/text formats from the file extension.
        proto = onnx.load(str(p), format="protobuf")
    except (DecodeError, ValueError, OSError) as err:
        raise VitrtError(
            f"{p} is not an ONNX model ({type(err).__name__}); export one with `vitrt export`"
        ) from err
    if not proto.graph.node:
        raise VitrtError(f"{p} is not an ONNX model (no graph nodes); export one with `vitrt export`")
    return proto
