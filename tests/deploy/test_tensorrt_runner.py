"""The TensorRT runner's shape decisions, which need no TensorRT: the shape of an input at a batch, checked
against its optimisation profile or static shape (the engine tests are in tests/tensorrt/)."""

from __future__ import annotations

import pytest

from vitrt.deploy.tensorrt_runner import BatchTooLargeError, IOTensor, input_shape
from vitrt.errors import VitrtError

DYNAMIC = IOTensor(
    "images", (-1, 3, 224, 224), "float32", True, ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
)
STATIC = IOTensor("images", (1, 3, 224, 224), "float32", True)


@pytest.mark.parametrize("batch", [1, 8, 17, 32])
def test_a_batch_inside_the_profile_gets_its_shape(batch: int) -> None:
    assert input_shape(DYNAMIC, batch) == (batch, 3, 224, 224)


def test_a_batch_outside_the_profile_names_the_profile_and_the_fix() -> None:
    with pytest.raises(
        BatchTooLargeError, match=r"batch 33 is outside .* \(batch 1 to 32\).*--min 1 --max 33"
    ):
        input_shape(DYNAMIC, 33)
    with pytest.raises(VitrtError, match="batch must be >= 1"):
        input_shape(DYNAMIC, 0)


def test_a_static_engine_runs_its_own_batch_only() -> None:
    assert input_shape(STATIC, 1) == (1, 3, 224, 224)
    with pytest.raises(BatchTooLargeError, match="static batch of 1, asked 4"):
        input_shape(STATIC, 4)
