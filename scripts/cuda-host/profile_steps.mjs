#!/usr/bin/env node
// The workload that scripts/cuda-host/profile-cuda.sh profiles: a 10-token prefill and 8 decode steps
// (of --batch rows), then two prefills of --prefill tokens from an empty cache. With
// QWEN3_PROFILE=decode:6 (or prefill:3, the second long prefill) the engine brackets that one call
// for the profiler. The weights: a Qwen3-0.6B checkpoint (--model), or random weights of --size
// made on the device.
//   node scripts/cuda-host/profile_steps.mjs (--model M.pth | --size 8B) [--device cuda] [--compile] [--batch 1] [--prefill 2048] [--quantize fp8]
import { parseArgs } from 'node:util';
import { Qwen3Model } from '../../dist/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    size: { type: 'string' },
    device: { type: 'string', default: 'cuda' },
    dtype: { type: 'string', default: 'bfloat16' },
    compile: { type: 'boolean', default: false },
    batch: { type: 'string', default: '1' },
    prefill: { type: 'string', default: '2048' },
    quantize: { type: 'string' },
  },
});
// No warm-up at load: its prompts and steps would count among the calls that QWEN3_PROFILE numbers.
const options = { device: values.device, dtype: values.dtype, compile: values.compile, quantize: values.quantize, warmup: false };
const model = values.size
  ? await Qwen3Model.load({ config: values.size, randomWeights: { seed: 0 }, ...options })
  : await Qwen3Model.load(values.model, { config: '0.6B', ...options });
const prompt = [840, 20772, 3460, 4128, 4119, 304, 264, 3175, 11652, 13];
const rows = Number(values.batch);
let { next } = await model.prefill(rows === 1 ? prompt : Array.from({ length: rows }, () => prompt));
for (let i = 0; i < 8; i++) ({ next } = await model.decode(rows === 1 ? next : next.map((id) => [id])));
const long = Array.from({ length: Number(values.prefill) }, (_, i) => prompt[i % prompt.length]);
for (let i = 0; i < 2; i++) {
  await model.resetCache();
  const t0 = performance.now();
  await model.prefill(long);
  console.log(`prefill ${long.length}: ${(performance.now() - t0).toFixed(1)} ms`);
}
model.dispose();
