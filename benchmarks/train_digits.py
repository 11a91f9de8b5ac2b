"""Train small T2T-ViT and DeiT models on scikit-learn's digits: trained weights to judge INT8 with.

    .venv/bin/python benchmarks/train_digits.py [--out benchmarks/digits] [--epochs 40] [--threads 2]

No pretrained ImageNet weights can be downloaded here, so INT8 quality is judged on models that
learned something: the 1797 8x8 digits of ``sklearn.datasets.load_digits``, upsampled to 64x64 or 128x128
(bilinear) and replicated to 3 channels by vitrt's own preprocessing (``vitrt.calibration.data``), with
a fixed seeded split: 500 held-out images, 1297 for training. The models are built from the
model classes directly (they are not registered names):

- ``digits_t2t_vit``: ``vitrt.models.t2t_vit.T2TViT`` at 64 x 64 (performer T2T module, token_dim 32),
  embed 96, 4 blocks, 4 heads, MLP ratio 2: 64 -> 16 -> 8 -> 4 token grid, 17 tokens;
- ``digits_t2t_vit_128``: the same family at 128 x 128, embed 128, 6 blocks: 128 -> 32 -> 16 -> 8 grid,
  65 tokens. At 64 x 64 T2T-ViT's stride-16 soft split leaves 17 tokens and a backbone too small for
  token fusion to pay for itself on a CPU (README, Tuning); at 128 the backbone takes about half of a
  query, and this is the model ``make demo`` and the tuning results use;
- ``digits_deit``: ``vitrt.models.deit.VisionTransformer`` at 64 x 64, patch 8, embed 96, 4 blocks, 4
  heads, MLP ratio 2: 64 tokens + class token.

Writes to ``--out``: ``<name>.safetensors`` (the state dict, tensors only), ``<name>.json`` (the
constructor arguments, preprocessing, held-out top-1), ``split.json`` (the held-out indices),
``train_log.txt``. Seeded (torch, numpy); the models train in parallel, one process of one torch
thread each (two cores; one thread per process also avoids OpenMP spinning when other work shares
the cores, which made two-thread training ten times slower here).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vitrt.calibration.data import open_source  # noqa: E402
from vitrt.fileio import atomic_write_bytes  # noqa: E402
from vitrt.models.config import PreprocessConfig  # noqa: E402
from vitrt.models.deit import VisionTransformer  # noqa: E402
from vitrt.models.t2t_vit import T2TViT  # noqa: E402

HELD_OUT = 500
ARCHS: dict[str, dict[str, Any]] = {
    "digits_t2t_vit": {
        "class": "vitrt.models.t2t_vit.T2TViT",
        "kwargs": {
            "img_size": 64,
            "tokens_type": "performer",
            "num_classes": 10,
            "embed_dim": 96,
            "depth": 4,
            "num_heads": 4,
            "mlp_ratio": 2.0,
            "token_dim": 32,
        },
    },
    "digits_t2t_vit_128": {
        "class": "vitrt.models.t2t_vit.T2TViT",
        "kwargs": {
            "img_size": 128,
            "tokens_type": "performer",
            "num_classes": 10,
            "embed_dim": 128,
            "depth": 6,
            "num_heads": 4,
            "mlp_ratio": 2.0,
            "token_dim": 32,
        },
    },
    "digits_deit": {
        "class": "vitrt.models.deit.VisionTransformer",
        "kwargs": {
            "img_size": 64,
            "patch_size": 8,
            "num_classes": 10,
            "embed_dim": 96,
            "depth": 4,
            "num_heads": 4,
            "mlp_ratio": 2.0,
        },
    },
}


def preprocess_for(name_or_meta: str | dict[str, Any]) -> PreprocessConfig:
    """How a digits model takes its images: its own square size, mean = std = 0.5, no crop, bilinear."""
    arch = ARCHS[name_or_meta] if isinstance(name_or_meta, str) else name_or_meta["arch"]
    size = int(arch["kwargs"]["img_size"])
    half = (0.5, 0.5, 0.5)
    return PreprocessConfig(
        input_size=(3, size, size), mean=half, std=half, crop_pct=1.0, interpolation="bilinear"
    )


def build_model(name_or_meta: str | dict[str, Any]) -> nn.Module:
    """A digits model from its name (fresh weights) or its ``<name>.json`` metadata."""
    arch = ARCHS[name_or_meta] if isinstance(name_or_meta, str) else name_or_meta["arch"]
    cls = {"vitrt.models.t2t_vit.T2TViT": T2TViT, "vitrt.models.deit.VisionTransformer": VisionTransformer}[
        arch["class"]
    ]
    model = cls(**arch["kwargs"])
    model.preprocess = preprocess_for(name_or_meta)
    return model


def load_trained(folder: Path, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model ``name`` from ``folder`` (eval mode) and its metadata."""
    from safetensors.torch import load_file

    meta = json.loads((folder / f"{name}.json").read_text())
    model = build_model(meta)
    model.load_state_dict(load_file(str(folder / f"{name}.safetensors")), strict=True)
    return model.eval(), meta


def export_digits(name: str, folder: Path, path: Path) -> Path:
    """Export the trained ``name`` from ``folder`` to ONNX at ``path`` with vitrt's exporter.

    The ExportConfig records the checkpoint (path relative to the repository), the constructor
    arguments (``extra["arch"]``: these models are not registered names) and the preprocessing
    (``extra["preprocess"]``: crop_pct 1.0, bilinear), which ``vitrt calibrate`` reads.
    """
    from vitrt.compiler.export import ExportConfig, export_model, file_sha256

    model, meta = load_trained(folder, name)
    pre = model.preprocess
    checkpoint = folder / f"{name}.safetensors"
    recorded = _relative(checkpoint)
    config = ExportConfig(
        model=name,
        input_size=pre.input_size,
        mean=pre.mean,
        std=pre.std,
        img_size=pre.input_size[-1],
        num_classes=10,
        checkpoint=recorded,
        checkpoint_sha256=file_sha256(checkpoint),
        extra={
            "arch": meta["arch"],
            "preprocess": {"crop_pct": pre.crop_pct, "interpolation": pre.interpolation},
        },
    )
    return export_model(model, path, config)


def export_foreign(model: nn.Module, path: Path, img_size: int, opset: int = 14) -> Path:
    """Export ``model`` the way other tools do (timm / Hugging Face scripts, another team's ONNX): the
    TorchScript exporter at ``opset`` (14: LayerNorm and GELU decomposed into primitive ops), a dynamic
    batch axis, no simplification, the exporter's own node names, no vitrt metadata. Input
    ``pixel_values`` [batch, 3, img_size, img_size], output ``logits``. Written atomically."""
    import warnings

    from vitrt.fileio import atomic_output

    example = torch.zeros(1, 3, img_size, img_size)
    with atomic_output(path, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            model.eval(),
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=opset,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of the 1797 digits: a seeded permutation, 500 held out."""
    order = np.random.default_rng(seed).permutation(1797)
    return np.sort(order[HELD_OUT:]), np.sort(order[:HELD_OUT])


def digits_tensors(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits preprocessed as model ``name`` takes them: (1797, 3, S, S) float32, labels (1797,)."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    data = open_source("sklearn-digits", preprocess_for(name), 1797, convert_channels=True, progress=False)
    images = torch.stack([data.sample(i) for i in range(1797)])
    labels = torch.from_numpy(np.asarray(load_digits().target, dtype=np.int64))
    return images, labels


def shift(images: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels per axis, filling with the background."""
    b, _, h, w = images.shape
    background = float(images.amin())
    padded = F.pad(images, (max_shift,) * 4, value=background)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


@torch.no_grad()
def top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        int((model(images[i : i + 250]).argmax(1) == labels[i : i + 250]).sum())
        for i in range(0, len(images), 250)
    )
    return 100.0 * correct / len(images)


def train(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    split: tuple[np.ndarray, np.ndarray],
    args: argparse.Namespace,
    log: Any,
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = build_model(name)
    params = sum(p.numel() for p in model.parameters())
    train_idx, held_idx = (torch.from_numpy(s) for s in split)
    xt, yt, xh, yh = x[train_idx], y[train_idx], x[held_idx], y[held_idx]
    decay = [
        p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and "pos_embed" not in n
    ]
    no_decay = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and not (p.ndim > 1 and "pos_embed" not in n)
    ]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    # --max-shift is in 64 x 64 pixels (8 = one digit pixel); larger inputs shift in proportion
    max_shift = args.max_shift * x.shape[-1] // 64
    steps_per_epoch = math.ceil(len(xt) / args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = min(2 * steps_per_epoch, max(1, total // 5))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        ),
    )
    log(
        f"## {name}: {params:,} parameters, {len(xt)} train / {len(xh)} held-out images, {args.epochs} epochs"
    )
    t0 = time.perf_counter()
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(xt), args.batch_size):
            idx = perm[i : i + args.batch_size]
            xb, yb = shift(xt[idx], max_shift, gen), yt[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            acc = top1(model, xh, yh)
            log(
                f"{name} epoch {epoch:3d}  loss {loss_sum / len(xt):.4f}  "
                f"train top-1 {100 * correct / len(xt):5.1f}  held-out top-1 {acc:5.1f}  "
                f"lr {sched.get_last_lr()[0]:.2e}  {time.perf_counter() - t0:6.1f} s"
            )
    seconds = time.perf_counter() - t0
    model.eval()
    return {"model": model, "params": params, "held_out_top1": acc, "train_seconds": round(seconds, 1)}


def _relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine-specific paths in outputs)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _train_one(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Train and save one model in this process (``args.threads`` torch threads)."""
    from safetensors.torch import save

    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    x, y = digits_tensors(name)
    size = x.shape[-1]
    result = train(name, x, y, digits_split(args.seed), args, log)
    model = result.pop("model")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(args.out / f"{name}.safetensors", save(state))
    meta = {
        "name": name,
        "arch": ARCHS[name],
        "preprocess": preprocess_for(name).to_dict(),
        "data": f"sklearn digits 8x8 -> {size}x{size} bilinear, 3 channels; held-out indices in split.json",
        **result,
        "args": {k: (_relative(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    atomic_write_bytes(args.out / f"{name}.json", (json.dumps(meta, indent=1) + "\n").encode())
    return result, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "digits")
    parser.add_argument("--models", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument(
        "--max-shift",
        type=int,
        default=8,
        help="augmentation: translation in pixels at 64 x 64 (8 = one digit pixel), scaled with the input",
    )
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=2, help="models trained at once, one process each (default 2)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    args = parser.parse_args()
    import concurrent.futures
    import multiprocessing

    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# train_digits.py: torch {torch.__version__}, {args.jobs} process(es) x {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, seed {args.seed}, epochs {args.epochs}, "
        f"batch {args.batch_size}, lr {args.lr}, wd {args.weight_decay}, shift {args.max_shift}"
    )
    print(header, flush=True)
    t0 = time.perf_counter()
    train_idx, held_idx = digits_split(args.seed)
    split = {"seed": args.seed, "held_out": held_idx.tolist(), "train": train_idx.tolist()}
    atomic_write_bytes(args.out / "split.json", (json.dumps(split) + "\n").encode())
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        futures = {name: pool.submit(_train_one, name, args) for name in args.models}
        done = {name: f.result() for name, f in futures.items()}
    total = time.perf_counter() - t0
    summary = ", ".join(f"{n} held-out top-1 {r['held_out_top1']:.1f}%" for n, (r, _) in done.items())
    print(f"# wall time {total:.1f} s: {summary}", flush=True)
    # one section per model; a run that trains some models keeps the others' sections
    log_path = args.out / "train_log.txt"
    sections = _log_sections(log_path.read_text() if log_path.is_file() else "")
    for name, (result, model_lines) in done.items():
        end = f"# {name}: wall time {total:.1f} s, held-out top-1 {result['held_out_top1']:.1f}%"
        sections[name] = "\n".join([header, *model_lines, end])
    atomic_write_bytes(log_path, ("\n\n".join(sections[n] for n in sorted(sections)) + "\n").encode())


def _log_sections(text: str) -> dict[str, str]:
    """train_log.txt split per model: a section is a ``# train_digits.py`` header with the lines of one
    model (its ``## <name>:`` line and the lines that start with its name)."""
    sections: dict[str, str] = {}
    for block in text.split("# train_digits.py")[1:]:
        lines = ("# train_digits.py" + block).rstrip().splitlines()
        names = [line[3:].split(":")[0] for line in lines if line.startswith("## ")]
        for name in names:
            own = [ln for ln in lines[1:] if ln.startswith((f"## {name}:", f"{name} ", f"# {name}:"))]
            sections[name] = "\n".join([lines[0], *own])
    return sections


if __name__ == "__main__":
    main()
