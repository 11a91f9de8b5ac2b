#!/usr/bin/env bash
# One device run (session 8): tests/gpu/run_all.sh on the working tree (kernels built there, GPU tests,
# kernels.py, gpu_models.py with --fold-other and the profile, compute-sanitizer), then
# benchmarks/sdpa_bias.py, then the base commit's plugins/ (build/ab-base, from `ab_kernels.sh prepare`)
# built in a copy of the tree and timed by kernels.py, all on the same machine. $OUT/all.tgz is rewritten
# after each step, so a run cut short still returns what it finished.
set -uo pipefail
R=/tmp/r; mkdir -p $R/base; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
pack() { tar czf $OUT/all.tgz -C $R . ; cp $R/gpu_models.txt $R/benchmark.txt $OUT/ 2>/dev/null; echo "$1 at ${SECONDS}s"; }
export JUNIT_XML=/tmp/junit.xml VITRT_TOME_SRC=$PWD/.official/ToMe SANITIZE=1 BUILD_TIMEOUT=80 PYTEST_TIMEOUT=70 \
  KERNELS_TIMEOUT=70 MODELS_TIMEOUT=170 SANITIZE_TIMEOUT=35 \
  GPU_MODELS_ARGS="--profile --fold-other --no-previous-path --iters 30" KERNELS_ARGS="--iters 30"
OUT=$R bash tests/gpu/run_all.sh >$R/run_all.log 2>&1; pack "run_all rc=$?"
timeout 40 python3 benchmarks/sdpa_bias.py --out $R/sdpa_bias.json >$R/sdpa_bias.txt 2>&1; pack "sdpa_bias rc=$?"
B=/tmp/base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT $R/base/
(cd $B && PYTHONPATH=$B timeout 80 python3 -m vitrt.compiler.cli plugins build >$R/base/build.txt 2>&1); pack "base build rc=$?"
(cd $B && PYTHONPATH=$B timeout 70 python3 benchmarks/kernels.py --iters 30 --out $R/base/kernels.json >$R/base/benchmark.txt 2>&1)
pack "base kernels rc=$?"
S="--section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis"
timeout 60 ncu --clock-control none --profile-from-start off -k regex:vitrt_tf_merge --launch-count 2 $S \
  python3 .probe/mctf_fwd.py 64 mctf >$R/ncu_merge_b64.txt 2>&1; pack "ncu rc=$?"
grep -a -E "passed|failed" $R/pytest.txt | tail -2; grep -E "SUMMARY|ran|ERROR" $R/sanitize.txt
grep -E "^ *(1|8|64) " $R/sdpa_bias.txt
echo "total ${SECONDS}s"
