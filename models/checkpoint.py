"""Reading checkpoints safely and loading them into vitrt models.

Only tensors are read: ``.pth``/``.pth.tar`` through ``torch.load(weights_only=True)``, and
``.safetensors``. Nothing is unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vitrt.errors import CheckpointError

# Where training scripts put the weights inside a checkpoint dict, in order of preference: the EMA
# weights are what T2T-ViT and DeiT report their accuracy with.
WRAPPER_KEYS = ("state_dict_ema", "state_dict", "model", "module")
MAX_LISTED = 10


def read_state_dict(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Tensor]:
    """A flat {key: tensor} dict from a checkpoint file or an in-memory mapping.

    Unwraps ``state_dict_ema``/``state_dict``/``model``/``module`` and strips ``module.`` prefixes
    (left by DataParallel / DistributedDataParallel).
    """
    obj = _read_file(Path(source)) if isinstance(source, (str, os.PathLike)) else source
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(
            f"no tensors found in the checkpoint (top-level keys: {sorted(map(str, obj))[:MAX_LISTED]}); "
            f"expected a state dict, raw or under one of {list(WRAPPER_KEYS)}"
        )
    return {k.removeprefix("module."): v for k, v in tensors.items()}


def _read_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    with path.open("rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive (or, before 1.6, a pickle stream starting with the PROTO opcode).
    if not (zipfile.is_zipfile(path) or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle); "
            "expected a .pth/.pth.tar saved with torch.save, or a .safetensors file"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            raise CheckpointError(f"{path} is a damaged checkpoint: {str(err).splitlines()[0]}") from err
        raise CheckpointError(
            f"{path} holds Python objects besides tensors, which vitrt will not unpickle "
            f"(weights_only=True): {str(err).splitlines()[0]}. Re-save only the state dict: "
            "torch.save(model.state_dict(), path), or convert it to .safetensors"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "expected a .pth/.pth.tar saved with torch.save, or a .safetensors file"
        ) from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def _listing(title: str, items: list[str]) -> str:
    more = f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return f"{title} ({len(items)}): {', '.join(items[:MAX_LISTED])}{more}"


def load_checkpoint(
    model: nn.Module, path_or_mapping: str | os.PathLike[str] | Mapping[str, Any], *, strict: bool = True
) -> nn.Module:
    """Load weights into ``model`` in place and return it (CheckpointError for arguments of the wrong
    kind, swapped ones included).

    With ``strict`` (default) any missing key, unexpected key or shape mismatch raises
    CheckpointError listing the first 10 of each; keys the model marks optional (fixed buffers of
    vitrt's op modules, drawn from a seed) may be absent. Without ``strict``, matching keys load and
    the rest are reported in the returned model's ``load_report`` attribute.
    """
    from .registry import checkpoint_filter_for

    if not isinstance(model, nn.Module):
        swapped = isinstance(path_or_mapping, nn.Module)
        raise CheckpointError(
            f"load_checkpoint(model, checkpoint) takes the built model first, got {model!r}"
            + (
                "; the arguments are swapped. Fix: load_checkpoint(model, checkpoint)"
                if swapped
                else " and a checkpoint. Fix: load_checkpoint(vitrt.create_model(name, ...), checkpoint)"
            )
        )
    if not isinstance(path_or_mapping, (str, os.PathLike, Mapping)):
        raise CheckpointError(
            "load_checkpoint(model, checkpoint) takes a checkpoint file (.pth / .pth.tar / .safetensors) or "
            f"a state dict second, got a {type(path_or_mapping).__name__}"
        )
    state = checkpoint_filter_for(model)(read_state_dict(path_or_mapping), model)
    own = model.state_dict()
    from .base import ClassTokenViT

    optional = model.optional_state_keys() if isinstance(model, ClassTokenViT) else set()
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [
        _listing(title, items)
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    if problems and strict:
        raise CheckpointError(
            f"checkpoint does not match {name}:\n  " + "\n  ".join(problems) + "\n"
            "Fix: the model name and img_size/num_classes the checkpoint was trained with (in Python, "
            "load_checkpoint(..., strict=False) loads what matches)"
        )
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    model.load_report = problems  # type: ignore[assignment]
    return model
