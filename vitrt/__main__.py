"""``python -m vitrt``: the ``vitrt`` command, for environments without the console script."""

import sys

from vitrt.compiler.cli import main

sys.exit(main())
