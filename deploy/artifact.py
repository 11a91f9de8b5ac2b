"""Loading what ``vitrt build`` wrote: the manifest is checked against this machine first, then the right
runner is made (``TensorRTRunner``, ``OnnxRuntimeRunner`` or ``OpenVinoRunner``).

The check (``vitrt.compiler.manifest.require_compatible``) says exactly what differs (TensorRT version, GPU
architecture, platform, plugin kernels, a missing CPU runtime) before TensorRT would fail with a
deserialisation error, the most common engine error users report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitrt.errors import VitrtError


def load_artifact(
    path: str | os.PathLike[str],
    *,
    check: bool = True,
    threads: int | None = None,
    environment: Any = None,
) -> Any:
    """The runner of an artifact folder (or of a file inside one, ``OUT/model.plan``): ``infer(feed) ->
    outputs`` on numpy arrays named as in the ONNX file.

    check: compare the manifest with this machine first (IncompatibleArtifactError naming each difference)
    and the files with their recorded SHA-256s; environment: the machine's facts (default
    ``gather_environment()``); threads: a CPU artifact's intra-op threads (default: the build's).
    A bundle is not loadable: build it (``vitrt build --bundle``).
    """
    from vitrt.compiler.manifest import read_manifest, require_compatible, verify_files

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    manifest = read_manifest(p)  # the path given: its error names it (a missing path, a bare file)
    if manifest.kind == "bundle":
        raise VitrtError(
            f"{folder} is a bundle, not an engine: build it first with `vitrt build --bundle {folder}`"
        )
    if check:
        verify_files(folder, manifest)
        require_compatible(manifest, environment, where=str(folder))
    runtime = manifest.runtime["name"]
    if runtime == "tensorrt":
        from .tensorrt_runner import TensorRTRunner

        return TensorRTRunner(folder / manifest.model["file"], plugins=manifest.needs_python_plugins)
    from vitrt.compiler.cpu_build import cpu_runner

    return cpu_runner(
        runtime,
        folder,
        threads=threads if threads is not None else manifest.runtime.get("threads"),
        inference_precision=manifest.runtime.get("inference_precision") or "f32",
    )
