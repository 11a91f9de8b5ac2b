#!/usr/bin/env bash
# Session 10, device call 4: the final kernels (run 2's, with the matching's score copy back to 5842d75's
# loop; the partial arg-maxima of run 3 removed). kernels.py, the DeiT-S rows of gpu_models.py, then the
# token-fusion GPU tests. fatbins carried (cached: no build). $OUT/all.tgz rewritten after each step.
set -uo pipefail
R=/tmp/r10d; rm -rf $R; mkdir -p $R; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
pack() { tar czf $OUT/all.tgz -C $R . ; echo "$1 at ${SECONDS}s"; }
ls -la build/plugins/
{ nvidia-smi; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >$R/env.txt 2>&1
timeout 45 python3 benchmarks/kernels.py --iters 30 --out $R/kernels.json >$R/kernels.txt 2>&1; pack "kernels rc=$?"
timeout 60 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 20 --out $R/models.json \
  >$R/models.txt 2>&1; pack "models rc=$?"
timeout 70 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu -k "fusion or match or mma or scores or merge" \
  >$R/pytest.txt 2>&1; pack "pytest rc=$?"
grep -h -E "^(token_fusion|attention_info) +float16" $R/kernels.txt
grep -h -A9 "per-kernel" $R/kernels.txt | grep "token_fusion"
grep -h -A3 "SM cycles" $R/kernels.txt
grep -h -E "^(timm|vitrt)" $R/models.txt | grep -v bias
tail -1 $R/pytest.txt
echo "total ${SECONDS}s"
