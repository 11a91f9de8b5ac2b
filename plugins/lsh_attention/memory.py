"""Measures the memory an attention core allocates: the largest intermediate tensor and the peak of
live intermediates, in bytes, by watching every op's outputs (a ``TorchDispatchMode``).

Works on CPU without a profiler: each output storage that is new is counted when the op creates it
and released when the last Python tensor on it dies. Inputs (and anything passed to ``external``) are
not counted, so the numbers are the op's own working memory.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass(frozen=True)
class AllocationStats:
    """Bytes allocated by a call: ``largest`` single storage, ``peak`` of live storages at once, and
    the op that produced the largest one."""

    largest: int
    peak: int
    largest_op: str
    allocations: int


class AllocationTracker(TorchDispatchMode):
    """Dispatch mode recording the storages that ops allocate (see the module docstring)."""

    def __init__(self, external: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._external = {t.untyped_storage().data_ptr() for t in external}
        self._live: dict[int, list[int]] = {}  # data_ptr -> [nbytes, live tensors]
        self.current = 0
        self.peak = 0
        self.largest = 0
        self.largest_op = ""
        self.allocations = 0

    def _release(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[ptr]

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or ptr in self._external:
                continue
            if ptr not in self._live:
                self._live[ptr] = [nbytes, 0]
                self.current += nbytes
                self.allocations += 1
                self.peak = max(self.peak, self.current)
                if nbytes > self.largest:
                    self.largest, self.largest_op = nbytes, str(func)
            self._live[ptr][1] += 1
            weakref.finalize(t, self._release, ptr)
        return out

    def stats(self) -> AllocationStats:
        """What was recorded so far."""
        return AllocationStats(self.largest, self.peak, self.largest_op, self.allocations)


def measure_allocations(
    fn: Callable[..., Any], *args: torch.Tensor, external: Iterable[torch.Tensor] = ()
) -> AllocationStats:
    """Run ``fn(*args)`` under no_grad and return what it allocated beyond its inputs (bytes).

    ``external``: more pre-existing tensors (module buffers) whose storages are not to be counted.
    """
    with torch.no_grad(), AllocationTracker([*args, *external]) as tracker:
        result = fn(*args)
        del result
    return tracker.stats()
