"""vitrt's logging: one logger hierarchy under ``vitrt``, configured once by the command line.

Every module logs through ``logging.getLogger(__name__)``; since every stage is imported as
``vitrt.<stage>``, that name is ``vitrt.compiler.export``, ``vitrt.calibration.data`` and so on, so
``logging.getLogger("vitrt")`` controls them all (tests silence or capture it there). Library code never
configures handlers: a program that uses the Python API decides where records go, and the ``vitrt``
command calls ``configure`` with its ``-v`` count.
"""

from __future__ import annotations

import logging

ROOT = "vitrt"
"""The logger every vitrt logger descends from."""

LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)
"""Level for ``-v`` counts 0, 1, 2 and more."""

FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure(verbosity: int = 0) -> None:
    """Log to stderr at WARNING (``verbosity`` 0), INFO (1) or DEBUG (2 or more), as ``vitrt -v``.

    Sets up the root logger (``logging.basicConfig``), so other libraries' warnings print the same way;
    a no-op where the program has configured logging already.
    """
    logging.basicConfig(level=LEVELS[min(max(verbosity, 0), len(LEVELS) - 1)], format=FORMAT)
