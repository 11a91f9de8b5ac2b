import sys
sys.path.insert(0, ".")
import torch
from vitrt import create_model
b = int(sys.argv[1])
m = create_model("deit_small_patch16_224", fusion=sys.argv[2]).eval().cuda().half()
x = torch.randn(b, 3, 224, 224, device="cuda", dtype=torch.float16)
with torch.inference_mode():
    for _ in range(3): m(x)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    m(x)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
