"""vitrt: an edge deployment compiler for efficient vision transformers.

The stage packages live at the repository's top level (``compiler/ plugins/ calibration/ deploy/
models/``) and are importable only as ``vitrt.<stage>``: ``vitrt/<stage>`` is a symbolic link to each.
"""

__version__ = "0.1.0"
