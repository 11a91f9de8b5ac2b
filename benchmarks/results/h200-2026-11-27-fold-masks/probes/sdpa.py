"""SDPA at DeiT-S MCTF's token counts: no mask vs proportional attention's [B,1,1,N] mask, per backend."""
import sys, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
sys.path.insert(0, ".")
from vitrt.deploy.cuda_timing import capture_graph, event_median_ms
NS = [197 - 16 * i for i in range(12)]
H, E = 6, 64
def layer_inputs(b, n, e=E, mask=True):
    q, k, v = (torch.randn(b, H, n, e, device="cuda", dtype=torch.float16) for _ in range(3))
    m = torch.rand(b, 1, 1, n, device="cuda").mul(3).add(1).log().half() if mask else None
    return q, k, v, m
def run(b, backends, mask, e=E, strided=False):
    ins = []
    for n in NS:
        if strided:  # q k v as views of a [B, N, 3, H, E] projection, as the model has them
            qkv = torch.randn(b, n, 3, H, e, device="cuda", dtype=torch.float16).permute(2, 0, 3, 1, 4)
            m = torch.rand(b, 1, 1, n, device="cuda").mul(3).add(1).log().half() if mask else None
            ins.append((qkv[0], qkv[1], qkv[2], m))
        else:
            ins.append(layer_inputs(b, n, e, mask))
    def fwd():
        with sdpa_kernel(backends):
            for q, k, v, m in ins:
                F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.125)
    try:
        fwd(); torch.cuda.synchronize()
        g, _ = capture_graph(fwd)
        return event_median_ms(g.replay, 50, warmup=10) * 1000
    except Exception as exc:
        return f"fail {type(exc).__name__}: {str(exc)[:80]}"
print(torch.cuda.get_device_name(), torch.__version__)
ALL = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
for b in (1, 8, 64):
    base = run(b, ALL, False)
    print(f"B={b} 12 layers N=197..21 us per forward (graph):  default no-mask {base:.1f}")
    for label, backends, mask, e, strided in [
        ("default, mask", ALL, True, E, False),
        ("default, mask, strided qkv", ALL, True, E, True),
        ("default, no mask, strided qkv", ALL, False, E, True),
        ("cudnn, no mask", [SDPBackend.CUDNN_ATTENTION], False, E, False),
        ("cudnn, mask", [SDPBackend.CUDNN_ATTENTION], True, E, False),
        ("flash, no mask", [SDPBackend.FLASH_ATTENTION], False, E, False),
        ("efficient, no mask", [SDPBackend.EFFICIENT_ATTENTION], False, E, False),
        ("efficient, mask", [SDPBackend.EFFICIENT_ATTENTION], True, E, False),
        ("default, E=72 no mask", ALL, False, 72, False),
        ("default, E=80 no mask", ALL, False, 80, False),
    ]:
        t = run(b, backends, mask, e, strided)
        print(f"  {label:34s} {t if isinstance(t, str) else f'{t:8.1f} us  x{t / base:.2f}'}")
    # dense reference: 12 x N=197
    NS_save = NS[:]
    NS[:] = [197] * 12
    print(f"  dense 12 x 197, no mask: {run(b, ALL, False):.1f} us; mask: {run(b, ALL, True):.1f} us")
    NS[:] = NS_save
