#!/usr/bin/env bash
# The CUDA host recipe: build the addon against the host's libtorch, run the test suite with the
# parity tests on the GPU, and the full-size (random Qwen3-0.6B) check on CUDA and on the CPU.
# On a host with CUDA PyTorch and no network, after packing Node (../shared/tools/pack-cuda-host.sh):
#   source .cuda-host/setup.sh && bash scripts/cuda-host-check.sh
# Logs go to $OUT (default ./cuda-host-logs).
set -uo pipefail
OUT=${OUT:-$PWD/cuda-host-logs}
mkdir -p "$OUT"
status=0
step() { # step NAME COMMAND...: run, log to $OUT/NAME.log, remember failures
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc in $((SECONDS - t0)) s"
  tail -n 25 "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step build npm run build || exit 1
step info node dist/cli.js info --json
step tf32 node -e "const q = require('./dist/index.js'); for (const on of [true, false]) { q.getDevice({ enableTensorCores: on }); console.log('enableTensorCores', on, '->', q.runtimeInfo().tensorCores); }"
step fixtures python3 scripts/make_fixtures.py --out test/.fixtures
# TESTS narrows the suite (a list of test files) when device time is short.
QWEN3_TEST_DEVICE=cuda step tests-cuda npx vitest run ${TESTS:-}
step fixtures-full python3 scripts/make_fixtures.py --out /tmp/qwen3-fixtures --full-size --only qwen3-0.6b-random --device cuda
step full-size-cuda node scripts/full_size_check.mjs --fixture /tmp/qwen3-fixtures/qwen3-0.6b-random --device cuda --steps 30
step full-size-cuda-compiled node scripts/full_size_check.mjs --fixture /tmp/qwen3-fixtures/qwen3-0.6b-random --device cuda --steps 30 --compile
step compile-check-f32 node scripts/compile_check.mjs --model /tmp/qwen3-fixtures/qwen3-0.6b-random/model.pth --device cuda --dtype float32 --steps 200
step compile-check-bf16 node scripts/compile_check.mjs --model /tmp/qwen3-fixtures/qwen3-0.6b-random/model.pth --device cuda --dtype bfloat16 --steps 200
# The speed table; BASELINE=transformers adds Hugging Face transformers (torch.compile takes minutes).
export OUT BASELINE
step bench bash -c 'node dist/cli.js bench --device cuda --model /tmp/qwen3-fixtures/qwen3-0.6b-random/model.pth ${BASELINE:+--baseline $BASELINE} --json > "$OUT/bench.json"'
node -e "console.log(require('./dist/bench.js').formatBenchReport(require(process.env.OUT + '/bench.json')))" | tee "$OUT/bench.md"
exit $status
