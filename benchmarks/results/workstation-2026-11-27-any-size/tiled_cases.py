"""Every form of the cluster kernel that can run (mma, staged, tiled) on tests/_support's CLUSTER_TILED_CASES,
on the CPU emulator: the largest error beyond the dtype's rounding of the float64 reference on the kernel's
clusters, as a fraction of the row max. Run from the repository root."""

import sys

import torch

sys.path.insert(0, ".")
from tests._support.kernel_checks import CLUSTER_TILED_CASES, _fixed, _reference_f64, attention_attrs
from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.cuda_launcher import tensor_dtype_name
from vitrt.plugins.lsh_attention.cuda import AttentionDims, cluster_kernels, scatterbrain_cuda_debug
from vitrt.plugins.lsh_attention.spec import Mode

with emulated_kernels():
    for b, n, e, dv, c, r, m, mode, dtype in CLUSTER_TILED_CASES:
        attrs = attention_attrs(mode, c, r, m, e**-0.5)
        g = torch.Generator().manual_seed(11 + n + c)
        q, k = (torch.randn(b, 1, n, e, generator=g).to(dtype) for _ in range(2))
        v = torch.randn(b, 1, n, dv, generator=g).to(dtype)
        hv, proj = _fixed(r, max(m, 1), e, "cpu")
        proj_in = proj if mode != Mode.LSH else None
        forms = cluster_kernels(AttentionDims.of(b, 1, n, e, dv, attrs), tensor_dtype_name(q))
        res = []
        for form in forms:
            out, views = scatterbrain_cuda_debug(q, k, v, hv, proj_in, attrs, cluster=form)
            want = _reference_f64(q, k, v, hv, proj, attrs, (views["q_perm"], views["k_perm"]))
            ex = float(
                (
                    ((out.double() - want).abs() - (want.to(dtype).double() - want).abs())
                    / want.abs().amax(-1, keepdim=True)
                ).max()
            )
            res.append(f"{form} {ex:.2e}")
        print(b, n, e, dv, c, r, m, mode.name, dtype, "|", ", ".join(res))
