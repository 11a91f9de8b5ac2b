"""attention_info from q and k on the CPU emulator at fixed shapes, saved to argv[1]; run in this tree and in a
worktree of the base commit, and compare with argv[2] when given: every output must be equal bit for bit."""
import sys, torch
sys.path.insert(0, ".")
from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.token_fusion.cuda import attention_info_qk_cuda
from tests._support.kernel_checks import qk_inputs
out = {}
with emulated_kernels():
    for (b, h, n, e) in [(2, 6, 197, 64), (1, 3, 61, 32), (1, 2, 256, 128), (3, 1, 9, 64)]:
        for layout in ("qkv", "contiguous"):
            try:
                q, k = qk_inputs(b, h, n, e, torch.float16, "cpu", layout)
            except Exception as exc:
                print("skip", layout, exc); continue
            g = torch.Generator().manual_seed(n)
            size = torch.randint(1, 4, (b, n), generator=g).half()
            out[f"{b}_{h}_{n}_{e}_{layout}"] = attention_info_qk_cuda(q, k, size, e ** -0.5)
            out[f"{b}_{h}_{n}_{e}_{layout}_nosize"] = attention_info_qk_cuda(q, k, None, e ** -0.5)
torch.save(out, sys.argv[1])
if len(sys.argv) > 2:
    base = torch.load(sys.argv[2])
    print(len(out), "outputs;", [k for k in base if not torch.equal(base[k], out[k])], "differ")
