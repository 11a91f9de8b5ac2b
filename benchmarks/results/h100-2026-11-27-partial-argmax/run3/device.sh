#!/usr/bin/env bash
# Session 10, device call 3 (final): tests/gpu/run_all.sh on the working tree (fatbins carried: GPU tests,
# kernels.py, sdpa_bias.py, gpu_models.py with the profile and official ToMe, compute-sanitizer), then the
# DeiT-S rows of gpu_models.py and kernels.py on 5842d75's plugins/ (build/ab-base, sm_90 fatbin), then
# .probe/sweep.py (one launch vs split scores + matching over batches), then Nsight Compute source counters
# of attention_info and the merge at batch 64 for the next session. $OUT/all.tgz is rewritten after each step.
set -uo pipefail
R=/tmp/r10; rm -rf $R; mkdir -p $R/base; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
pack() { tar czf $OUT/all.tgz -C $R . ; echo "$1 at ${SECONDS}s"; }
export JUNIT_XML=/tmp/junit.xml VITRT_TOME_SRC=$PWD/.official/ToMe SANITIZE=1 BUILD_TIMEOUT=60 PYTEST_TIMEOUT=100 \
  KERNELS_TIMEOUT=50 MODELS_TIMEOUT=150 SANITIZE_TIMEOUT=30 \
  GPU_MODELS_ARGS="--profile --no-previous-path --iters 20" KERNELS_ARGS="--iters 30"
OUT=$R bash tests/gpu/run_all.sh >$R/run_all.log 2>&1; pack "run_all rc=$?"
B=/tmp/base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT $R/base/
cp build/ab-base/kernels.py $B/benchmarks/kernels.py  # the base's own: the tree's calls the new partial arg-maxima
mkdir -p $B/build/plugins && cp build/ab-base/fatbins/* build/plugins/scatterbrain.fatbin* $B/build/plugins/
(cd $B && PYTHONPATH=$B timeout 60 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 20 \
  --out $R/base/models.json >$R/base/models.txt 2>&1); pack "base models rc=$?"
timeout 40 python3 .probe/sweep.py >$R/sweep.txt 2>&1; pack "sweep rc=$?"
(cd $B && PYTHONPATH=$B timeout 45 python3 benchmarks/kernels.py --iters 30 --out $R/base/kernels.json \
  >$R/base/kernels.txt 2>&1); pack "base kernels rc=$?"
S="--section SpeedOfLight --section WarpStateStats --section InstructionStats --section SchedulerStats --section SourceCounters"
timeout 25 ncu --clock-control none --profile-from-start off -k 'regex:vitrt_tf_(attention_info_qk|merge384)' \
  --launch-skip 1 --launch-count 2 $S --page source --print-source sass --csv python3 tests/gpu/profile_kernels.py \
  >$R/ncu_src.csv 2>&1; gzip -9 $R/ncu_src.csv; pack "ncu rc=$?"
grep -a -E "passed|failed" $R/pytest.txt | tail -1; grep -a FAILED $R/pytest.txt | head -5; grep -E "SUMMARY|ran" $R/sanitize.txt
grep -h -E "^(token_fusion|attention_info|scatterbrain) +float16" $R/benchmark.txt $R/base/kernels.txt
grep -h -A9 "per-kernel" $R/benchmark.txt | grep "token_fusion"
grep -h -A3 "SM cycles" $R/benchmark.txt $R/base/kernels.txt
cat $R/sweep.txt | grep -v "^ "
grep -h -E "^(timm|official|vitrt)" $R/gpu_models.txt | grep -v bias; grep -h -E "^(timm|official|vitrt)" $R/base/models.txt
echo "total ${SECONDS}s"
