"""Applies a token-fusion configuration to a model's blocks (issue 3 fills this in)."""

from __future__ import annotations

from typing import Any

from torch import nn

from compiler.errors import ConfigError


def apply_fusion(model: nn.Module, fusion: Any) -> None:
    """Replace the model's blocks by token-fusion blocks as ``fusion`` says."""
    raise ConfigError(f"token fusion {fusion!r} is not available yet")
