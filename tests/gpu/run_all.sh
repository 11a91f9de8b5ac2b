#!/usr/bin/env bash
# One command for a GPU machine: build the kernels' fatbins, run the GPU kernel tests and the TensorRT
# plugin tests (each skips, with its reason, where its requirement is missing), then the kernel and
# model benchmarks. Results go to $OUT (default build/gpu-results): build.txt, pytest.txt, junit.xml
# (or JUNIT_XML), benchmark.txt, kernels.json, sdpa_bias.txt, sdpa_bias.json, gpu_models.txt,
# gpu_models.json, env.txt, sanitize.txt.
# Exit status: pytest's (124 if PYTEST_TIMEOUT stopped it; then junit.xml is not written).
#
#   bash tests/gpu/run_all.sh          # PYTHON=... to pick the interpreter (default: python3)
#
# Each step can be given a time limit in seconds, so a lease of a few minutes still brings back every
# step's output: BUILD_TIMEOUT, PYTEST_TIMEOUT, KERNELS_TIMEOUT (kernels.py, and sdpa_bias.py on its own),
# MODELS_TIMEOUT, SANITIZE_TIMEOUT (per sanitizer tool; default 600). 0 or unset: no limit. The
# benchmarks print each row as they measure it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-build/gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

{
  nvidia-smi || true
  "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  "$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|cuda|nvidia-cuda-nvrtc|tensorrt|onnx)" || true
  command -v nvcc && nvcc --version | tail -1
} >"$OUT/env.txt" 2>&1

timeout -k 10 "${BUILD_TIMEOUT:-0}" "$PY" -m vitrt.compiler.cli plugins build 2>&1 | tee "$OUT/build.txt"
for f in build/plugins/*.fatbin; do
  command -v cuobjdump >/dev/null && cuobjdump --list-elf --list-ptx "$f" >>"$OUT/build.txt" 2>&1
done

timeout -k 10 "${PYTEST_TIMEOUT:-0}" "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu tests/tensorrt tests/plugins/test_cuda_build.py \
  --junitxml="${JUNIT_XML:-$OUT/junit.xml}" 2>&1 | tee "$OUT/pytest.txt"
rc=${PIPESTATUS[0]}

timeout -k 10 "${KERNELS_TIMEOUT:-0}" "$PY" benchmarks/kernels.py ${KERNELS_ARGS:-} --out "$OUT/kernels.json" 2>&1 | tee "$OUT/benchmark.txt"
timeout -k 10 "${KERNELS_TIMEOUT:-0}" "$PY" benchmarks/sdpa_bias.py --out "$OUT/sdpa_bias.json" 2>&1 | tee "$OUT/sdpa_bias.txt"
timeout -k 10 "${MODELS_TIMEOUT:-0}" "$PY" benchmarks/gpu_models.py ${GPU_MODELS_ARGS:-} --out "$OUT/gpu_models.json" 2>&1 | tee "$OUT/gpu_models.txt"
if [ "${SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck synccheck; do
    # --report-api-errors no: cuda-python probes optional driver entry points at start-up, and each probe
    # that finds none is a failed API call that memcheck would count as an error; device errors still count
    timeout -k 10 "${SANITIZE_TIMEOUT:-600}" compute-sanitizer --tool "$tool" --report-api-errors no --print-limit 20 \
      "$PY" tests/gpu/sanitize.py 2>&1 |
      tail -5 | tee -a "$OUT/sanitize.txt"
  done
fi
exit "$rc"
