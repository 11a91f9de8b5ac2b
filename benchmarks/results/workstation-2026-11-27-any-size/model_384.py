"""t2t_vit_t_14 + Scatterbrain from 384 x 384 pixels (9216 tokens in the first token attention: the sort in
tiles) on the reference path and on the kernels under the CPU emulator: their logits' cosine and largest
difference, and the kernels launched. Run from the repository root."""

import time

import torch

import vitrt
from vitrt.plugins.cuda_emulation import emulated_kernels
from vitrt.plugins.cuda_launcher import load_module

torch.manual_seed(0)
m = vitrt.create_model("t2t_vit_t_14", attention="scatterbrain", img_size=384).eval()
x = torch.randn(1, 3, 384, 384)
with torch.no_grad():
    t0 = time.time()
    ref = m(x)
    t1 = time.time()
    with emulated_kernels():
        got = m(x)
        launches = dict(load_module("scatterbrain").launches)
    t2 = time.time()
cos = torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0)
print(
    f"reference {t1 - t0:.1f}s, kernels on the emulator {t2 - t1:.1f}s; cosine {float(cos):.6f}, "
    f"max abs {float((ref - got).abs().max()):.3g} of {float(ref.abs().max()):.3g}; "
    f"top1 {int(ref.argmax())} {int(got.argmax())}"
)
print({k: v for k, v in launches.items()})
