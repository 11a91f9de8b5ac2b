#!/usr/bin/env bash
# Device call of session 20 (2026-11-28): device_next.sh of ../workstation-2026-11-27-same-bits/ (prepared in
# session 14, then removed as run; the kernel work of
# sessions 11 to 14, never run on a GPU before), with two changes: the carried fatbins hold sm_90 only
# (VITRT_CUDA_ARCHS=sm_90, so the tree's build key matches them; five architectures would not fit the 64 MiB the
# call may carry), and every output goes to /tmp/r, packed into $OUT/all.tgz after each step (the tool brings
# back at most 8 files).
#
# Before the call, on the workstation:
#   bash tests/gpu/ab_kernels.sh prepare d421abf
#   git show d421abf:benchmarks/kernels.py >build/ab-base/kernels.py
#   (cd "$(mktemp -d)" && git -C /work/main archive d421abf | tar -x && PYTHONPATH=$PWD python3 -c \
#     "from pathlib import Path; from vitrt.plugins.cuda_build import build_fatbin, kernel_source; \
#      build_fatbin(kernel_source('token_fusion'), Path('/work/main/build/ab-base/fatbins'), ('sm_90',), None)")
#   VITRT_CUDA_ARCHS=sm_90 vitrt plugins build
# The call: run(command="bash benchmarks/results/h200-2026-11-28/device.sh", timeout_s=590,
#   carry=["build/plugins/token_fusion.fatbin", "build/plugins/token_fusion.fatbin.json",
#          "build/plugins/scatterbrain.fatbin", "build/plugins/scatterbrain.fatbin.json", "build/ab-base"])
set -uo pipefail
: "${OUT:?set by the device tool}"; R=/tmp/r; rm -rf $R; mkdir -p "$R/base"; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
step() { tar czf "$OUT/all.tgz" -C $R .; echo "$1 rc=$2 at ${SECONDS}s"; }
{ nvidia-smi; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >"$R/env.txt" 2>&1

timeout 120 python3 -m pytest -q -p no:cacheprovider -rs tests/gpu >"$R/pytest.txt" 2>&1
step pytest $?; tail -1 "$R/pytest.txt"
timeout 60 python3 benchmarks/kernels.py --iters 30 --out "$R/kernels.json" >"$R/kernels.txt" 2>&1; step kernels $?
timeout 65 python3 benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 --out "$R/models.json" \
  >"$R/models.txt" 2>&1; step models $?
timeout 50 python3 benchmarks/gpu_models.py --skip-deit --batches 1 8 --no-previous-path --iters 30 \
  --out "$R/models_t2t.json" >"$R/models_t2t.txt" 2>&1; step "models t2t" $?

# The base: a copy of the tree with d421abf's plugins/, kernels.py and sm_90 token_fusion fatbin (scatterbrain.cu's
# kernels that d421abf launches kept their names and arguments since: the tree's fatbin serves; session 14's
# combine for many features is a new entry point). build_fatbins becomes a no-op there, or the benchmarks would
# rebuild the sm_90-only fatbin for five architectures.
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
base_run 45 "$R/base/kernels.txt" benchmarks/kernels.py --iters 30 --out "$R/base/kernels.json"; step "base kernels" $?
base_run 60 "$R/base/models.txt" benchmarks/gpu_models.py --skip-t2t --no-previous-path --iters 30 \
  --out "$R/base/models.json"; step "base models" $?

for tool in memcheck racecheck synccheck; do
  timeout 45 compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 tests/gpu/sanitize.py \
    >"$R/sanitize_$tool.txt" 2>&1
  step "$tool" $?; tail -2 "$R/sanitize_$tool.txt"
done

grep -h -E "^(token_fusion|attention_info) +float16" "$R/kernels.txt" "$R/base/kernels.txt"
grep -h -A9 "per-kernel" "$R/kernels.txt" "$R/base/kernels.txt" | grep "token_fusion"
grep -h -A3 "SM cycles" "$R/kernels.txt" "$R/base/kernels.txt"
grep -h -A3 "keys split between warps" "$R/kernels.txt"
grep -h -E "^scatterbrain +float16" "$R/kernels.txt" "$R/base/kernels.txt"
grep -h -A6 "by form of its cluster kernel" "$R/kernels.txt"
grep -h -A9 "per-kernel" "$R/kernels.txt" | grep "scatterbrain"
grep -h -E "^(timm|vitrt)" "$R/models.txt" "$R/base/models.txt" "$R/models_t2t.txt" | grep -v bias
echo "total ${SECONDS}s"
