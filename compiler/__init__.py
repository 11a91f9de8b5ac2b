"""vitrt compiler: export, graph passes, engine builds and the ``vitrt`` command line.

Kept import-light on purpose: heavy or optional dependencies (onnx, tensorrt, cuda) are imported inside
the functions that need them. Errors and atomic file writing live below every stage (``vitrt.errors``,
``vitrt.fileio``).
"""
