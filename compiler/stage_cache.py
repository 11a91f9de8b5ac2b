"""The stage cache of ``vitrt compile``: each stage's output in ``OUTDIR/stages/<stage>-<key>/``.

``key`` is the first 16 hex digits of the SHA-256 of the stage's inputs as canonical JSON: the SHA-256s of the
files it reads, its options and vitrt's version (``stage_key``). A stage whose folder exists with its
``stage.json`` is reused as it is; otherwise it runs into a temporary sibling folder that is renamed into
place only when it succeeds (``vitrt.fileio.atomic_directory``), so a folder with a ``stage.json`` is always a
finished stage and a failed stage leaves nothing behind (the stages before it keep their folders).

Changing one option changes the key of the first stage that reads it and, through the SHA-256 of that stage's
output, the keys of the stages after it: only those run again. Old folders stay (switching an option back
reuses them); delete ``OUTDIR/stages`` to start afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitrt.errors import VitrtError
from vitrt.fileio import atomic_directory, atomic_write_bytes

STAGE_FILE = "stage.json"
KEY_DIGITS = 16  # 64 bits of SHA-256: collisions between one OUTDIR's stage folders are not a concern


def vitrt_version() -> str:
    """The installed vitrt's version (part of every stage key: a new vitrt redoes every stage)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitrt")
    except PackageNotFoundError:
        return "0+unknown"


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    """The cache key of ``stage`` for ``inputs`` (JSON-able: file SHA-256s, options) and vitrt's version."""
    text = json.dumps(
        {"stage": stage, "vitrt": vitrt_version(), "inputs": inputs}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_DIGITS]


@dataclass(frozen=True)
class StageRun:
    """One stage of one ``vitrt compile`` run: name, folder, key, whether it was reused (``cached``), the
    seconds it took in this run (a cached stage: the time to find it), the seconds it took when it ran
    (``built_seconds``), and the result it recorded (JSON-able)."""

    name: str
    folder: Path
    key: str
    cached: bool
    seconds: float
    built_seconds: float
    result: dict[str, Any]


class StageCache:
    """The ``stages/`` folder of one compile output folder (module docstring)."""

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.root = Path(outdir) / "stages"

    def folder(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    def lookup(self, stage: str, key: str) -> dict[str, Any] | None:
        """The recorded ``stage.json`` of a finished stage, or None (absent, or unreadable: run it again)."""
        path = self.folder(stage, key) / STAGE_FILE
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def run(
        self,
        stage: str,
        inputs: dict[str, Any],
        work: Callable[[Path], dict[str, Any]],
    ) -> StageRun:
        """Reuse the stage for ``inputs`` or run ``work(folder)`` into a fresh folder.

        ``work`` writes its files into the folder it is given (a temporary one, renamed to the stage's folder
        when ``work`` returns) and returns its result (JSON-able), which is recorded in ``stage.json`` and
        given back unchanged on a cached run. Paths in the result should be relative to the folder.
        """
        start = time.perf_counter()
        key = stage_key(stage, inputs)
        folder = self.folder(stage, key)
        recorded = self.lookup(stage, key)
        if recorded is not None:
            return StageRun(
                stage,
                folder,
                key,
                True,
                time.perf_counter() - start,
                float(recorded.get("seconds", 0.0)),
                dict(recorded.get("result", {})),
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
        with atomic_directory(folder, replaceable=lambda p: True) as tmp:
            result = work(tmp)
            seconds = time.perf_counter() - start
            record = {
                "stage": stage,
                "key": key,
                "vitrt": vitrt_version(),
                "inputs": inputs,
                "result": result,
                "seconds": round(seconds, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            try:
                text = json.dumps(record, indent=1, sort_keys=True)
            except TypeError as err:  # a vitrt bug: a stage returned something JSON cannot hold
                raise VitrtError(f"stage {stage} recorded a result JSON cannot hold: {err}") from err
            atomic_write_bytes(tmp / STAGE_FILE, (text + "\n").encode())
        return StageRun(stage, folder, key, False, seconds, seconds, result)
