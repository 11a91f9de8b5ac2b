"""The merge kernel's outputs on the CPU emulator at fixed cases, saved to argv[1]; run in this tree and in a
worktree of the base commit, and compare with argv[2] when given: every output must be equal bit for bit.
Covers each vector path (float16 384 channels: merge384; 40: 8-half vectors; 147: one element per lane;
float32 64 and 147), each pooling, the merge with a base add and norm, and the fusion with a residual, a
by-token norm and log(size)."""
import sys, torch
sys.path.insert(0, ".")
from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.token_fusion.cuda import merge_add_norm_cuda, merge_tokens_cuda, token_fusion_norm_cuda
from vitrt.plugins.token_fusion.spec import TokenFusionAttrs
from tests._support.kernel_checks import MCTF
out = {}
with emulated_kernels():
    for dtype in (torch.float16, torch.float32):
        for (b, n, c) in [(2, 197, 384), (1, 61, 40), (2, 37, 147), (1, 130, 64), (1, 25, 392)]:
            g = torch.Generator().manual_seed(b * 1000 + n + c)
            x = (torch.randn(b, n, c, generator=g) * 4).to(dtype)
            x[0, 3, :5] = torch.tensor([0.0, 1e-7, -6e-8, 3e4, -0.0])  # zero, float16 subnormals, large
            n_out = n - max(1, n // 4)
            dest = torch.cat([torch.randperm(n_out, generator=g), torch.randint(0, n_out, (n - n_out,), generator=g)])
            dest = torch.stack([dest[torch.randperm(n, generator=g)] for _ in range(b)])
            info = (torch.rand(b, n, generator=g) / n).to(dtype)
            info[-1, : n // 2] = 0  # weights of zero: slots whose weight sum is clamped to 1e-12
            size = torch.randint(1, 5, (b, n), generator=g).to(dtype)
            key = f"{str(dtype)[6:]}_{b}_{n}_{c}"
            for pooling in (0, 1, 3):
                out[f"merge{pooling}_{key}"] = merge_tokens_cuda(x, dest, info, size, pooling, n_out)
            base = torch.randn(b, n_out, c, generator=g).to(dtype)
            w, bias = torch.randn(c, generator=g).to(dtype), torch.randn(c, generator=g).to(dtype)
            for k, v in zip(("sum", "norm"), merge_add_norm_cuda(x, dest, info, size, 1, base, w, bias, 1e-6)):
                out[f"add_{k}_{key}"] = v
            metric = torch.randn(b, n, 24, generator=g).to(dtype)
            residual = torch.randn(b, n, c, generator=g).to(dtype)
            attrs = TokenFusionAttrs(r=min(16, max(1, (n // 2 - 1) // 3)), num_protected=1, **MCTF)
            log_size = torch.empty(b, n - attrs.r, dtype=dtype)
            for by_token in (False, True):
                res = token_fusion_norm_cuda(x, metric, info + 1e-3, size, attrs, w, bias, 1e-5, by_token,
                                             residual, log_size)
                for k, v in zip(("x", "size", "dest", "norm"), res):
                    out[f"tf{int(by_token)}_{k}_{key}"] = v
                out[f"tf{int(by_token)}_log_size_{key}"] = log_size.clone()
torch.save(out, sys.argv[1])
print(len(out), "outputs")
if len(sys.argv) > 2:
    base_out = torch.load(sys.argv[2])
    differ = [k for k in base_out if not torch.equal(base_out[k], out[k])]
    print(f"{len(out)} outputs against {sys.argv[2]}: {len(differ)} differ {differ}")
