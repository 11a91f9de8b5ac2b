"""Emulated outputs of the TokenFusion kernels on fixed cases, saved to argv[1]; run in two trees (this one and
a worktree of the base commit) and compare with argv[2] when given: every output must be equal bit for bit."""
import sys, torch
from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.token_fusion.cuda import fusion_scores_cuda, token_fusion_cuda, bipartite_matching_cuda
from vitrt.plugins.token_fusion.spec import TokenFusionAttrs
sys.path.insert(0, ".")
from tests._support.kernel_checks import MCTF, TOME
out = {}
with emulated_kernels():
    for (b, n, cm, prot, pre) in [(1, 197, 384, 1, MCTF), (2, 61, 64, 0, TOME), (3, 130, 136, 2, MCTF), (1, 25, 8, 0, MCTF),
                                   (2, 197, 64, 1, TOME), (1, 256, 128, 3, MCTF), (2, 71, 392, 0, MCTF)]:
        g = torch.Generator().manual_seed(b * 1000 + n + cm)
        metric = torch.randn(b, n, cm + 8, generator=g).half()[..., :cm]
        info = (torch.rand(b, n, generator=g) / n + 1e-4).half()
        size = torch.randint(1, 4, (b, n), generator=g).half()
        x = torch.randn(b, n, 40, generator=g).half()
        attrs = TokenFusionAttrs(r=min(16, max(1, (n // 2 - prot) // 3)), num_protected=prot, **pre)
        for t in (32, 64):
            out[f"scores{t}_{b}_{n}_{cm}"] = fusion_scores_cuda(metric, info, size, attrs, mma_tile=t)
        for fm in (False, True) if cm <= 128 and n <= 256 else (False,):
            for k, v in zip(("x", "size", "dest"), token_fusion_cuda(x, metric, info, size, attrs, fused_match=fm)):
                out[f"tf{fm}_{k}_{b}_{n}_{cm}"] = v
        s = out[f"scores32_{b}_{n}_{cm}"]
        out[f"match_{b}_{n}_{cm}"] = bipartite_matching_cuda(s, attrs.r, bool(attrs.bidirectional))
        out[f"match1_{b}_{n}_{cm}"] = bipartite_matching_cuda(s, attrs.r, False)
    # ties and large N for the matching
    for n in (6, 197, 1100):
        na, nb = (n + 1) // 2, n // 2
        s = torch.randint(0, 4, (2, na, nb), generator=torch.Generator().manual_seed(n)).float()
        for bd in (True, False):
            out[f"ties_{n}_{bd}"] = bipartite_matching_cuda(s, max(1, n // 5), bd)
torch.save(out, sys.argv[1])
print(len(out), "outputs")
if len(sys.argv) > 2:
    base = torch.load(sys.argv[2])
    differ = [k for k in base if not torch.equal(base[k], out[k])]
    print(f"{len(out)} outputs against {sys.argv[2]}: {len(differ)} differ {differ}")
