#!/usr/bin/env bash
# PREPARED, NOT RUN: the next GPU session's first device call (it replaces ../h200-2026-11-28/device_next.sh,
# whose programmatic-launch passes are folded in below; step 4 added in session 22). At most 9.5 minutes by the
# limits below.
#
# 1. Every GPU test on the tree (the sort's four key counts, features without the stats kernel, kv_reduce's
#    log_k), then memcheck and racecheck over tests/gpu/sanitize.py (which now runs the sort at 1, 2, 4, 8 keys).
# 2. Session 21's Scatterbrain changes against their base, 7507b9e, on the same machine: kernels.py and the
#    models at batch 1 and 8 (DeiT-S and T2T-ViT-t-14) on the tree and on 7507b9e's plugins/ (only plugins/
#    swapped; the tree's kernels.py times the sort's key counts where the plugins have them).
# 3. Programmatic dependent launch on and off (VITRT_PROGRAMMATIC_LAUNCH=0), same tree: two passes of kernels.py,
#    one of the models, alternating with the runs of step 2, so that no pass of one waits on the other.
# 4. (session 22) benchmarks/t2t_norms.py: T2T-ViT's first qkv product on rows padded to 152 channels against the
#    147-channel product, the token module with and without the padding and with its soft splits copied or fused
#    with the norm, torch's layer_norm against vitrt's row norm at 64 and 576 channels, and vitrt's 64-channel
#    norm a warp or 8 lanes per row. The base copy runs with RowLayerNorm.pad_rows off: 7507b9e's row_layer_norm
#    op takes no pitch (the padding came with an op signature change); it has no unfold_layer_norm, so its
#    splits are copied, as they were.
#
# Before the call, on the workstation (the fatbins must match each tree's sources):
#   VITRT_CUDA_ARCHS=sm_90 vitrt plugins build --out build/plugins-sm90
#   bash tests/gpu/ab_kernels.sh prepare 7507b9e
#   git worktree add /tmp/base 7507b9e && (cd /tmp/base && PYTHONPATH=/tmp/base VITRT_CUDA_ARCHS=sm_90 \
#     python -m vitrt.compiler.cli plugins build --out "$OLDPWD/build/ab-base-sm90")
# The call: run(command="bash benchmarks/results/workstation-2026-11-28-sort-features/device_next.sh",
#   timeout_s=560, carry=["build/plugins-sm90", "build/ab-base", "build/ab-base-sm90"])
set -uo pipefail
: "${OUT:?set by the device tool}"; R=/tmp/r; rm -rf $R; mkdir -p $R/base $R/off; SECONDS=0
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 VITRT_CUDA_ARCHS=sm_90
step() { tar czf "$OUT/all.tgz" -C $R .; echo "$1 rc=$2 at ${SECONDS}s"; }
mkdir -p build/plugins && cp build/plugins-sm90/* build/plugins/
AB=/tmp/ab; rm -rf $AB && mkdir -p $AB
tar -c --exclude=./.git --exclude=./.venv --exclude=./build . | tar -x -C $AB
rm -rf $AB/plugins && cp -r build/ab-base/plugins $AB/plugins && mkdir -p $AB/build/plugins && cp build/ab-base-sm90/* $AB/build/plugins/
sed -i 's/^    pad_rows = True  #/    pad_rows = False  #/' $AB/models/layers.py && grep -q "pad_rows = False" $AB/models/layers.py \
  || echo "base copy: could not turn RowLayerNorm.pad_rows off (its T2T rows will fail)"
cp build/ab-base/COMMIT $R/base/COMMIT
{ nvidia-smi -L; python3 -c 'import torch, timm; print(torch.__version__, torch.version.cuda, timm.__version__)'; } >"$R/env.txt" 2>&1
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/gpu >"$R/pytest.txt" 2>&1; step pytest $?
tail -1 "$R/pytest.txt"
kern() {  # kern DIR OUTPREFIX [VAR=VALUE]: kernels.py in DIR
  (cd "$1" && env PYTHONPATH="$1" ${3:-} timeout 45 python3 benchmarks/kernels.py --iters 30 --out "$2.json" >"$2.txt" 2>&1)
}
models() {  # models DIR OUTPREFIX [VAR=VALUE]: DeiT-S and T2T-ViT-t-14 at batch 1 and 8
  (cd "$1" && env PYTHONPATH="$1" ${3:-} timeout 50 python3 benchmarks/gpu_models.py --batches 1 8 --no-previous-path \
    --iters 30 --out "$2.json" >"$2.txt" 2>&1)
}
kern "$PWD" "$R/kernels_p1"; step "kernels tree p1" $?
kern $AB "$R/base/kernels_p1"; step "kernels base p1" $?
kern "$PWD" "$R/off/kernels_p1" VITRT_PROGRAMMATIC_LAUNCH=0; step "kernels pdl-off p1" $?
models "$PWD" "$R/models"; step "models tree" $?
models $AB "$R/base/models"; step "models base" $?
models "$PWD" "$R/off/models" VITRT_PROGRAMMATIC_LAUNCH=0; step "models pdl-off" $?
timeout 25 compute-sanitizer --tool memcheck --report-api-errors no --print-limit 20 python3 tests/gpu/sanitize.py \
  >"$R/sanitize_memcheck.txt" 2>&1; step memcheck $?; tail -1 "$R/sanitize_memcheck.txt"
timeout 45 compute-sanitizer --tool racecheck --print-limit 20 python3 tests/gpu/sanitize.py \
  >"$R/sanitize_racecheck.txt" 2>&1; step racecheck $?; tail -1 "$R/sanitize_racecheck.txt"
timeout 40 python3 benchmarks/t2t_norms.py --iters 30 --out "$R/t2t_norms.json" >"$R/t2t_norms.txt" 2>&1
step t2t_norms $?; grep -E "^ +[0-9]+ " "$R/t2t_norms.txt"
if [ $SECONDS -lt 400 ]; then  # a second pass of the kernels, the other way round
  kern "$PWD" "$R/off/kernels_p2" VITRT_PROGRAMMATIC_LAUNCH=0; step "kernels pdl-off p2" $?
  kern $AB "$R/base/kernels_p2"; step "kernels base p2" $?
  kern "$PWD" "$R/kernels_p2"; step "kernels tree p2" $?
fi
for f in "$R"/kernels_p*.txt "$R"/base/kernels_p*.txt "$R"/off/kernels_p*.txt; do
  echo "== $f"; grep -E "^(token_fusion|attention_info|scatterbrain) +float16|^  scatterbrain B=|^  N=" "$f"
done
for f in "$R"/models.txt "$R"/base/models.txt "$R"/off/models.txt; do echo "== $f"; grep -E "^(timm|vitrt)|^check" "$f" | grep -v bias; done
echo "total ${SECONDS}s"
