"""Importing official reference implementations (checked out by the developer) for equivalence tests.

The official T2T-ViT and MCTF code import timm, and timm imports torchvision incidentally; the
registry's torchvision is a CUDA build that cannot import against CPU torch. These tests only run
model code, so an inert torchvision stand-in is enough for timm to import. Nothing here is used
outside tests, and no official code is vendored: the developer points an environment variable at
their own checkout.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from pathlib import Path

import pytest


class _InertMeta(type):
    def __getattr__(cls, name: str) -> type:
        # e.g. InterpolationMode.BICUBIC: timm builds lookup tables keyed by these at import time,
        # so each name needs its own distinct (and stable) placeholder.
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _InertMeta(name, (cls,), {})
        setattr(cls, name, sub)
        return sub


class _Inert(metaclass=_InertMeta):
    """Placeholder for any torchvision attribute timm touches at import time."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("torchvision is stubbed in vitrt's equivalence tests")


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []  # a package, so submodules resolve through the finder too

        def attribute(name: str) -> type:
            if name.startswith("__"):  # __file__, __wrapped__...: tools probe these, let them miss
                raise AttributeError(name)
            return getattr(_Inert, name)

        module.__getattr__ = attribute  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _StubFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)
        return None


def official_checkout(env_var: str, marker: str) -> Path:
    """Path of the developer's checkout named by ``env_var`` (skips the test when unset).

    ``marker`` is a file that must exist inside it. Also makes ``timm`` importable: set
    VITRT_TIMM_PATH to a folder holding timm (``pip install --no-deps --target DIR timm``) if it is
    not installed in the environment.
    """
    root = os.environ.get(env_var)
    if not root:
        pytest.skip(f"set {env_var} to a checkout of the official code to compare against it")
    path = Path(root)
    if not (path / marker).is_file():
        pytest.fail(f"{env_var}={root} has no {marker}: not a checkout of the expected repository")
    extra = os.environ.get("VITRT_TIMM_PATH")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _StubFinder())
    pytest.importorskip("timm", reason="timm is needed to import the official code (see VITRT_TIMM_PATH)")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path
