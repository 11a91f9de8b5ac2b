#!/usr/bin/env bash
# Device call 3 of session 20: the cluster kernels' errors (tests/_support/kernel_checks.cluster_errors) in every
# case of tests/gpu's test_cluster_on_tensor_cores, beside the float32 reference's own error, to set the test's
# tolerance from what float32 itself costs in each case. Same carried sm_90 fatbins as device.sh.
set -uo pipefail
: "${OUT:?set by the device tool}"; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
timeout 60 python3 - 2>&1 <<'PY' | tee "$OUT/cluster_errors.txt"
from tests._support.kernel_checks import CLUSTER_MMA_CASES, cluster_errors
from vitrt.plugins.lsh_attention.spec import Mode
extra = [(4, 3136, 64, 64, 24, 2, 12, Mode.SCATTERBRAIN), (4, 3136, 64, 64, 24, 2, 12, Mode.LSH),
         (8, 784, 64, 64, 6, 2, 3, Mode.SCATTERBRAIN)]
print("case (b, n, e, dv, c, r, m) mode: tensor cores, CUDA cores (past float16 rounding), float32 reference;"
      " each / row max")
for case in [*CLUSTER_MMA_CASES, *extra]:
    err = cluster_errors(*case, "cuda")
    print(case[:7], case[7].name, *(f"{x:.3g}" for x in err.values()), flush=True)
PY
echo "total ${SECONDS}s"
