#!/usr/bin/env bash
# Times one kernel family's microbenchmark once for each variant of its compile-time constants,
# built side by side:
#   bash scripts/cuda-host/kernel-bench.sh gemv [SHAPE...]           (scripts/cuda-host/gemv_bench.cu)
#   bash scripts/cuda-host/kernel-bench.sh attention [SHAPE...] [--context N,...]   (attention_bench.cu)
#   bash scripts/cuda-host/kernel-bench.sh batch [SHAPE...]          (batch_bench.cu: 8 to 64 rows, against cuBLAS)
#   bash scripts/cuda-host/kernel-bench.sh persistent                (persistent_bench.cu: 0.6B's products as one kernel)
# SHAPE: 0.6B 1.7B 4B 8B 32B (default all; batch has no 32B). By default the gemv variants are the build as it is and
# every product on the narrow grid shape (native/cuda/stream_gemv.cuh), the attention ones the
# streaming kernel in the batch-1 step's phase and in the batch steps' phase, and the general
# one. VARIANTS overrides the list:
# "name:-DFLAG=V,-DFLAG=V,ENV=V name2:..." ("base:" is the default build; NAME=V items are set in
# the environment of that variant's runs). ROUNDS rounds (default 2), the variants in turn in
# each, show the spread between runs. Exits 1 when a build or a run fails.
set -uo pipefail
OUT=${OUT:-$PWD/cuda-host-logs}
mkdir -p "$OUT"
kernel=${1:?usage: kernel-bench.sh gemv|attention|batch|persistent [ARGS...]}
shift
case $kernel in
  gemv)
    sources="scripts/cuda-host/gemv_bench.cu native/cuda/gemv_kernels.cu native/cuda/fp8_gemv.cu native/cuda/head_kernel.cu"
    variants=${VARIANTS:-"base: narrow:-DQWEN3_STREAM_WIDE_MIN=1000000"} ;;
  attention)
    sources="scripts/cuda-host/attention_bench.cu native/cuda/attention_kernel.cu"
    variants=${VARIANTS:-"base: fused:QWEN3_NO_EARLY_ATTENTION=1 general:QWEN3_NO_STREAM_ATTENTION=1"} ;;
  batch)
    sources="scripts/cuda-host/batch_bench.cu native/cuda/batch_product.cu native/cuda/norm_kernels.cu"
    if echo '#include <cublas_v2.h>' | nvcc -E -x cu - > /dev/null 2>&1; then sources+=" -lcublas"; fi
    variants=${VARIANTS:-"base:BATCH_BENCH_CUBLAS=1"} ;;
  persistent)
    sources="scripts/cuda-host/persistent_bench.cu scripts/cuda-host/persistent_walk.cu native/cuda/gemv_kernels.cu native/cuda/fp8_gemv.cu native/cuda/head_kernel.cu"
    variants=${VARIANTS:-"base:"} ;;
  *) echo "kernel-bench.sh: unknown kernel '$kernel' (gemv, attention, batch or persistent)" >&2; exit 2 ;;
esac
status=0
pids=()
for v in $variants; do
  name=${v%%:*}
  flags=$(tr ',' '\n' <<< "${v#*:}" | grep '^-' | tr '\n' ' ')
  nvcc -O3 -std=c++17 -arch=sm_90 -Inative $flags $sources -o /tmp/${kernel}_bench_$name > "$OUT/$kernel-build-$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
for round in $(seq ${ROUNDS:-2}); do
  for v in $variants; do
    name=${v%%:*}
    environment=$(tr ',' '\n' <<< "${v#*:}" | grep '=' | grep -v '^-' | tr '\n' ' ')
    echo "== $kernel $name (${v#*:}), round $round"
    env $environment /tmp/${kernel}_bench_$name "$@" || status=1
  done
done
exit $status
