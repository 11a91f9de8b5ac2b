"""Progress bars for long work (calibration data, sensitivity sweeps, ``vitrt tune``'s trials): tqdm on
stderr when it is a terminal and tqdm is installed, else one plain stderr line per 10 % step (a log or a
CI job gets lines, not hundreds of redrawn frames); nothing when disabled."""

from __future__ import annotations

import importlib
import sys
from typing import Any


class _StderrProgress:
    """Progress as one stderr line per 10 % step: when stderr is not a terminal, or tqdm is not installed."""

    def __init__(self, total: int, desc: str, unit: str = "img") -> None:
        self.total, self.desc, self.unit, self.done, self._step = total, desc, unit, 0, -1

    def update(self, n: int) -> None:
        self.done += n
        step = 10 * self.done // max(self.total, 1)
        if step != self._step:
            self._step = step
            what = "samples" if self.unit == "img" else f"{self.unit}s"
            print(f"{self.desc}: {self.done}/{self.total} {what}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class _NullProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "img") -> Any:
    """An object with update(n) and close(): tqdm when stderr is a terminal and tqdm is importable,
    else a plain stderr printer (one line per 10 %).

    tqdm is optional (typed Any: it ships no type stubs); ``enabled=False`` shows nothing.
    ``unit``: what one step counts, for the display (images by default).
    """
    if not enabled:
        return _NullProgress()
    isatty = getattr(sys.stderr, "isatty", None)
    if not (callable(isatty) and isatty()):
        return _StderrProgress(total, desc, unit)
    try:
        tqdm = importlib.import_module("tqdm")
    except ImportError:
        return _StderrProgress(total, desc, unit)
    return tqdm.tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
