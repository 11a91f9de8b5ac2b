#!/usr/bin/env bash
# Device call 4 of session 20: every GPU test with check_cluster_tensor_cores' final rule (1e-5 of the row
# maximum plus twice the float32 reference's own error) and the launcher's key splits. Same carried sm_90
# fatbins as device.sh.
set -uo pipefail
: "${OUT:?set by the device tool}"; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
timeout 120 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | tee "$OUT/pytest.txt" | tail -15
echo "total ${SECONDS}s"
