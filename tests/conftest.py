"""Shared test settings: deterministic, thread-limited torch so the CPU suite is fast and stable."""

from __future__ import annotations

import pytest
import torch

# Two cores on CI: more threads than cores only adds contention.
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
