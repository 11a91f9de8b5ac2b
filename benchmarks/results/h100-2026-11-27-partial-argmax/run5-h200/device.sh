#!/usr/bin/env bash
# Session 10, device call 5: attention_info from q and k staged by cp.async, against b134155 (HEAD) on the
# same machine: the attention_info GPU tests, then kernels.py on the tree and on HEAD's plugins/.
set -uo pipefail
R=/tmp/r10e; rm -rf $R; mkdir -p $R/base; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
pack() { tar czf $OUT/all.tgz -C $R . ; echo "$1 at ${SECONDS}s"; }
nvidia-smi -L >$R/env.txt 2>&1
timeout 40 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "attention_info or info_qk" >$R/pytest.txt 2>&1
pack "pytest rc=$?"; tail -1 $R/pytest.txt
timeout 45 python3 benchmarks/kernels.py --iters 30 --out $R/kernels.json >$R/kernels.txt 2>&1; pack "kernels rc=$?"
B=/tmp/base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT $R/base/
mkdir -p $B/build/plugins && cp build/ab-base/fatbins/* build/plugins/scatterbrain.fatbin* $B/build/plugins/
# the base's token_fusion fatbin is sm_90 only: keep kernels.py from rebuilding it for five architectures
(cd $B && PYTHONPATH=$B timeout 45 python3 -c "import runpy, sys; import vitrt.plugins.cuda_build as cb; \
cb.build_fatbins = lambda *a, **k: []; sys.argv = ['kernels.py', '--iters', '30', '--out', '$R/base/kernels.json']; \
runpy.run_path('benchmarks/kernels.py', run_name='__main__')" >$R/base/kernels.txt 2>&1); pack "base kernels rc=$?"
grep -h -E "^attention_info +float16" $R/kernels.txt $R/base/kernels.txt
grep -h "attention_info B=" $R/kernels.txt $R/base/kernels.txt
echo "total ${SECONDS}s"
