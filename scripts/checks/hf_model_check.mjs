#!/usr/bin/env node
// A Hugging Face folder of a real size (from make_hf_random.py --reference N): load time from the
// page cache and peak memory, greedy tokens in float32 against transformers' (reference.json) and
// the prompt's last logits against transformers', then decode speed in bfloat16.
//   node scripts/checks/hf_model_check.mjs --dir DIR [--device cuda] [--skip-float32] [--compile]
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Qwen3Model, generateStats, memoryStats } from '../../dist/index.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    device: { type: 'string', default: 'cuda' },
    'skip-float32': { type: 'boolean', default: false },
    compile: { type: 'boolean', default: false },
    tokens: { type: 'string', default: '100' },
  },
});
const dir = values.dir;
const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
const shards = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
let fileBytes = 0;
// Warm the page cache (load speed is measured from memory) through one reused buffer.
for (const f of shards) {
  const fd = openSync(join(dir, f), 'r');
  const chunk = Buffer.allocUnsafe(1 << 24);
  let n;
  while ((n = readSync(fd, chunk, 0, chunk.length, null)) > 0) fileBytes += n;
  closeSync(fd);
}
const report = { dir, device: values.device, files: shards.length, fileBytes };

async function timedLoad(dtype) {
  const t0 = performance.now();
  const model = await Qwen3Model.load(dir, { device: values.device, dtype, compile: values.compile });
  return { model, seconds: (performance.now() - t0) / 1000 };
}

if (!values['skip-float32']) {
  const { model, seconds } = await timedLoad('float32');
  report.float32 = { loadSeconds: seconds };
  const steps = ref.greedy_float32.length;
  const { ids } = await generateStats(model, ref.prompt, { maxNewTokens: steps, eosTokenId: null });
  report.float32.greedyEqual = JSON.stringify(ids) === JSON.stringify(ref.greedy_float32);
  report.float32.firstDifferent = ids.findIndex((id, i) => id !== ref.greedy_float32[i]);
  if (existsSync(join(dir, 'last_logits_float32.f32'))) {
    const want = new Float32Array(readFileSync(join(dir, 'last_logits_float32.f32')).buffer.slice(0));
    await model.resetCache();
    const { logits } = await model.prefill([ref.prompt], { logits: 'last' });
    let err = 0, scale = 0;
    want.forEach((w, i) => { err = Math.max(err, Math.abs(w - logits.data[i])); scale = Math.max(scale, Math.abs(w)); });
    report.float32.lastLogitsRelativeError = err / scale;
  }
  model.dispose();
}
const rssBefore = process.memoryUsage().rss;
const { model, seconds } = await timedLoad('bfloat16');
report.bfloat16 = { loadSeconds: seconds, gbPerSecond: fileBytes / seconds / 1e9, peakRssGB: process.resourceUsage().maxRSS * 1024 / 1e9, rssGrowthGB: (process.memoryUsage().rss - rssBefore) / 1e9 };
const mem = values.device === 'cpu' ? null : memoryStats(values.device);
if (mem) report.bfloat16.deviceGB = mem.currentBytes / 1e9;
await generateStats(model, ref.prompt, { maxNewTokens: 5, eosTokenId: null });
const { stats } = await generateStats(model, ref.prompt, { maxNewTokens: Number(values.tokens), eosTokenId: null });
report.bfloat16.tokensPerSecond = stats.tokensPerSecond;
report.bfloat16.decodeTokensPerSecond = stats.decodeTokensPerSecond;
model.dispose();
console.log(JSON.stringify(report));
process.exitCode = report.float32 && !report.float32.greedyEqual ? 1 : 0;
