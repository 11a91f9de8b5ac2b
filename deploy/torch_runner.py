"""vitrt's PyTorch models as runners, on the CPU or a CUDA GPU, float32 or float16, optionally replayed
as a CUDA graph: the fast path where TensorRT is not installed (a Jetson with PyTorch alone, a
workstation). On CUDA tensors the models' plugin ops dispatch to vitrt's kernels
(``torch.ops.vitrt.token_fusion``, ``scatterbrain_attention``) and dense attention runs as
``scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vitrt.errors import VitrtError

from .cuda_timing import capture_graph
from .runners import Feed, TensorSpec


def resolve_device(device: str) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:1") as a torch.device; VitrtError naming the fix where CUDA is
    asked for and torch has none."""
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise VitrtError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VitrtError(
            f"device {device!r} asked for, but torch.cuda.is_available() is False here (no NVIDIA GPU, or "
            f"a CPU build of torch {torch.__version__}). Fix: --device cpu, or install a CUDA build of torch"
        )
    if dev.type not in ("cpu", "cuda"):
        raise VitrtError(f"device {device!r}: vitrt runs PyTorch models on cpu or cuda")
    return dev


class TorchModelRunner:
    """A PyTorch model (images [B, 3, S, S] -> logits [B, classes]) in eval mode without autograd.

    device: "cpu" or "cuda[:N]"; half: float16 weights and inputs (else float32); cuda_graph: capture
    the model once per input shape and replay it (CUDA only; the first call per shape warms up and
    captures). ``forward`` keeps everything on the device and never synchronises; ``infer`` is the
    numpy face of the runner interface (``vitrt.deploy.runners.Runner``), and ``prepare`` (numpy -> device
    tensor), ``enqueue`` (``forward``, asynchronous on CUDA), ``synchronize`` and ``fetch`` its timing
    split. input_size: (channels, height, width) of ``images``, for ``input_specs`` (default: the model's
    ``preprocess.input_size``, else (3, 224, 224)).
    """

    runtime = "torch"

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str = "cpu",
        half: bool = False,
        cuda_graph: bool = False,
        name: str | None = None,
        input_size: tuple[int, int, int] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        if cuda_graph and self.device.type != "cuda":
            raise VitrtError(
                "CUDA graphs need a GPU: use --device cuda with --cuda-graph, or drop --cuda-graph"
            )
        self.dtype = torch.float16 if half else torch.float32
        self.cuda_graph = cuda_graph
        self.model = model.eval().to(self.device, self.dtype)
        self._graphs: dict[tuple[int, ...], tuple[Any, Tensor, Tensor]] = {}
        if input_size is None:  # the model's own (vitrt's models record it), else ImageNet's 224
            pre = getattr(model, "preprocess", None)
            input_size = tuple(pre.input_size) if pre is not None else (3, 224, 224)
        self.input_size = tuple(int(v) for v in input_size)
        self._x: Tensor | None = None
        self._y: Tensor | None = None
        precision = "fp16" if half else "fp32"
        self.name = name or f"torch-{self.device.type}-{precision}{'-graph' if cuda_graph else ''}"

    @classmethod
    def from_name(
        cls,
        model_name: str,
        *,
        checkpoint: str | None = None,
        fusion: Any = None,
        attention: Any = None,
        img_size: int = 224,
        num_classes: int = 1000,
        **options: Any,
    ) -> TorchModelRunner:
        """A runner for ``vitrt.create_model(model_name, ...)`` with ``checkpoint``'s weights loaded
        (fresh weights without one); ``options`` go to ``__init__``."""
        from vitrt import create_model, load_checkpoint

        model = create_model(
            model_name, num_classes=num_classes, img_size=img_size, fusion=fusion, attention=attention
        )
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        options.setdefault("input_size", (3, img_size, img_size))
        return cls(model, **options)

    def forward(self, images: Tensor) -> Tensor:
        """images [B, 3, S, S] (any device and float dtype) -> logits on the runner's device and dtype.
        With CUDA graphs the result is the graph's output buffer, overwritten by the next call of the
        same shape: copy it to keep it."""
        x = images.to(self.device, self.dtype, non_blocking=True)
        with torch.inference_mode():
            if not self.cuda_graph:
                out: Tensor = self.model(x)
                return out
            graph, static_in, static_out = self._graph_for(x)
            static_in.copy_(x)
            graph.replay()
            return static_out

    def _graph_for(self, x: Tensor) -> tuple[Any, Tensor, Tensor]:
        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = x.clone()
            with torch.cuda.device(self.device):
                graph, static_out = capture_graph(lambda: self.model(static_in))
            self._graphs[key] = (graph, static_in, static_out)
        return self._graphs[key]

    @property
    def input_specs(self) -> list[TensorSpec]:
        """One input, ``images`` [batch, C, H, W], in the runner's dtype (float32 or float16)."""
        dtype = "float16" if self.dtype == torch.float16 else "float32"
        return [TensorSpec("images", ("batch", *self.input_size), dtype)]

    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        """{"images": float array [B, 3, S, S]} -> {"logits": float32 array [B, classes]}."""
        out = self.forward(torch.from_numpy(np.ascontiguousarray(feed["images"])))
        return {"logits": out.float().cpu().numpy()}

    def prepare(self, feed: Feed) -> None:
        """Copy ``feed["images"]`` to the runner's device and dtype (host -> device; synchronised)."""
        x = torch.from_numpy(np.ascontiguousarray(feed["images"])).to(self.device, self.dtype)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._x = x

    def enqueue(self) -> None:
        """Issue the model on the prepared input (asynchronous on CUDA, the whole computation on CPU)."""
        if self._x is None:
            raise VitrtError("enqueue() before prepare(feed): give the runner its inputs first")
        self._y = self.forward(self._x)

    def synchronize(self) -> None:
        """Wait for the last ``enqueue`` (CUDA); nothing to wait for on the CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def fetch(self) -> dict[str, np.ndarray]:
        """The last ``enqueue``'s logits as float32 numpy (device -> host)."""
        if self._y is None:
            raise VitrtError("fetch() before enqueue(): nothing has run yet")
        return {"logits": self._y.float().cpu().numpy()}
