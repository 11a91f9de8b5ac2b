"""The one shape in which telemetry says what it could not read, and why.

Every reader returns either its value or a ``NotRecorded``; nothing in this package raises because a
tool, a file or a GPU is missing, so a profiling run never fails for want of a sensor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NotRecorded:
    """``what`` was not recorded because ``why`` (a sentence a user can act on)."""

    what: str
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "why": self.why}
