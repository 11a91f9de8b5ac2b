import sys
sys.path.insert(0, "."); sys.path.insert(0, "benchmarks")
import torch
from gpu_models import timm_models, deit_rows, top_kernels, DTYPE
dense_timm, _, _ = timm_models()
rows = dict(deit_rows(dense_timm, None))
for label in ("timm DeiT-S dense (SDPA)", "vitrt DeiT-S dense", "vitrt DeiT-S mctf"):
    m = rows[label].cuda().to(DTYPE)
    for b in (1, 64):
        print(f"top kernels, {label} B={b}")
        for name, us, share in top_kernels(m, b, top=16):
            print(f"  {us:9.1f} {100*share:5.1f}%  {name}")
