#!/usr/bin/env bash
# Device call 2 of session 20 (2026-11-28), after call 1 (device.sh): the GPU tests with a first, wider tolerance
# for the cluster kernel on tensor cores (replaced after call 3) and each case's measured error; kernels.py and
# gpu_models.py (DeiT-S and T2T-ViT-t-14, top kernels per model) with the launcher's key splits for
# attention_info from q and k (cuda.info_qk_key_splits, set from call 1's figures); the DeiT-S rows again on
# build/ab-base = HEAD's plugins/ (one split), same machine. Same carried sm_90 fatbins as call 1.
#   bash tests/gpu/ab_kernels.sh prepare HEAD   (before the change to cuda.py is committed)
#   run(command="bash benchmarks/results/h200-2026-11-28/device2.sh", timeout_s=330, carry=[the four fatbin
#       files, "build/ab-base"])
set -uo pipefail
: "${OUT:?set by the device tool}"; R=/tmp/r; rm -rf $R; mkdir -p "$R/base"; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
step() { tar czf "$OUT/all.tgz" -C $R .; echo "$1 rc=$2 at ${SECONDS}s"; }
{ nvidia-smi -L; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >"$R/env.txt" 2>&1

timeout 90 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu >"$R/pytest.txt" 2>&1
step pytest $?; tail -1 "$R/pytest.txt"
timeout 40 python3 - >"$R/cluster_errors.txt" 2>&1 <<'PY'
from tests._support.kernel_checks import CLUSTER_MMA_CASES, cluster_errors
from vitrt.plugins.lsh_attention.spec import Mode
extra = [(4, 3136, 64, 64, 24, 2, 12, Mode.SCATTERBRAIN), (4, 3136, 64, 64, 24, 2, 12, Mode.LSH),
         (8, 784, 64, 64, 6, 2, 3, Mode.SCATTERBRAIN)]
print("case (b, n, e, dv, c, r, m, mode): error past float16 rounding / row max, tensor cores, CUDA cores")
for case in [*CLUSTER_MMA_CASES, *extra]:
    err = cluster_errors(*case, "cuda")
    print(case[:7], case[7].name, f"{err['tensor cores']:.3g}", f"{err['CUDA cores']:.3g}", flush=True)
PY
step "cluster errors" $?; cat "$R/cluster_errors.txt"
timeout 40 python3 benchmarks/kernels.py --iters 30 --out "$R/kernels.json" >"$R/kernels.txt" 2>&1; step kernels $?
timeout 90 python3 benchmarks/gpu_models.py --profile --no-previous-path --iters 30 --out "$R/models.json" \
  >"$R/models.txt" 2>&1; step "models (profiled)" $?

B=/tmp/vitrt-base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT "$R/base/"
mkdir -p $B/build/plugins && cp build/plugins/*.fatbin* $B/build/plugins/
(cd $B && PYTHONPATH=$B timeout 40 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 \
  --out "$R/base/models.json") >"$R/base/models.txt" 2>&1; step "base models" $?

grep -h -E "^(token_fusion|attention_info|scatterbrain) +float16" "$R/kernels.txt"
grep -h -A3 "keys split between warps" "$R/kernels.txt"
grep -h -E "^(timm|vitrt)" "$R/models.txt" "$R/base/models.txt" | grep -v bias
grep -h -A13 "top kernels, .* B=1 " "$R/models.txt" | head -60
echo "total ${SECONDS}s"
