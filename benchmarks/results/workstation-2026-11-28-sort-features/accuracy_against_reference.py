"""The outputs that emulated_bits_scatterbrain.py found to differ from the base (argv[1]: the tree's file, argv[2]:
the base's), each against the float32 reference run on the kernel's own permutations: the error of each, as a
fraction of the reference's largest value."""
import sys

import pytest
import torch

sys.path.insert(0, ".")
from tests._support.kernel_checks import _fixed, attention_attrs
from vitrt.plugins.lsh_attention import reference as sb_ref
from vitrt.plugins.lsh_attention.spec import Mode
tree, base = torch.load(sys.argv[1]), torch.load(sys.argv[2])
for bh, n, e, c, r, m, mode, dtype in [(1, 500, 64, 24, 2, 12, Mode.SCATTERBRAIN, torch.float32),
                                       (2, 784, 64, 24, 2, 12, Mode.SCATTERBRAIN, torch.float16),
                                       (2, 400, 64, 0, 0, 12, Mode.PERFORMER, torch.float16)]:
    g = torch.Generator().manual_seed(n + e)
    q, k, v = (torch.randn(1, bh, n, e, generator=g).to(dtype) for _ in range(3))
    k[:, :, : n // 10] = k[:, :, n // 10 : 2 * (n // 10)]
    hv, proj = _fixed(max(r, 1), max(m, 1), e, "cpu")
    attrs = attention_attrs(mode, c, r, m, e**-0.5)
    key = f"{mode.name}_{bh}_{n}_{e}_{dtype}"
    with pytest.MonkeyPatch.context() as patch:
        if mode != Mode.PERFORMER:
            orders = (tree[key + "_q_perm"], tree[key + "_k_perm"])
            patch.setattr(sb_ref, "_hash_orders", lambda *a: orders)
        ref = sb_ref.attention_by_mode(q.float(), k.float(), v.float(), hv if mode != Mode.PERFORMER else None, proj, attrs).double()
    top = float(ref.abs().max())
    for name, o in (("tree", tree[key]), ("base", base[key])):
        err = (o.double() - ref).abs()
        print(key, name, f"max err {float(err.max()) / top:.3g} of max, mean {float(err.mean()) / top:.3g}")
