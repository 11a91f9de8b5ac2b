"""Fixtures of the TensorRT tests: the vitrt target of this machine's GPU, or a skip with the reason."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def target() -> str:
    """The vitrt target of this machine's GPU (skips with the reason where there is none)."""
    import torch

    from vitrt.compiler.environment import gpu_facts
    from vitrt.compiler.targets import TARGETS
    from vitrt.plugins.cuda_tensorrt import tensorrt_missing_reason

    reason = tensorrt_missing_reason()
    if reason is None and not torch.cuda.is_available():
        reason = "torch.cuda.is_available() is False: TensorRT needs a CUDA GPU"
    if reason is None:
        _, sm, _ = gpu_facts()
        names = [name for name, t in TARGETS.items() if t.sm == sm]
        if not names:
            reason = f"no vitrt target has this GPU's architecture ({sm}); `vitrt targets` lists them"
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return names[0]
