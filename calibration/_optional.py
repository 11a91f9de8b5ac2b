"""Lazy imports of optional packages, with an error that names the package to install."""

from __future__ import annotations

import importlib
from typing import Any

from .errors import MissingDependencyError


def import_optional(module: str, *, pip_name: str, purpose: str) -> Any:
    """Import ``module`` on first use.

    Returns the module typed as Any: the optional packages (Pillow, scikit-learn, scikit-image,
    tqdm, tensorrt, cuda-python) are absent from the type-checking environment or ship no stubs.
    Raises MissingDependencyError naming ``pip install <pip_name>`` when the import fails.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package {pip_name!r}, which cannot be imported here "
            f"({type(exc).__name__}: {exc}). Fix: pip install {pip_name}"
        ) from exc


def has_module(module: str) -> bool:
    """True when ``module`` can be imported (imports it)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
