#!/usr/bin/env bash
# Device run 4 (session 8): the attention_info_qk kernel at 8 warps against HEAD's (4 warps), same machine:
# build, tests/gpu, memcheck + racecheck + synccheck of tests/gpu/sanitize.py, then tests/gpu/ab_kernels.sh run
# (kernels.py and the DeiT-S rows of gpu_models.py on the tree and on build/ab-base = HEAD's plugins/).
set -uo pipefail
R=/tmp/r; mkdir -p $R; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
pack() { tar czf $OUT/all.tgz -C $R . ; echo "$1 at ${SECONDS}s"; }
timeout 60 python3 -m vitrt.compiler.cli plugins build >$R/build.txt 2>&1; pack "build rc=$?"
timeout 60 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu >$R/pytest.txt 2>&1; pack "pytest rc=$?"
for tool in memcheck racecheck synccheck; do
  timeout 40 compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 tests/gpu/sanitize.py 2>&1 | tail -3 >>$R/sanitize.txt
done; pack sanitize
OUT=$R/ab ITERS=30 AB_TIMEOUT=80 bash tests/gpu/ab_kernels.sh run >$R/ab.log 2>&1; pack "ab rc=$?"
tail -1 $R/pytest.txt; grep -E "SUMMARY" $R/sanitize.txt
grep -h -E "attention_info float16|token_fusion float16" $R/ab/kernels.txt $R/ab/kernels_base.txt
grep -h -E "^vitrt DeiT" $R/ab/models.txt $R/ab/models_base.txt
echo "total ${SECONDS}s"
