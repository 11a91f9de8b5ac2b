"""The radix sort in tiles (vitrt_sb_sort_tiles) on the CPU emulator over random configurations: blocks of
32, 64 or 128 threads (tiles of 256 to 1024 keys, so 1 to 10 tiles), N from 1 to 2500, cluster sizes 1, 5
and 24, a third of the tokens duplicated (exact ties). Each permutation must equal reference.stable_argsort
of the kernel's hashes. Run from the repository root: python <this file> FIRST_SEED LAST_SEED."""

import random
import sys

import torch

sys.path.insert(0, ".")
from tests._support.kernel_checks import _fixed, attention_attrs
from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.lsh_attention import cuda as sb_cuda
from vitrt.plugins.lsh_attention import reference as sb_ref
from vitrt.plugins.lsh_attention.spec import Mode

sb_cuda._RADIX_MAX_P = 0
n_ok = 0
with emulated_kernels():
    for seed in range(int(sys.argv[1]), int(sys.argv[2])):
        rng = random.Random(seed)
        th = rng.choice([32, 64, 128])
        sb_cuda._SORT_TILE_THREADS = th
        n, c, e = rng.randint(1, 2500), rng.choice([1, 5, 24]), rng.choice([8, 16])
        g = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(1, 1, n, e, generator=g) for _ in range(3))
        if n > 4:  # exact ties: duplicated tokens
            idx = torch.randint(0, n, (n // 3,), generator=g)
            q[0, 0, idx] = q[0, 0, 0].clone()
            k[0, 0, idx] = k[0, 0, 1].clone()
        attrs = attention_attrs(Mode.LSH, c, 2, 1, 0.3)
        hv, _ = _fixed(2, 1, e, "cpu")
        out, views = sb_cuda.scatterbrain_cuda_debug(q, k, v, hv, None, attrs)
        for side in "qk":
            want = sb_ref.stable_argsort(views[f"{side}_hash"])
            assert torch.equal(views[f"{side}_perm"], want), (seed, side, n, c, th)
        n_ok += 1
print("ok", n_ok)
