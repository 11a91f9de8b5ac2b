#!/usr/bin/env bash
# Device run 3 (session 9): the working tree (matching: warp-ballot slot scan, column arg-max over all A rows,
# scores copied as float pairs; merge of 257..384 float16 channels in 4-half vectors) against 90d5aca's
# plugins/ (build/ab-base), same machine, fatbins carried. tests/gpu, compute-sanitizer, kernels.py and the
# DeiT-S rows of gpu_models.py on both. $OUT/all.tgz is rewritten after each step.
set -uo pipefail
R=/tmp/r9c; rm -rf $R; mkdir -p $R/base; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
pack() { tar czf $OUT/all.tgz -C $R . ; echo "$1 at ${SECONDS}s"; }
{ nvidia-smi; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >$R/env.txt 2>&1
timeout 50 python3 -m vitrt.compiler.cli plugins build >$R/build.txt 2>&1; pack "build rc=$?"
timeout 80 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu >$R/pytest.txt 2>&1; pack "pytest rc=$?"
for tool in memcheck racecheck synccheck; do
  timeout 45 compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 tests/gpu/sanitize.py 2>&1 | tail -3 >>$R/sanitize.txt
done; pack sanitize
timeout 60 python3 benchmarks/kernels.py --iters 30 --out $R/kernels.json >$R/kernels.txt 2>&1; pack "kernels rc=$?"
B=/tmp/base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT $R/base/
mkdir -p $B/build/plugins && cp build/ab-base/fatbins/* $B/build/plugins/ && cp build/plugins/scatterbrain.fatbin* $B/build/plugins/
(cd $B && PYTHONPATH=$B timeout 60 python3 benchmarks/kernels.py --iters 30 --out $R/base/kernels.json >$R/base/kernels.txt 2>&1)
pack "base kernels rc=$?"
timeout 60 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out $R/models.json >$R/models.txt 2>&1
pack "models rc=$?"
(cd $B && PYTHONPATH=$B timeout 60 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out $R/base/models.json >$R/base/models.txt 2>&1)
pack "base models rc=$?"
tail -1 $R/pytest.txt; grep -a FAILED $R/pytest.txt | head -5; grep -E "SUMMARY" $R/sanitize.txt
grep -h -E "^(token_fusion|attention_info) +float16" $R/kernels.txt $R/base/kernels.txt
grep -h -A1 "SM cycles" $R/kernels.txt $R/base/kernels.txt
grep -h -E "^(timm|official|vitrt DeiT)" $R/models.txt $R/base/models.txt | grep -v bias
echo "total ${SECONDS}s"
