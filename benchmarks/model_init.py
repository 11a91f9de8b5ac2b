"""``create_model`` time with vitrt's truncated-normal init against torch's ``nn.init.trunc_normal_``, both
in this run.

    .venv/bin/python benchmarks/model_init.py [--models deit_small_patch16_224 ...] [--repeats 3]

Random-init models draw their Linear weights, ``pos_embed`` and ``cls_token`` from a truncated normal
(N(0, 0.02^2) cut at +-2 std). vitrt samples it in one pass (inverse CDF,
``vitrt.models.layers.trunc_normal_``); torch 2.13's function redraws the whole tensor until no value
falls outside. Each model is built
``--repeats`` times each way, alternating (torch, vitrt, torch, vitrt, ...), after one untimed build;
each way's time is its median, in seconds, on one thread. The ratio is vitrt's over torch's.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import vitrt.models.deit as deit
import vitrt.models.layers as layers
import vitrt.models.t2t_vit as t2t_vit
from vitrt import create_model

DEFAULT_MODELS = ("deit_tiny_patch16_224", "deit_small_patch16_224", "t2t_vit_t_14", "deit_base_patch16_224")
MODULES = (layers, deit, t2t_vit)  # every module that calls trunc_normal_ by that name
VITRT = layers.trunc_normal_


def torch_trunc_normal_(
    tensor: torch.Tensor, std: float = 0.02, a: float = -0.04, b: float = 0.04
) -> torch.Tensor:
    return torch.nn.init.trunc_normal_(tensor, std=std, a=a, b=b)


def build_seconds(name: str, init: object) -> float:
    for module in MODULES:
        module.trunc_normal_ = init  # type: ignore[attr-defined]
    try:
        start = time.perf_counter()
        create_model(name)
        return time.perf_counter() - start
    finally:
        for module in MODULES:
            module.trunc_normal_ = VITRT  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.machine()}, 1 thread")
    print(f"{'model':26} {'torch s':>8} {'vitrt s':>8} {'ratio':>6}")
    create_model("deit_tiny_patch16_224")  # imports, allocator warm-up
    for name in args.models:
        times: dict[object, list[float]] = {torch_trunc_normal_: [], VITRT: []}
        for _ in range(args.repeats):
            for init in times:
                times[init].append(build_seconds(name, init))
        plain, ours = (statistics.median(t) for t in times.values())
        print(f"{name:26} {plain:8.2f} {ours:8.2f} {ours / plain:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
