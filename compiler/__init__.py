"""vitrt compiler: export, graph passes, engine builds and the ``vitrt`` command line.

Kept import-light on purpose: ``models`` and ``plugins`` import :mod:`compiler.errors`, and heavy or
optional dependencies (onnx, tensorrt, cuda) are imported inside the functions that need them.
"""
