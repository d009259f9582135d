#!/usr/bin/env bash
# The GPU check of issue 10, about 8 minutes on one H200 (run from anywhere):
#   1. the parity and Causal Cache tests on the GPU, matmul precision highest (tests/conftest.py
#      sets it; JAX_DEFAULT_MATMUL_PRECISION says so again), at most $TEST_S seconds;
#   2. benchmarks/throughput.py: WF-VAE-S and WF-VAE-L at 33x256^2 and 33x512^2, float32 and
#      bfloat16, encode and decode, direct then chunked (the auto chunk), videos/s and peak
#      device memory (memory_stats() peak_bytes_in_use), matmul precision $PRECISION (default
#      highest: true fp32, no TF32; PRECISION=default measures what jax does by default);
#      configurations start until $BUDGET_S seconds are spent, the rest are listed as not
#      measured.
# Needs jax with CUDA in the active Python (pip install -U "jax[cuda12]") plus requirements.txt.
# Writes $OUT/gpu_tests.txt and $OUT/throughput_gpu.{json,md} (OUT defaults to
# benchmarks/results). DRY_RUN=1 runs the same steps on CPU with the tiny config (a few minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
TEST_S=${TEST_S:-210}
BUDGET_S=${BUDGET_S:-210}
PRECISION=${PRECISION:-highest}
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # grow on demand: a fast start, no 75% reservation

backend=$(python -c "import jax; print(jax.default_backend(), jax.devices()[0].device_kind)") || exit 1
echo "backend: $backend"
if [ "${DRY_RUN:-0}" = 1 ]; then
  TESTS=(tests/test_parity.py -k "image")
  BENCH=(--models tiny --sizes 32 --frames 9 --enc-chunk 4 --dec-chunk 1 --warm-runs 1)
  TP=throughput_dry_run
elif [[ $backend != gpu* ]]; then
  echo "error: no GPU backend (jax.default_backend() = ${backend%% *}); DRY_RUN=1 runs on CPU" >&2
  exit 2
else
  TESTS=(tests/test_parity.py tests/test_parity_extra.py tests/test_causal_cache.py
         tests/test_auto_chunk.py)
  BENCH=(--models WF-VAE-S,WF-VAE-L --sizes 256,512 --no-768 --warm-runs 3 --warm-budget 20)
  TP=throughput_gpu
fi

t0=$SECONDS
JAX_DEFAULT_MATMUL_PRECISION=highest timeout "$TEST_S" python -m pytest -q -x "${TESTS[@]}" 2>&1 | tee "$OUT/gpu_tests.txt" | tail -5
echo "tests: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s (124 = stopped at TEST_S=$TEST_S s)"

t1=$SECONDS
python benchmarks/throughput.py "${BENCH[@]}" --dtypes float32,bfloat16 --modes direct,chunked \
  --precision "$PRECISION" --budget "$BUDGET_S" --out "$OUT/$TP.json" | tee "$OUT/$TP.md"
echo "throughput: exit ${PIPESTATUS[0]} after $((SECONDS - t1)) s; total $((SECONDS - t0)) s"
