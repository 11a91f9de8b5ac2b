#!/usr/bin/env bash
# Session 10, device call 2: the score kernel's 8-warp 32 tile, register-held epilogue factors, float2
# stores and ldmatrix fragments; the matching's shared-memory reads, one-comparison ranks, guarded batched
# copy and dest in one pass. tests/gpu, then kernels.py on the tree and on 5842d75's plugins (same
# machine), then Nsight Compute instruction counts of the new kernels.
set -uo pipefail
R=$OUT; mkdir -p $R/base; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
cp build/sb90/scatterbrain.fatbin* build/plugins/
{ nvidia-smi; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >$R/env.txt 2>&1
timeout 90 python3 -m pytest -q -p no:cacheprovider -rs -x tests/gpu >$R/pytest.txt 2>&1; echo "pytest rc=$? at ${SECONDS}s"
tail -2 $R/pytest.txt
timeout 70 python3 benchmarks/kernels.py --iters 30 --out $R/kernels.json >$R/kernels.txt 2>&1; echo "kernels rc=$? at ${SECONDS}s"
B=/tmp/base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT $R/base/
mkdir -p $B/build/plugins && cp build/ab-base/fatbins/* build/sb90/scatterbrain.fatbin* $B/build/plugins/
(cd $B && PYTHONPATH=$B timeout 70 python3 benchmarks/kernels.py --iters 30 --out $R/base/kernels.json >$R/base/kernels.txt 2>&1)
echo "base kernels rc=$? at ${SECONDS}s"
S="--section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section InstructionStats --section SchedulerStats"
timeout 50 ncu --clock-control none --profile-from-start off -k 'regex:vitrt_tf_(scores|match)' $S \
  python3 tests/gpu/profile_kernels.py >$R/ncu.txt 2>&1; echo "ncu rc=$? at ${SECONDS}s"
grep -h -E "^(token_fusion|attention_info) +float16" $R/kernels.txt $R/base/kernels.txt
grep -h -A1 "per-kernel" $R/kernels.txt $R/base/kernels.txt | head -20
grep -h -A8 "per-kernel" $R/kernels.txt | grep "token_fusion"; grep -h -A8 "per-kernel" $R/base/kernels.txt | grep "token_fusion"
grep -h -A1 "SM cycles" $R/kernels.txt $R/base/kernels.txt
echo "total ${SECONDS}s"
