#!/usr/bin/env node
// Tensor parallelism on real GPUs against one GPU, with random weights of full-size shapes made
// on the devices (the same seed draws the same weights on every CUDA device):
//   - float32: the greedy tokens of the split model equal one GPU's, compiled (the decode step a
//     CUDA graph with the NCCL collectives inside it) and eager;
//   - bfloat16: the prompt's logits as far from one GPU's float32 logits as one GPU's bfloat16
//     ones are, at most twice (the sums run in another order, so their rounding differs);
//   - continuous batching (sequence slots) over the split model: each sequence equals its own
//     generation on the split model.
// Prints one JSON report; exits 1 when a check fails.
//   node scripts/cuda-host/tensor_parallel_check.mjs [--sizes 0.6B,8B] [--devices cuda:0,cuda:1] [--steps 30]
import { parseArgs } from 'node:util';
import { BatchScheduler, Qwen3Model, generateTextBasicCache, memoryStats } from '../../dist/index.js';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '0.6B,8B' },
    devices: { type: 'string', default: 'cuda:0,cuda:1' },
    steps: { type: 'string', default: '30' },
  },
});
const devices = values.devices.split(',');
const steps = Number(values.steps);
const prompt = Array.from({ length: 24 }, (_, i) => (i * 7919 + 13) % 150000);
const report = { devices, steps, sizes: {} };
let failed = false;

const load = (size, dtype, compile, where) => Qwen3Model.load({ config: size, randomWeights: { seed: 7 }, dtype, compile, ...where });
const relative = (a, b) => {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return err / scale;
};
const gb = (bytes) => Number((bytes / 1e9).toFixed(2));

for (const size of values.sizes.split(',')) {
  const out = (report.sizes[size] = {});
  // float32 greedy tokens: one GPU, then the split model compiled and eager.
  let model = await load(size, 'float32', true, { device: devices[0] });
  const want = await generateTextBasicCache(model, prompt, { maxNewTokens: steps, eosTokenId: null });
  model.dispose();
  for (const compile of [true, false]) {
    const t0 = performance.now();
    model = await load(size, 'float32', compile, { devices });
    const loadSeconds = (performance.now() - t0) / 1000;
    const got = await generateTextBasicCache(model, prompt, { maxNewTokens: steps, eosTokenId: null });
    const same = JSON.stringify(got) === JSON.stringify(want);
    out[`float32 ${compile ? 'compiled' : 'eager'}`] = { same, loadSeconds: Number(loadSeconds.toFixed(2)), memoryGB: devices.map((d) => gb(memoryStats(d).currentBytes)) };
    if (!same) {
      failed = true;
      out[`float32 ${compile ? 'compiled' : 'eager'}`].tokens = { want, got };
    }
    if (compile) {
      // Continuous batching over the split model: each sequence as it generates alone.
      const prompts = [prompt, prompt.slice(0, 5), prompt.slice(3, 20), [42]];
      const alone = [];
      for (const p of prompts) alone.push(await generateTextBasicCache(model, p, { maxNewTokens: 16, eosTokenId: null }));
      const scheduler = new BatchScheduler(model, { maxBatch: 4 });
      const streams = prompts.map((p) => scheduler.submit({ promptIds: p, maxTokens: 16 }));
      const batched = await Promise.all(streams.map(async (s) => {
        const ids = [];
        for await (const t of s) ids.push(t.id);
        return ids;
      }));
      await scheduler.close();
      out.slots = { same: JSON.stringify(batched) === JSON.stringify(alone) };
      if (!out.slots.same) failed = true;
    }
    model.dispose();
  }
  // bfloat16 logits of the prompt, each model's against one GPU's float32 ones: the split
  // model's sums run in another order, so its rounding differs, but by no more than one GPU's.
  const logits = async (dtype, where) => {
    const m = await load(size, dtype, true, where);
    const data = (await m.forward(prompt)).logits.data;
    m.dispose();
    return data;
  };
  const exact = await logits('float32', { device: devices[0] });
  const one = await logits('bfloat16', { device: devices[0] });
  const split = await logits('bfloat16', { devices });
  const round = (x) => Number(x.toExponential(2));
  out.bfloat16 = { oneVsFloat32: round(relative(one, exact)), splitVsFloat32: round(relative(split, exact)), splitVsOne: round(relative(split, one)) };
  if (!(out.bfloat16.splitVsFloat32 <= 2 * out.bfloat16.oneVsFloat32)) failed = true;
  console.error(size, JSON.stringify(out));
}
console.log(JSON.stringify(report, null, 1));
process.exitCode = failed ? 1 : 0;
