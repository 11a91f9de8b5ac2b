"""ScatterbrainAttention on the CPU emulator at fixed shapes and seeded inputs, every output and intermediate
(hashes, permutations, features) saved to argv[1]; run in this tree and in a worktree of the base commit, and
compare with argv[2] when given: which differ from the base bit for bit, and by how much (the largest
difference as a fraction of the output's largest value, and in units of the output dtype's spacing there)."""
import sys

import torch

sys.path.insert(0, ".")
from tests._support.kernel_checks import _fixed, attention_attrs  # noqa: E402
from vitrt.plugins.cuda_emulation import emulated_kernels  # noqa: E402
from vitrt.plugins.lsh_attention.cuda import scatterbrain_cuda_debug  # noqa: E402
from vitrt.plugins.lsh_attention.spec import Mode  # noqa: E402

# (batch x heads, tokens, E = Dv, cluster, rounds, projection rows, mode, dtype): T2T-ViT-t-14's two attentions
# (P = 3144: 4 keys per thread now, 8 before; P = 792: 1 now, 4 before), an unaligned width (no vector
# loads: the values gathered after the products as before), float32, and the other two modes.
CASES = [
    (1, 3136, 64, 24, 2, 12, Mode.SCATTERBRAIN, torch.float16),
    (2, 784, 64, 24, 2, 12, Mode.SCATTERBRAIN, torch.float16),
    (2, 300, 33, 16, 3, 8, Mode.SCATTERBRAIN, torch.float16),
    (1, 500, 64, 24, 2, 12, Mode.SCATTERBRAIN, torch.float32),
    (1, 1500, 64, 24, 2, 0, Mode.LSH, torch.float16),
    (2, 400, 64, 0, 0, 12, Mode.PERFORMER, torch.float16),
]
out = {}
with emulated_kernels():
    for bh, n, e, c, r, m, mode, dtype in CASES:
        g = torch.Generator().manual_seed(n + e)
        q, k, v = (torch.randn(1, bh, n, e, generator=g).to(dtype) for _ in range(3))
        k[:, :, : n // 10] = k[:, :, n // 10 : 2 * (n // 10)]  # duplicated keys: ties in the sort
        hv, proj = _fixed(max(r, 1), max(m, 1), e, "cpu")
        attrs = attention_attrs(mode, c, r, m, e**-0.5)
        res, views = scatterbrain_cuda_debug(
            q, k, v, hv if mode != Mode.PERFORMER else None, proj if mode != Mode.LSH else None, attrs
        )
        key = f"{mode.name}_{bh}_{n}_{e}_{dtype}"
        out[key] = res
        out |= {f"{key}_{name}": t for name, t in views.items()}
torch.save(out, sys.argv[1])
if len(sys.argv) > 2:
    base = torch.load(sys.argv[2])
    differ = [k for k in base if not torch.equal(base[k], out[k])]
    print(len(out), "outputs and intermediates;", len(base), "in the base;", differ, "differ")
    for key in differ:
        a, b = out[key].double(), base[key].double()
        top = float(b.abs().max())
        gap = float((a - b).abs().max())
        print(f"  {key}: max |tree - base| = {gap:.3g} = {gap / top:.3g} of max |base| = "
              f"{gap / (top * torch.finfo(out[key].dtype).eps):.2f} eps of max |base|")
