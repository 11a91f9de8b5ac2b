"""`make demo`: the CPU job that grows with the pipeline. Today: build, check, time a model."""

from __future__ import annotations

import time

import torch


def run_demo(model_name: str = "t2t_vit_7", img_size: int = 224, repeats: int = 10) -> int:
    """Build ``model_name``, check batch consistency, time batch-1 CPU latency; returns exit status."""
    from models import create_model
    from models.complexity import count_complexity

    from .inspect import model_card

    print(model_card(model_name, img_size=img_size))
    torch.manual_seed(0)
    model = create_model(model_name, img_size=img_size)
    x = torch.randn(4, *model.preprocess.input_size)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
        err = (batch - single).abs().max().item()
        model(x[:1])  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x[:1])
            times.append(time.perf_counter() - t0)
    times.sort()
    macs = count_complexity(model).macs
    print(f"\nbatch-of-4 vs one-by-one logits: max |diff| = {err:.2e}")
    print(
        f"CPU latency, batch 1, {torch.get_num_threads()} threads, {repeats} runs: "
        f"median {1e3 * times[len(times) // 2]:.1f} ms, min {1e3 * times[0]:.1f} ms "
        f"({macs / 1e9 / times[len(times) // 2]:.1f} GMAC/s)"
    )
    print("Next stages (export, INT8, engines) join this demo as they land.")
    return 0 if err < 1e-4 else 1
