#!/usr/bin/env node
// Compiled versus eager on a full-size checkpoint: greedy tokens of the compile step (fused
// weights, SDPA, CUDA graphs) against the eager reference-order path, same device and dtype.
// In bfloat16 the two round differently, so a random-weight model's near-ties can flip a
// token; float32 shows whether the computation itself is the same.
//   node scripts/checks/compile_check.mjs --model FILE --config FILE [--device cuda] [--dtype float32] [--steps 200]
import { parseArgs } from 'node:util';
import { Qwen3Model, generateTextBasicCache } from '../../dist/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    config: { type: 'string', default: '0.6B' },
    device: { type: 'string', default: 'auto' },
    dtype: { type: 'string', default: 'float32' },
    steps: { type: 'string', default: '200' },
  },
});
const prompt = [840, 20772, 3460, 4128, 4119, 304, 264, 3175, 11652, 13];
const run = async (compile) => {
  const model = await Qwen3Model.load(values.model, { config: values.config, device: values.device, dtype: values.dtype, compile });
  try {
    return await generateTextBasicCache(model, prompt, { maxNewTokens: Number(values.steps), ignoreEos: true });
  } finally {
    model.dispose();
  }
};
const eager = await run(false);
const compiled = await run(true);
const firstDiff = eager.findIndex((id, i) => id !== compiled[i]);
console.log(JSON.stringify({ device: values.device, dtype: values.dtype, steps: eager.length, identical: firstDiff === -1, firstDifferentStep: firstDiff }));
if (firstDiff !== -1) process.exitCode = 1;
