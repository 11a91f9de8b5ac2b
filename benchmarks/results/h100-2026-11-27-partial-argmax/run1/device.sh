#!/usr/bin/env bash
# Session 10, device call 1: Nsight Compute on the TokenFusion kernels (batch 1 and 64, DeiT-S MCTF shapes)
# and the Scatterbrain cluster kernel, full sections and per-SASS-line source counters, to see where each
# kernel's time goes before changing them.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1; SECONDS=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv >$OUT/env.txt 2>&1
ncu --version >>$OUT/env.txt 2>&1
P="python3 tests/gpu/profile_kernels.py"
N="ncu --clock-control none --profile-from-start off"
timeout 150 $N -k 'regex:vitrt_(tf_(scores|match|merge)|sb_cluster)' --set full $P >$OUT/ncu_full.txt 2>&1
echo "full rc=$? at ${SECONDS}s"
for k in vitrt_tf_scores_mma_f16 vitrt_tf_match vitrt_tf_merge384_f16 vitrt_tf_scores_mma64_f16; do
  timeout 60 $N -k $k --launch-count 1 --section SourceCounters --section WarpStateStats --page source \
    --print-source sass --csv $P >$OUT/src_$k.csv 2>&1
  echo "$k rc=$? at ${SECONDS}s"
done
gzip -9 $OUT/*.csv
echo "total ${SECONDS}s"
