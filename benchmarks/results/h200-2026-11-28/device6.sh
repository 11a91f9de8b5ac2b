#!/usr/bin/env bash
# Device call 6 of session 20: programmatic dependent launch (every kernel's VITRT_KERNEL_PROLOGUE waits for the
# kernel before it; cuda_launcher launches sm_90+ cubins with cuLaunchKernelEx and the programmatic stream
# serialization attribute). Every GPU test and memcheck with it on; kernels.py and gpu_models.py (batch 1 and 8)
# with it on and off ($VITRT_PROGRAMMATIC_LAUNCH=0) on the same machine, the same tree. sm_90 fatbins built on
# the workstation travel in build/plugins-sm90.
#   run(command="bash benchmarks/results/h200-2026-11-28/device6.sh", timeout_s=215, carry=["build/plugins-sm90"])
set -uo pipefail
: "${OUT:?set by the device tool}"; R=/tmp/r; rm -rf $R; mkdir -p $R/off; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
step() { tar czf "$OUT/all.tgz" -C $R .; echo "$1 rc=$2 at ${SECONDS}s"; }
mkdir -p build/plugins && cp build/plugins-sm90/* build/plugins/
nvidia-smi -L >"$R/env.txt" 2>&1
timeout 50 python3 -m pytest -q -p no:cacheprovider -x tests/gpu >"$R/pytest.txt" 2>&1; step pytest $?
tail -1 "$R/pytest.txt"
timeout 30 python3 benchmarks/kernels.py --iters 20 --out "$R/kernels.json" >"$R/kernels.txt" 2>&1; step kernels $?
VITRT_PROGRAMMATIC_LAUNCH=0 timeout 30 python3 benchmarks/kernels.py --iters 20 --out "$R/off/kernels.json" \
  >"$R/off/kernels.txt" 2>&1; step "kernels off" $?
timeout 35 python3 benchmarks/gpu_models.py --batches 1 8 --no-previous-path --iters 20 --out "$R/models.json" \
  >"$R/models.txt" 2>&1; step models $?
VITRT_PROGRAMMATIC_LAUNCH=0 timeout 35 python3 benchmarks/gpu_models.py --batches 1 8 --no-previous-path \
  --iters 20 --out "$R/off/models.json" >"$R/off/models.txt" 2>&1; step "models off" $?
timeout 25 compute-sanitizer --tool memcheck --report-api-errors no --print-limit 20 python3 tests/gpu/sanitize.py \
  >"$R/sanitize_memcheck.txt" 2>&1; step memcheck $?; tail -1 "$R/sanitize_memcheck.txt"
grep -h -E "^(token_fusion|attention_info|scatterbrain) +float16" "$R/kernels.txt" "$R/off/kernels.txt"
grep -h -E "^(timm|vitrt)|^check" "$R/models.txt" "$R/off/models.txt" | grep -v bias
echo "total ${SECONDS}s"
