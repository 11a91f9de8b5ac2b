"""Shared test settings: deterministic, thread-limited torch so the CPU suite is fast and stable."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores on CI, shared by two pytest-xdist workers: more threads than cores only adds contention.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
