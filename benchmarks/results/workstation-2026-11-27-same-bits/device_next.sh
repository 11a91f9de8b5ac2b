#!/usr/bin/env bash
# PREPARED, NOT RUN (session 11 had no GPU): the next GPU session's one device call for this folder's kernel
# changes, measured against d421abf on the same machine. Kernel tests of token fusion on the GPU, then
# kernels.py (which also times attention_info's key splits, 1 / 2 / 4 / 8, against 1) and the DeiT-S rows of
# gpu_models.py on the tree and on d421abf's plugins/, then the three sanitizers. Every step has a time
# limit and writes to $OUT at once, so a call cut short still brings back what ran. At most about 9 minutes
# by the limits below (the machine's start is extra).
#
# Before the call, on the workstation (build/ is git-ignored and must be carried):
#   bash tests/gpu/ab_kernels.sh prepare d421abf               # build/ab-base/plugins, build/ab-base/COMMIT
#   git show d421abf:benchmarks/kernels.py >build/ab-base/kernels.py  # the tree's times key splits d421abf lacks
#   (cd "$(mktemp -d)" && git -C /work/main archive d421abf | tar -x && PYTHONPATH=$PWD python3 -c \
#     "from pathlib import Path; from vitrt.plugins.cuda_build import build_fatbin, kernel_source; \
#      build_fatbin(kernel_source('token_fusion'), Path('/work/main/build/ab-base/fatbins'), ('sm_90',), None)")
#   .venv/bin/vitrt plugins build                               # the tree's fatbins, every architecture
# The call (carry: the four fatbin files and build/ab-base, about 39 MiB; not build/plugins/emulated):
#   run(command="bash benchmarks/results/workstation-2026-11-27-same-bits/device_next.sh",
#       carry=["build/plugins/token_fusion.fatbin", "build/plugins/token_fusion.fatbin.json",
#              "build/plugins/scatterbrain.fatbin", "build/plugins/scatterbrain.fatbin.json", "build/ab-base"],
#       timeout_s=560)
set -uo pipefail
R="${OUT:?set by the device tool}"; mkdir -p "$R/base"; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
step() { echo "$1 rc=$2 at ${SECONDS}s"; }
{ nvidia-smi; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >"$R/env.txt" 2>&1

timeout 100 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu \
  -k "fusion or merge or info or match or scores or mma or norm" >"$R/pytest.txt" 2>&1
step pytest $?; tail -1 "$R/pytest.txt"
timeout 50 python3 benchmarks/kernels.py --iters 30 --out "$R/kernels.json" >"$R/kernels.txt" 2>&1; step kernels $?
timeout 70 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out "$R/models.json" \
  >"$R/models.txt" 2>&1; step models $?

# The base: a copy of the tree with d421abf's plugins/, kernels.py and sm_90 token_fusion fatbin (scatterbrain.cu did
# not change since d421abf: the tree's fatbin serves). build_fatbins becomes a no-op there, or the benchmarks
# would rebuild the sm_90-only fatbin for five architectures.
B=/tmp/vitrt-base; rm -rf $B && mkdir -p $B && tar -c --exclude=./.git --exclude=./build . | tar -x -C $B
rm -rf $B/plugins && cp -r build/ab-base/plugins $B/plugins && cp build/ab-base/COMMIT "$R/base/"
cp build/ab-base/kernels.py $B/benchmarks/kernels.py  # d421abf's own: the tree's asks for key splits
mkdir -p $B/build/plugins && cp build/ab-base/fatbins/token_fusion.fatbin* build/plugins/scatterbrain.fatbin* $B/build/plugins/
base_run() {  # base_run LIMIT OUTPUT SCRIPT ARGS...: the script under runpy in $B, build_fatbins disabled
  local limit=$1 output=$2; shift 2
  (cd $B && PYTHONPATH=$B timeout "$limit" python3 -c "import runpy, sys; import vitrt.plugins.cuda_build as cb; \
cb.build_fatbins = lambda *a, **k: []; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')" \
    "$@") >"$output" 2>&1
}
base_run 50 "$R/base/kernels.txt" benchmarks/kernels.py --iters 30 --out "$R/base/kernels.json"; step "base kernels" $?
base_run 70 "$R/base/models.txt" benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 \
  --out "$R/base/models.json"; step "base models" $?

for tool in memcheck racecheck synccheck; do
  timeout 60 compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 tests/gpu/sanitize.py \
    >"$R/sanitize_$tool.txt" 2>&1
  step "$tool" $?; tail -2 "$R/sanitize_$tool.txt"
done

grep -h -E "^(token_fusion|attention_info) +float16" "$R/kernels.txt" "$R/base/kernels.txt"
grep -h -A9 "per-kernel" "$R/kernels.txt" "$R/base/kernels.txt" | grep "token_fusion"
grep -h -A3 "SM cycles" "$R/kernels.txt" "$R/base/kernels.txt"
grep -h -A3 "keys split between warps" "$R/kernels.txt"
grep -h -E "^(timm|vitrt)" "$R/models.txt" "$R/base/models.txt" | grep -v bias
echo "total ${SECONDS}s"
