"""Sweep of the float16 cluster kernel on tensor cores on the CPU emulator: every cluster size c = 1 .. 64 (all
eight entries), two random configurations each (mode, N around c, E, Dv, rounds, features, batch). Each output
is checked against the float64 reference run on the kernel's own clusters, within the tests' float16 tolerance
(1e-2). Prints the largest error beyond float16 rounding, as a fraction of the row max. Where that exceeds 5e-6,
the CUDA-core kernel's error on the same case is printed next to it.

    PYTHONPATH=. python benchmarks/results/workstation-2026-11-27-cluster-mma/sweep.py
"""
import sys, random, time
import pytest, torch
import tests._support.kernel_checks as kc
from vitrt.plugins.lsh_attention import reference as sb_ref
from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.cuda_launcher import load_module
from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda_debug
from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection
from vitrt.plugins.lsh_attention.spec import Mode
fails, t0, worst = [], time.time(), 0.0
with emulated_kernels():
    mod = load_module("scatterbrain")
    for c in range(1, 65):
        for rep in range(2):
            rng = random.Random(1000 * c + rep)
            mode = rng.choice([Mode.SCATTERBRAIN, Mode.LSH])
            n = rng.choice([1, c - 1 if c > 1 else 1, c, c + 1, 3 * c + 5, 150])
            e, dv, r, m, b = rng.choice([8, 16, 24, 33, 64, 72]), rng.choice([1, 7, 12, 33, 40, 64, 70]), rng.choice([1, 2, 3]), rng.choice([1, 3, 12, 20]), rng.choice([1, 2])
            attrs = kc.attention_attrs(mode, c, r, m, rng.choice([e ** -0.5, 0.3]))
            g = torch.Generator().manual_seed(c * 7 + rep)
            q, k = (torch.randn(b, 1, n, e, generator=g).half() for _ in range(2))
            v = torch.randn(b, 1, n, dv, generator=g).half()
            hv, proj = draw_hash_vectors(r, e, g), draw_projection(m, e, g)
            what = f"c={c} {mode.name} n={n} e={e} dv={dv} r={r} m={m} b={b}"
            try:
                out, views = scatterbrain_cuda_debug(q, k, v, hv, proj if mode != Mode.LSH else None, attrs)
                assert not out.isnan().any(), "NaN"
                want = kc._reference_f64(q, k, v, hv, proj, attrs, (views["q_perm"], views["k_perm"]))
                ex = float((((out.double() - want).abs() - (want.half().double() - want).abs()) / want.abs().amax(-1, keepdim=True).clamp_min(1e-30)).max())
                worst = max(worst, ex)
                if ex > 5e-6:
                    o2, v2 = scatterbrain_cuda_debug(q, k, v, hv, proj if mode != Mode.LSH else None, attrs, tensor_cores=False)
                    w2 = kc._reference_f64(q, k, v, hv, proj, attrs, (v2["q_perm"], v2["k_perm"]))
                    ex2 = float((((o2.double() - w2).abs() - (w2.half().double() - w2).abs()) / w2.abs().amax(-1, keepdim=True).clamp_min(1e-30)).max())
                    print(f"{what}: tensor cores {ex:.2e}, CUDA cores {ex2:.2e}")
                kc._close(out, want.float(), torch.float16, what)
            except Exception as exc:
                fails.append((what, str(exc).splitlines()[0][:160]))
    launched = {k: v for k, v in mod.launches.items() if "cluster" in k}
print(f"{128 - len(fails)} of 128 configurations pass in {time.time() - t0:.0f} s; worst excess {worst:.2e} of the row max; {launched}")
for f in fails: print("FAIL", f)
