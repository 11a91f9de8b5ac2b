"""Approximation error of Scatterbrain, SMYRF (LSH) and Performer against exact softmax attention at
equal memory budget, over budgets and softmax temperatures.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scatterbrain_error.py [--seeds 3]

Budget b = float32 entries kept per token (``ScatterbrainAttrs.budget_per_query``: sparse scores plus
query and key features), b = N / 64, N / 32 (the paper's T2T-ViT setting), N / 16, N / 8:
  scatterbrain: 2 rounds, cluster b // 4, b // 8 projection rows (2 (b // 8) features);
  lsh:          2 rounds, cluster b // 2;
  performer:    b // 4 projection rows (2 (b // 4) features).
Temperature: the layer's softmax scale is multiplied so that the logits t q . k have standard deviation
sigma over all pairs ("model" = the layer's own scale, unchanged).
Error: relative Frobenius error ||approx - exact|| / ||exact|| of the row-normalised attention matrix
(on --columns random key columns, 0 = all: the op is linear in v, so v = those columns of the
identity returns them), and for the T2T inputs also of the attention output with the layer's own v
(with i.i.d. synthetic v the exact output is a near-zero average, so its relative error says little).
Mean over --seeds draws of the hash vectors and projections (``module.draw_*``).

Inputs: synthetic Gaussian q, k, v (N = 3136, E = 64); synthetic clustered tokens (49 Gaussian centres,
as an image's similar patches); and the q, k, v that the two T2T token attentions of t2t_vit_t_14 at 224
see (N = 3136 and 784, E = 64) with random-initialised weights (seed 0) on skimage's ``astronaut``
image resized to 224 (a smooth synthetic image where scikit-image is missing); no pretrained weights
are available offline, so these logits are far flatter than a trained model's at the "model" scale.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vitrt.models import create_model
from vitrt.models.config import IMAGENET_MEAN, IMAGENET_STD
from vitrt.models.t2t_vit import T2TModule, TokenTransformer
from vitrt.plugins.lsh_attention.module import (
    HASH_STREAM,
    PROJECTION_STREAM,
    draw_hash_vectors,
    draw_projection,
    seeded_generator,
)
from vitrt.plugins.lsh_attention.reference import (
    exact_attention,
    lsh_attention,
    performer_attention,
    scatterbrain_attention,
)

METHODS = ("scatterbrain", "lsh", "performer")
BUDGET_DIVISORS = (64, 32, 16, 8)
SIGMAS = (0.5, 1.0, 2.0, 4.0)

QKV = tuple[Tensor, Tensor, Tensor, float]  # q, k, v [1, 1, N, E] and the layer's scale


def image_224() -> tuple[Tensor, str]:
    """[1, 3, 224, 224] normalised image and its description."""
    try:
        from skimage import data

        img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255).unsqueeze(0)
        name = "skimage astronaut (512 -> 224 bicubic)"
    except Exception:  # scikit-image missing: a smooth synthetic scene
        ys, xs = torch.meshgrid(torch.linspace(0, 1, 224), torch.linspace(0, 1, 224), indexing="ij")
        img = torch.stack([xs, ys, 0.5 + 0.5 * torch.sin(6 * math.pi * xs * ys)]).unsqueeze(0)
        name = "smooth synthetic image"
    img = F.interpolate(img, size=(224, 224), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (img - mean) / std, name


class _Recorder(nn.Module):
    """Dense core that keeps what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: QKV | None = None

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        self.seen = (q.detach(), k.detach(), v.detach(), scale)
        return exact_attention(q, k, v, scale=scale)


def t2t_inputs() -> tuple[QKV, QKV, str]:
    """q, k, v and scale of attention1 (3136 tokens) and attention2 (784) of t2t_vit_t_14 at 224."""
    torch.manual_seed(0)
    model = create_model("t2t_vit_t_14")
    t2t = model.tokens_to_token
    assert isinstance(t2t, T2TModule)
    rec1, rec2 = _Recorder(), _Recorder()
    for block, rec in ((t2t.attention1, rec1), (t2t.attention2, rec2)):
        assert isinstance(block, TokenTransformer)
        block.attn.core = rec
    x, name = image_224()
    with torch.no_grad():
        t2t(x)
    assert rec1.seen is not None and rec2.seen is not None
    return rec1.seen, rec2.seen, name


def synthetic(kind: str, n: int = 3136, e: int = 64) -> QKV:
    g = torch.Generator().manual_seed(1)
    if kind == "gaussian":
        q, k, v = (torch.randn(1, 1, n, e, generator=g) for _ in range(3))
    else:  # tokens scattered around 49 centres, like similar patches of an image
        centres = torch.randn(49, e, generator=g)
        idx = torch.randint(0, 49, (n,), generator=g)
        base = centres[idx]
        q = (base + 0.3 * torch.randn(n, e, generator=g)).view(1, 1, n, e)
        k = (base + 0.3 * torch.randn(n, e, generator=g)).view(1, 1, n, e)
        v = torch.randn(1, 1, n, e, generator=g)
    return q, k, v, e**-0.5


def logit_std(q: Tensor, k: Tensor, scale: float) -> float:
    sample = q[:, :, :: max(1, q.shape[2] // 512)]
    return float((sample @ k.transpose(-1, -2)).std() * scale)


def method_fn(method: str, budget: int, e: int, seed: int) -> tuple[Callable[..., Tensor], str]:
    """The approximation at budget ``budget`` (entries per token) and a short description."""
    hv = draw_hash_vectors(2, e, seeded_generator(seed, HASH_STREAM))
    if method == "scatterbrain":
        c, rows = max(1, budget // 4), max(1, budget // 8)
        proj = draw_projection(rows, e, seeded_generator(seed, PROJECTION_STREAM))

        def sb(q: Tensor, k: Tensor, v: Tensor, t: float) -> Tensor:
            return scatterbrain_attention(q, k, v, hash_vectors=hv, projection=proj, cluster_size=c, scale=t)

        return sb, f"c{c}+f{2 * rows}"
    if method == "lsh":
        c = max(1, budget // 2)

        def lsh(q: Tensor, k: Tensor, v: Tensor, t: float) -> Tensor:
            return lsh_attention(q, k, v, hash_vectors=hv, cluster_size=c, scale=t)

        return lsh, f"c{c}"
    rows = max(1, budget // 4)
    proj = draw_projection(rows, e, seeded_generator(seed, PROJECTION_STREAM))

    def perf(q: Tensor, k: Tensor, v: Tensor, t: float) -> Tensor:
        return performer_attention(q, k, v, projection=proj, scale=t)

    return perf, f"f{2 * rows}"


def rel_error(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def table(title: str, inputs: QKV, seeds: int, columns: int, with_output: bool) -> None:
    """One markdown table: rows (temperature, budget), columns the methods' mean errors."""
    q, k, v, scale = inputs
    n, e = q.shape[2], q.shape[3]
    # The op is linear in v: appending columns of the identity to v yields those columns of the
    # approximate attention matrix in the same call.
    g = torch.Generator().manual_seed(2)
    cols = torch.arange(n) if columns <= 0 or columns >= n else torch.randperm(n, generator=g)[:columns]
    eye = torch.zeros(1, 1, n, len(cols))
    eye[0, 0, cols, torch.arange(len(cols))] = 1.0
    v_ext = torch.cat([v, eye], dim=-1)
    natural = logit_std(q, k, scale)
    print(f"\n### {title}: N={n}, E={e}, layer scale {scale:.4f} (logit std {natural:.3g})\n")
    head = "| logit std | budget / token | matrix: scatterbrain | lsh | performer | best |"
    rule = "|---|---|---|---|---|---|"
    if with_output:
        head += " output: scatterbrain | lsh | performer | best |"
        rule += "---|---|---|---|"
    print(head)
    print(rule)
    temps: list[tuple[str, float]] = [("model", scale)] if abs(natural - 1.0) > 0.05 else []
    temps += [(f"{s:g}", scale * s / natural) for s in SIGMAS]
    for label, t in temps:
        attn = torch.softmax((q[0, 0] * t) @ k[0, 0].t(), dim=-1)
        exact_m, exact_o = attn[:, cols], attn @ v[0, 0]
        shown = f"{label} ({logit_std(q, k, t):.2g})" if label == "model" else label
        for div in BUDGET_DIVISORS:
            budget = n // div
            m_err, o_err, descs = [], [], []
            for method in METHODS:
                em, eo = 0.0, 0.0
                for seed in range(seeds):
                    fn, desc = method_fn(method, budget, e, seed)
                    out = fn(q, k, v_ext, t)[0, 0]
                    em += rel_error(out[:, e:], exact_m) / seeds
                    eo += rel_error(out[:, :e], exact_o) / seeds
                m_err.append(em)
                o_err.append(eo)
                descs.append(desc)
            cells = [f"{err:.3f} ({d})" for err, d in zip(m_err, descs, strict=True)]
            row = f"| {shown} | {budget} (N/{div}) | " + " | ".join(cells) + f" | {_best(m_err)} |"
            if with_output:
                row += " " + " | ".join(f"{err:.3f}" for err in o_err) + f" | {_best(o_err)} |"
            print(row)


def _best(errors: list[float]) -> str:
    return METHODS[min(range(len(errors)), key=errors.__getitem__)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3, help="draws of hash vectors / projections to average")
    parser.add_argument(
        "--columns",
        type=int,
        default=1024,
        help="attention-matrix columns to compare (random sample; 0 = all)",
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.time()
    a1, a2, image = t2t_inputs()
    sample = f"{args.columns} random columns" if args.columns > 0 else "all columns"
    print(
        f"Relative Frobenius error vs exact softmax attention, mean of {args.seeds} draws: of the "
        f"attention matrix ({sample}) and, for T2T inputs, of the attention output with the layer's v."
    )
    print(f"T2T inputs: t2t_vit_t_14 at 224, random-initialised weights (seed 0), image: {image}.")
    table("synthetic Gaussian q, k", synthetic("gaussian"), args.seeds, args.columns, False)
    table("synthetic clustered tokens (49 centres)", synthetic("clustered"), args.seeds, args.columns, False)
    table("t2t_vit_t_14 attention1", a1, args.seeds, args.columns, True)
    table("t2t_vit_t_14 attention2", a2, args.seeds, args.columns, True)
    print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
