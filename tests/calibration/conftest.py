"""Fixtures shared by the calibration tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Silence vitrt's warnings (a foreign model's assumed preprocessing, ...) for one test."""
    logger = logging.getLogger("vitrt")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)
