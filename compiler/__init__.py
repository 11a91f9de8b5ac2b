"""vitrt compiler: export, graph passes, engine builds and the ``vitrt`` command line.

Kept import-light on purpose: heavy or optional dependencies (onnx, tensorrt, cuda) are imported inside
the functions that need them. Errors, atomic file writing and logging live below every stage
(``vitrt.errors``, ``vitrt.fileio``, ``vitrt.logs``).
"""

if __name__.partition(".")[0] != "vitrt":  # the repository root on sys.path exposes the folder too
    raise ImportError(f"import vitrt.{__name__}, not {__name__}: vitrt's stages have one import name")
