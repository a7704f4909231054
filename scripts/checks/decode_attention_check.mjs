#!/usr/bin/env node
// Decode attention against prompt attention at long contexts. For each length n: the logits of a
// one-token decode step after a prefill of n - 1 tokens (on CUDA the fused decode kernels, whose
// attention splits the positions into ranges that grow past 1,024 tokens) against the last
// position's logits of a prefill of all n tokens (the prompt path's attention). The two differ
// only in summation order, so they must agree within the dtype's parity tolerance (and, in
// float32, on the greedy token; random bf16 weights leave near ties that either order may break).
//   node scripts/checks/decode_attention_check.mjs --model M.pth [--device cuda] [--dtype bfloat16] [--compile] [--lengths 40,300,1100,2100]
import { parseArgs } from 'node:util';
import { Qwen3Model } from '../../dist/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    config: { type: 'string', default: '0.6B' },
    device: { type: 'string', default: 'cuda' },
    dtype: { type: 'string', default: 'bfloat16' },
    compile: { type: 'boolean', default: false },
    lengths: { type: 'string', default: '40,300,1100,2100' },
  },
});
const tolerance = values.dtype === 'float32' ? 1e-3 : 3e-2;
const model = await Qwen3Model.load(values.model, { config: values.config, device: values.device, dtype: values.dtype, compile: values.compile });
const vocab = model.config.vocab_size;
let seed = 12345;
const nextId = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % vocab;

function relativeMaxError(actual, expected) {
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < expected.length; i++) {
    if (Number.isNaN(actual[i])) return Infinity;
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    ref = Math.max(ref, Math.abs(expected[i]));
  }
  return diff / ref;
}

let failed = false;
for (const n of values.lengths.split(',').map(Number)) {
  const ids = Array.from({ length: n }, nextId);
  await model.resetCache();
  const whole = await model.prefill(ids, { logits: 'last' });
  await model.resetCache();
  await model.prefill(ids.slice(0, -1));
  const step = await model.decode([ids[n - 1]], { logits: 'last' });
  const error = relativeMaxError(step.logits.data, whole.logits.data);
  const ok = error < tolerance && (values.dtype !== 'float32' || step.next[0] === whole.next[0]);
  failed ||= !ok;
  console.log(JSON.stringify({ length: n, relativeMaxError: error, decodeNext: step.next[0], prefillNext: whole.next[0], ok }));
}
model.dispose();
process.exitCode = failed ? 1 : 0;
