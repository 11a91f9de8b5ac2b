"""Where a benchmark writes its JSON results: ``--out``, else ``$OUT/<name>`` where the device tool sets OUT
(its files come back from the GPU machine), else nowhere."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_results(out: str | None, name: str, payload: dict[str, Any]) -> Path | None:
    """Write ``payload`` as indented JSON to ``out`` or ``$OUT/name``; returns the path written, or None."""
    target = out or (str(Path(os.environ["OUT"]) / name) if os.environ.get("OUT") else None)
    if not target:
        return None
    path = Path(target)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path
