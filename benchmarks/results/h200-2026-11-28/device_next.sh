#!/usr/bin/env bash
# PREPARED, NOT RUN: the next GPU session's first device call. Programmatic dependent launch (run6-pdl/) was
# timed in one pass each way with 20 runs per row; two kernel rows went the other way there (TokenFusion at
# batch 8 with a 384-channel metric 1.12x, Scatterbrain at batch 32 1.02x). This times it three times each way,
# alternating, with 50 runs per row, after every GPU test, so that the choice rests on more than one pass.
# At most 9 minutes by the limits below; about 5 expected from run1 and run6-pdl's step times (the start is extra).
#
# Before the call, on the workstation (the fatbins must match the tree's sources):
#   VITRT_CUDA_ARCHS=sm_90 vitrt plugins build --out build/plugins-sm90
# The call: run(command="bash benchmarks/results/h200-2026-11-28/device_next.sh", timeout_s=560,
#   carry=["build/plugins-sm90"])
set -uo pipefail
: "${OUT:?set by the device tool}"; R=/tmp/r; rm -rf $R; mkdir -p $R; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
step() { tar czf "$OUT/all.tgz" -C $R .; echo "$1 rc=$2 at ${SECONDS}s"; }
mkdir -p build/plugins && cp build/plugins-sm90/* build/plugins/
{ nvidia-smi -L; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >"$R/env.txt" 2>&1
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/gpu >"$R/pytest.txt" 2>&1; step pytest $?
tail -1 "$R/pytest.txt"
for pass in 1 2 3; do
  for pdl in 1 0; do
    VITRT_PROGRAMMATIC_LAUNCH=$pdl timeout 45 python3 benchmarks/kernels.py --iters 50 \
      --out "$R/kernels_p${pass}_pdl${pdl}.json" >"$R/kernels_p${pass}_pdl${pdl}.txt" 2>&1
    step "kernels pass $pass pdl $pdl" $?
    VITRT_PROGRAMMATIC_LAUNCH=$pdl timeout 35 python3 benchmarks/gpu_models.py --skip-t2t --batches 1 8 \
      --no-previous-path --iters 50 --out "$R/models_p${pass}_pdl${pdl}.json" >"$R/models_p${pass}_pdl${pdl}.txt" 2>&1
    step "models pass $pass pdl $pdl" $?
  done
done
for f in "$R"/kernels_p*_pdl*.txt; do echo "== $f"; grep -E "^(token_fusion|scatterbrain) +float16" "$f"; done
for f in "$R"/models_p*_pdl*.txt; do echo "== $f"; grep -E "^(timm|vitrt)" "$f" | grep -v bias; done
echo "total ${SECONDS}s"
