#!/usr/bin/env bash
# Times the decode step's matrix-vector products (scripts/cuda-host/gemv_bench.cu) once for each
# variant of the streaming kernel's compile-time constants (native/cuda/stream_gemv.cuh), built
# side by side (by default: as built, and with every product on the narrow grid shape):
#   bash scripts/cuda-host/gemv-bench.sh [SHAPE...]      (SHAPE: 0.6B 8B 32B; default all three)
# GEMV_VARIANTS overrides the list: "name:-DFLAG=V,-DFLAG=V name2:..." ("base:" is the default build).
set -uo pipefail
OUT=${OUT:-$PWD/cuda-host-logs}
mkdir -p "$OUT"
variants=${GEMV_VARIANTS:-"base: narrow:-DQWEN3_STREAM_WIDE_MIN=1000000"}
status=0
pids=()
for v in $variants; do
  name=${v%%:*}
  flags=${v#*:}
  nvcc -O3 -std=c++17 -arch=sm_90 -Inative ${flags//,/ } scripts/cuda-host/gemv_bench.cu native/cuda/gemv_kernels.cu native/cuda/fp8_gemv.cu \
    native/cuda/head_kernel.cu -o /tmp/gemv_bench_$name > "$OUT/gemv-build-$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
# GEMV_ROUNDS rounds (default 2), the variants in turn in each, to see the spread between runs.
for round in $(seq ${GEMV_ROUNDS:-2}); do
  for v in $variants; do
    name=${v%%:*}
    echo "== $name (${v#*:}), round $round"
    /tmp/gemv_bench_$name "$@" || status=1
  done
done
exit $status
