#!/usr/bin/env bash
# Device run 2 (session 9): tests/gpu/run_all.sh on the working tree (fatbins carried: GPU tests, kernels.py,
# sdpa_bias.py, gpu_models.py with the profile and official ToMe, compute-sanitizer), then .probe/sweep.py
# (one-launch vs split scores + matching over batches), then the DeiT-S rows of gpu_models.py on HEAD's
# plugins/ (build/ab-base) on the same machine. $OUT/all.tgz is rewritten after each step.
set -uo pipefail
R=/tmp/r9; rm -rf $R; mkdir -p $R/base; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
pack() { tar czf $OUT/all.tgz -C $R . ; echo "$1 at ${SECONDS}s"; }
export JUNIT_XML=/tmp/junit.xml VITRT_TOME_SRC=$PWD/.official/ToMe SANITIZE=1 BUILD_TIMEOUT=60 PYTEST_TIMEOUT=90 \
  KERNELS_TIMEOUT=60 MODELS_TIMEOUT=200 SANITIZE_TIMEOUT=45 \
  GPU_MODELS_ARGS="--profile --no-previous-path --iters 30" KERNELS_ARGS="--iters 30"
OUT=$R bash tests/gpu/run_all.sh >$R/run_all.log 2>&1; pack "run_all rc=$?"
timeout 60 python3 .probe/sweep.py >$R/sweep.txt 2>&1; pack "sweep rc=$?"
B=/tmp/base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT $R/base/
mkdir -p $B/build/plugins && cp build/ab-base/fatbins/* $B/build/plugins/ && cp build/plugins/scatterbrain.fatbin* $B/build/plugins/
(cd $B && PYTHONPATH=$B timeout 80 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out $R/base/models.json >$R/base/models.txt 2>&1)
pack "base models rc=$?"
grep -a -E "passed|failed" $R/pytest.txt | tail -1; grep -E "SUMMARY|ran" $R/sanitize.txt
grep -E "^ *(1|8|64) " $R/sdpa_bias.txt
grep -h -E "^(token_fusion|attention_info) +float16" $R/benchmark.txt
cat $R/sweep.txt
grep -h -E "^(timm|official|vitrt)" $R/gpu_models.txt | grep -v bias; grep -h -E "^(timm|official|vitrt)" $R/base/models.txt
echo "total ${SECONDS}s"
