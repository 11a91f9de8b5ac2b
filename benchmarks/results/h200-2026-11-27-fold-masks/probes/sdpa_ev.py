import sys, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
sys.path.insert(0, ".")
from vitrt.deploy.cuda_timing import capture_graph, event_median_ms
NS = [197 - 16 * i for i in range(12)]
H = 6
ALL = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
def run(b, backends, e, ev, mask=False, proj=False):
    ins = []
    for n in NS:
        if proj:  # views of one [B, N, H*(2e+ev)]-like projection: q,k [B,N,2,H,e], v [B,N,H,ev]
            qk = torch.randn(b, n, 2, H, e, device="cuda", dtype=torch.float16).permute(2, 0, 3, 1, 4)
            v = torch.randn(b, n, H, ev, device="cuda", dtype=torch.float16).transpose(1, 2)
            q, k = qk[0], qk[1]
        else:
            q, k = (torch.randn(b, H, n, e, device="cuda", dtype=torch.float16) for _ in range(2))
            v = torch.randn(b, H, n, ev, device="cuda", dtype=torch.float16)
        m = torch.rand(b, 1, 1, n, device="cuda").mul(3).add(1).log().half() if mask else None
        ins.append((q, k, v, m))
    def fwd():
        with sdpa_kernel(backends):
            return [F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.125) for q, k, v, m in ins]
    try:
        outs = fwd(); torch.cuda.synchronize()
        o = outs[0]
        lay = f"out {tuple(o.shape)} stride {o.stride()} BNHE-contig={o.transpose(1, 2).is_contiguous()}"
        g, _ = capture_graph(fwd)
        return f"{event_median_ms(g.replay, 50, warmup=10) * 1000:8.1f} us  {lay}"
    except Exception as exc:
        return f"fail {type(exc).__name__}: {str(exc)[:200]}"
print(torch.cuda.get_device_name(), torch.__version__, "cudnn", torch.backends.cudnn.version())
for b in (1, 8, 64):
    print(f"B={b}")
    for label, be in (("default", ALL), ("cudnn", [SDPBackend.CUDNN_ATTENTION]), ("efficient", [SDPBackend.EFFICIENT_ATTENTION]), ("flash", [SDPBackend.FLASH_ATTENTION])):
        for e, ev, mask, proj in ((64, 64, False, True), (64, 64, True, True), (64, 72, False, True), (64, 80, False, True), (64, 72, False, False), (72, 72, False, True), (80, 80, False, True)):
            print(f"  {label:9s} E={e} Ev={ev} mask={int(mask)} proj-views={int(proj)}: {run(b, be, e, ev, mask, proj)}")
