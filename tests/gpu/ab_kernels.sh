#!/usr/bin/env bash
# Same-machine A/B of vitrt's kernels: the working tree against the plugins/ folder of a base commit, so
# that a kernel change is judged against its base measured in the same run (timings from different
# machines, even of one kind, are not comparable). Two steps, because the GPU machine gets a copy of the
# working tree without .git:
#
#   bash tests/gpu/ab_kernels.sh prepare BASE   # here: BASE's plugins/ -> build/ab-base/plugins (git-ignored)
#   OUT=... bash tests/gpu/ab_kernels.sh run    # on the GPU machine (carry build/ab-base): both, one run
#
# run: copies the tree to $AB_DIR (default /tmp/vitrt-ab-base), puts the base plugins/ in place there and
# builds its fatbins, then runs benchmarks/kernels.py and the DeiT-S rows of benchmarks/gpu_models.py
# on the working tree, then on the base. Output in $OUT (default build/ab-results):
# kernels.txt, kernels_base.txt, models.txt, models_base.txt (+ .json). Only plugins/ is swapped: the
# base must run under the working tree's models (a kernel change, not an op signature change).
# ITERS (default 30) timed runs per case; AB_TIMEOUT (s, default 120) limits each build and benchmark.
# Exit status: 1 if a build or a benchmark failed (kernels.py exits 2 without a GPU), else 0.
set -uo pipefail
PY="${PYTHON:-python3}"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # run from two trees
cd "$(dirname "$0")/../.."
case "${1:-}" in
  prepare)
    base="${2:?usage: ab_kernels.sh prepare BASE_COMMIT}"
    git rev-parse -q --verify "$base^{commit}" >/dev/null ||
      { echo "'$base' is not a commit of this repository (a hash, tag or branch; git log lists them)" >&2; exit 2; }
    rm -rf build/ab-base && mkdir -p build/ab-base
    git archive "$base" plugins | tar -x -C build/ab-base || exit 1
    git rev-parse "$base" >build/ab-base/COMMIT
    echo "build/ab-base/plugins: plugins/ of $(cat build/ab-base/COMMIT); carry build/ab-base to the GPU machine"
    ;;
  run)
    [ -d build/ab-base/plugins ] || { echo "no build/ab-base/plugins: run 'ab_kernels.sh prepare BASE' first" >&2; exit 2; }
    OUT="${OUT:-build/ab-results}"; AB="${AB_DIR:-/tmp/vitrt-ab-base}"; ITERS="${ITERS:-30}"; T="${AB_TIMEOUT:-120}"
    mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
    case "$AB" in /*) ;; *) AB="$PWD/$AB" ;; esac
    case "$AB/" in "$PWD"/*) echo "AB_DIR must be outside the tree" >&2; exit 2 ;; esac
    rm -rf "$AB" && mkdir -p "$AB"
    # no build/: the base's fatbins are built from its own sources, never taken from the working tree's
    tar -c --exclude=./.git --exclude=./.venv --exclude=./build . | tar -x -C "$AB"
    rm -rf "$AB/plugins" && cp -r build/ab-base/plugins "$AB/plugins"
    export PYTHONUNBUFFERED=1
    if ! PYTHONPATH="$PWD" timeout "$T" "$PY" -m vitrt.compiler.cli plugins build >"$OUT/build.txt" 2>&1 ||
      ! (cd "$AB" && PYTHONPATH="$AB" timeout "$T" "$PY" -m vitrt.compiler.cli plugins build >"$OUT/build_base.txt" 2>&1); then
      echo "a fatbin build failed: see $OUT/build.txt and $OUT/build_base.txt" >&2
      exit 1
    fi
    bench() {  # bench DIR SUFFIX: non-zero if either benchmark failed
      (cd "$1" && PYTHONPATH="$1" timeout "$T" "$PY" benchmarks/kernels.py --iters "$ITERS" \
        --out "$OUT/kernels$2.json" >"$OUT/kernels$2.txt" 2>&1) &&
        (cd "$1" && PYTHONPATH="$1" timeout "$T" "$PY" benchmarks/gpu_models.py --skip-t2t --no-previous-path \
          --iters "$ITERS" --out "$OUT/models$2.json" >"$OUT/models$2.txt" 2>&1)
    }
    rc=0
    bench "$PWD" "" || rc=1
    bench "$AB" "_base" || rc=1
    echo "base: $(cat build/ab-base/COMMIT 2>/dev/null)"
    for f in kernels models; do
      echo "== $f: working tree"; grep -sE "^(token_fusion|attention_info|scatterbrain|timm|vitrt) " "$OUT/$f.txt"
      echo "== $f: base"; grep -sE "^(token_fusion|attention_info|scatterbrain|timm|vitrt) " "$OUT/${f}_base.txt"
    done
    exit "$rc"
    ;;
  *)
    echo "usage: ab_kernels.sh prepare BASE_COMMIT | run" >&2
    exit 2
    ;;
esac
