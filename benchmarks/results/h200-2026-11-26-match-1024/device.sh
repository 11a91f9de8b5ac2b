#!/usr/bin/env bash
# Same-machine A/B of the match kernel at 1024 threads (working tree) against 512 (HEAD 0d578aa's
# token_fusion.cu + cuda.py): kernels.py and the DeiT-S model rows, each on both, then the GPU kernel tests.
set -uo pipefail
R=/tmp/r; BASE=/tmp/base; mkdir -p $R/base
SECONDS=0
rm -rf $BASE && cp -a . $BASE && cp .ab/b2/token_fusion.cu $BASE/plugins/token_fusion/ && cp .ab/b2/cuda.py $BASE/plugins/token_fusion/
(cd $BASE && PYTHONPATH=$BASE timeout 100 python3 -m vitrt.compiler.cli plugins build >$R/base/build.txt 2>&1)
echo "base build rc=$? at ${SECONDS}s"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
timeout 100 python3 -m pytest -q -p no:cacheprovider -x tests/gpu/test_kernels.py -k "fusion or match or ties" >$R/pytest.txt 2>&1
echo "pytest rc=$? at ${SECONDS}s"; tail -1 $R/pytest.txt
timeout 60 python3 benchmarks/kernels.py --iters 30 --out $R/kernels.json >$R/benchmark.txt 2>&1; echo "kernels rc=$? at ${SECONDS}s"
(cd $BASE && PYTHONPATH=$BASE timeout 60 python3 benchmarks/kernels.py --iters 30 --out $R/base/kernels.json >$R/base/benchmark.txt 2>&1); echo "base kernels rc=$? at ${SECONDS}s"
timeout 80 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out $R/gpu_models.json >$R/gpu_models.txt 2>&1; echo "models rc=$? at ${SECONDS}s"
(cd $BASE && PYTHONPATH=$BASE timeout 80 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out $R/base/gpu_models.json >$R/base/gpu_models.txt 2>&1); echo "base models rc=$? at ${SECONDS}s"
tar czf $OUT/all.tgz -C $R .
for f in benchmark gpu_models; do grep -E "token_fusion|mctf|tome|timm|dense" $R/$f.txt | grep -v "^row:" | grep -v check > $OUT/$f.txt; grep -E "token_fusion|mctf|tome|timm|dense" $R/base/$f.txt | grep -v "^row:" | grep -v check > $OUT/${f}_base.txt; done
grep -A4 "SM cycles" $R/benchmark.txt | head -3; grep -A4 "SM cycles" $R/base/benchmark.txt | head -3
echo "total ${SECONDS}s"
