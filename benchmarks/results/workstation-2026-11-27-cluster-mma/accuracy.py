"""Accuracy of Scatterbrain's float16 cluster kernel on tensor cores against the CUDA-core kernel, on the CPU
emulator: both against the float64 reference run on the kernel's own clusters (its sort orders).

    PYTHONPATH=. python benchmarks/results/workstation-2026-11-27-cluster-mma/accuracy.py

Per configuration and kernel: the share of outputs equal to the float64 result rounded to float16, and the
largest error beyond that rounding as a fraction of the row's largest value.
"""

import pytest
import torch

from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.lsh_attention import reference as ref
from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda_debug
from vitrt.plugins.lsh_attention.module import draw_hash_vectors, draw_projection
from vitrt.plugins.lsh_attention.spec import Mode, ScatterbrainAttrs

CASES = [  # (batch, tokens, E, Dv, cluster, rounds, projection rows, mode)
    (1, 3136, 64, 64, 24, 2, 12, Mode.SCATTERBRAIN),
    (2, 784, 64, 64, 6, 2, 3, Mode.SCATTERBRAIN),
    (1, 300, 33, 40, 49, 3, 40, Mode.SCATTERBRAIN),
    (1, 3136, 64, 64, 24, 2, 12, Mode.LSH),
]

with emulated_kernels():
    for b, n, e, dv, c, r, m, mode in CASES:
        g = torch.Generator().manual_seed(2)
        q, k = (torch.randn(b, 1, n, e, generator=g).half() for _ in range(2))
        v = torch.randn(b, 1, n, dv, generator=g).half()
        hv, proj = draw_hash_vectors(r, e, g), draw_projection(m, e, g)
        attrs = ScatterbrainAttrs(mode, c, r, 2 * m if mode != Mode.LSH else 0, e**-0.5)
        proj_in = proj if mode != Mode.LSH else None
        line = [f"{mode.name:12} B={b} N={n} E={e} Dv={dv} c={c} R={r} m={m}:"]
        for name, cores in (("tensor cores", True), ("CUDA cores", False)):
            out, views = scatterbrain_cuda_debug(q, k, v, hv, proj_in, attrs, tensor_cores=cores)
            orders = (views["q_perm"], views["k_perm"])
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(ref, "_hash_orders", lambda *args, o=orders: o)
                patch.setattr(ref, "COMPUTE_DTYPE", torch.float64)
                patch.setattr(ref, "check_inputs", lambda *args: None)
                want = ref.attention_by_mode(
                    q.double(), k.double(), v.double(), hv.double(),
                    proj.double() if proj_in is not None else None, attrs,
                )  # fmt: skip
            rounding = (want.half().double() - want).abs()
            excess = ((out.double() - want).abs() - rounding) / want.abs().amax(dim=-1, keepdim=True)
            exact = float((out == want.half()).float().mean())
            line.append(f"{name}: {exact:.4f} correctly rounded, worst {float(excess.max()):.2e} of the row max")
        print(" ".join(line[:1]), "\n   ", "\n    ".join(line[1:]))
