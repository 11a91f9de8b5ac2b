#!/usr/bin/env bash
# Device call 5 of session 20, on an H100 (the GPU issue 15's targets were set on): the tree as committed
# (4f28525): every GPU test, kernels.py, gpu_models.py (DeiT-S and T2T-ViT-t-14 at batch 1, 8 and 64). The sm_90
# fatbins built on the workstation travel in build/plugins-sm90 (carried) and are put in place here.
#   run(command="bash benchmarks/results/h200-2026-11-28/device5.sh", kind="nvidia-h100-x1", timeout_s=240,
#       carry=["build/plugins-sm90"])
set -uo pipefail
: "${OUT:?set by the device tool}"; R=/tmp/r; rm -rf $R; mkdir -p $R; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
step() { tar czf "$OUT/all.tgz" -C $R .; echo "$1 rc=$2 at ${SECONDS}s"; }
mkdir -p build/plugins && cp build/plugins-sm90/* build/plugins/
{ nvidia-smi -L; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >"$R/env.txt" 2>&1
timeout 90 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu >"$R/pytest.txt" 2>&1; step pytest $?
tail -1 "$R/pytest.txt"
timeout 45 python3 benchmarks/kernels.py --iters 30 --out "$R/kernels.json" >"$R/kernels.txt" 2>&1; step kernels $?
timeout 80 python3 benchmarks/gpu_models.py --no-previous-path --iters 30 --out "$R/models.json" \
  >"$R/models.txt" 2>&1; step models $?
cat "$R/env.txt"
grep -h -E "^(token_fusion|attention_info|scatterbrain) +float16" "$R/kernels.txt"
grep -h -A3 "keys split between warps" "$R/kernels.txt"
grep -h -E "^(timm|vitrt)|^check" "$R/models.txt" | grep -v bias
echo "total ${SECONDS}s"
