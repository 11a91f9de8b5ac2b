#!/usr/bin/env bash
# Device run (session 9): the working tree (one-launch scores + matching, 64-tile tensor-core scores,
# attention_info with two key groups in flight) against HEAD's plugins/ (build/ab-base), same machine.
# Fatbins come prebuilt (carried): build/plugins for the tree, build/ab-base/fatbins for the base.
# Steps: tests/gpu, compute-sanitizer (memcheck, racecheck, synccheck) of tests/gpu/sanitize.py,
# kernels.py on tree and base, gpu_models.py DeiT-S rows on tree (with profile) and base.
# $OUT/all.tgz is rewritten after each step, so a run cut short still returns what it finished.
set -uo pipefail
R=/tmp/r; mkdir -p $R/base; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_TOME_SRC=$PWD/.official/ToMe
pack() { tar czf $OUT/all.tgz -C $R . ; echo "$1 at ${SECONDS}s"; }
{ nvidia-smi; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >$R/env.txt 2>&1
timeout 60 python3 -m vitrt.compiler.cli plugins build >$R/build.txt 2>&1; pack "build rc=$?"
timeout 90 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu >$R/pytest.txt 2>&1; pack "pytest rc=$?"
for tool in memcheck racecheck synccheck; do
  timeout 45 compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 tests/gpu/sanitize.py 2>&1 | tail -3 >>$R/sanitize.txt
done; pack sanitize
timeout 90 python3 benchmarks/kernels.py --iters 30 --out $R/kernels.json >$R/kernels.txt 2>&1; pack "kernels rc=$?"
B=/tmp/base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT $R/base/
mkdir -p $B/build/plugins && cp build/ab-base/fatbins/* $B/build/plugins/ && cp build/plugins/scatterbrain.fatbin* $B/build/plugins/
(cd $B && PYTHONPATH=$B timeout 60 python3 -m vitrt.compiler.cli plugins build >$R/base/build.txt 2>&1); pack "base build rc=$?"
(cd $B && PYTHONPATH=$B timeout 90 python3 benchmarks/kernels.py --iters 30 --out $R/base/kernels.json >$R/base/kernels.txt 2>&1)
pack "base kernels rc=$?"
timeout 100 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --profile --iters 30 --out $R/models.json >$R/models.txt 2>&1
pack "models rc=$?"
(cd $B && PYTHONPATH=$B timeout 80 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out $R/base/models.json >$R/base/models.txt 2>&1)
pack "base models rc=$?"
tail -1 $R/pytest.txt; grep -E "SUMMARY" $R/sanitize.txt
grep -h -E "^(token_fusion|attention_info) +float16" $R/kernels.txt $R/base/kernels.txt
grep -h -E "^(timm|official|vitrt DeiT)" $R/models.txt $R/base/models.txt | grep -v "bias"
echo "total ${SECONDS}s"
