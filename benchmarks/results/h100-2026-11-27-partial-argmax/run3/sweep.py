"""Fused scores+match vs split launches, TokenFusion N=197 C=384 Cm=64 r=16 MCTF fp16, graph us per call,
over batches; plus per-kernel us (profiler) of each path at a few batches."""
import sys, torch
sys.path.insert(0, ".")
from benchmarks.kernels import graph_ms, kernel_breakdown
from vitrt.plugins.token_fusion.cuda import FusionDims, enqueue, workspace_bytes
from vitrt.plugins.token_fusion.spec import Pooling, TokenFusionAttrs
n, c, cm, r = 197, 384, 64, 16
attrs = TokenFusionAttrs(r=r, tau_sim=1.0, tau_info=20.0, tau_size=40.0, bidirectional=1, pooling=int(Pooling.ATTN_SIZE))
print("B fused_us split_us fused/split")
for batch in (1, 2, 4, 8, 16, 24, 32, 40, 48, 64, 96, 132, 200, 264):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(batch, n, c, device="cuda", generator=g).half()
    metric = torch.randn(batch, n, cm, device="cuda", generator=g).half()
    info = (torch.rand(batch, n, device="cuda", generator=g) / n + 1e-4).half()
    size = torch.ones(batch, n, device="cuda", dtype=torch.float16)
    d = FusionDims(batch, n, c, cm, r)
    x_f = x.new_empty(batch, n - r, c); size_f = x.new_empty(batch, n - r)
    dest = torch.empty(batch, n, dtype=torch.int64, device="cuda")
    work = torch.empty(workspace_bytes(d), dtype=torch.uint8, device="cuda")
    def run(fm):
        def k():
            enqueue(x.data_ptr(), metric.data_ptr(), info.data_ptr(), size.data_ptr(), x_f.data_ptr(), size_f.data_ptr(),
                    dest.data_ptr(), work.data_ptr(), d, attrs, "float16", torch.cuda.current_stream().cuda_stream, fused_match=fm)
        return k
    f, s = graph_ms(run(True), 30) * 1e3, graph_ms(run(False), 30) * 1e3
    print(f"{batch} {f:.1f} {s:.1f} {f / s:.3f}", flush=True)
    if batch in (1, 8, 32, 64):
        for fm in (True, False):
            print("   ", "fused" if fm else "split", {k[:26]: round(v, 1) for k, v in kernel_breakdown(run(fm)).items()}, flush=True)
