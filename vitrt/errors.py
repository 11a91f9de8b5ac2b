"""The exception types vitrt raises for problems a user can fix (bad input, missing tools)."""

from __future__ import annotations


class VitrtError(Exception):
    """A problem with the user's input or environment; the message names the problem and the fix.

    The CLI prints the message without a traceback and exits with status 2.
    """


class ConfigError(VitrtError, ValueError):
    """An invalid model, op or compiler configuration (unknown name, value out of range)."""


class CheckpointError(VitrtError):
    """A checkpoint that cannot be read or does not match the model."""
