#!/usr/bin/env bash
# One device run: the base kernels (commit 2301438's token_fusion.cu + cuda_common.cuh, this session's
# first device run) built in a copy of the tree, then tests/gpu/run_all.sh on HEAD, then the kernel and
# DeiT-S model benchmarks on the base kernels, all on the same machine. Results: $OUT/all.tgz (+ key files).
set -uo pipefail
R=/tmp/r; BASE=/tmp/base; mkdir -p $R $R/base
SECONDS=0
rm -rf $BASE && cp -a . $BASE && cp .ab/token_fusion.cu $BASE/plugins/token_fusion/ && cp .ab/cuda_common.cuh $BASE/plugins/
(cd $BASE && PYTHONPATH=$BASE timeout 120 python3 -m vitrt.compiler.cli plugins build >$R/base/build.txt 2>&1)
echo "base build rc=$? at ${SECONDS}s"
export JUNIT_XML=/tmp/junit.xml VITRT_TOME_SRC=$PWD/.official/ToMe SANITIZE=1 BUILD_TIMEOUT=90 PYTEST_TIMEOUT=90 \
  KERNELS_TIMEOUT=80 MODELS_TIMEOUT=200 SANITIZE_TIMEOUT=30 GPU_MODELS_ARGS="--profile --iters 30" KERNELS_ARGS="--iters 30"
OUT=$R bash tests/gpu/run_all.sh >$R/run_all.log 2>&1
echo "run_all rc=$? at ${SECONDS}s"
cp $R/gpu_models.txt $OUT/ 2>/dev/null
(cd $BASE && PYTHONPATH=$BASE timeout 70 python3 benchmarks/kernels.py --iters 30 --out $R/base/kernels.json >$R/base/benchmark.txt 2>&1)
echo "base kernels rc=$? at ${SECONDS}s"
unset VITRT_TOME_SRC
(cd $BASE && PYTHONPATH=$BASE timeout 100 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 \
  --profile --out $R/base/gpu_models.json >$R/base/gpu_models.txt 2>&1)
echo "base models rc=$? at ${SECONDS}s"
tar czf $OUT/all.tgz -C $R .
cp $R/benchmark.txt $R/pytest.txt $R/sanitize.txt $OUT/ 2>/dev/null
cp $R/base/benchmark.txt $OUT/benchmark_base.txt; cp $R/base/gpu_models.txt $OUT/gpu_models_base.txt
grep -a -E "passed|failed" $R/pytest.txt | tail -2; cat $R/sanitize.txt | grep -E "SUMMARY|ran"
echo "total ${SECONDS}s"
