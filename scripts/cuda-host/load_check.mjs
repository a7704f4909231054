#!/usr/bin/env node
// Load speed and the sizes no disk holds, on one device:
//   1. a Hugging Face folder (scripts/python/make_hf_random.py) loaded in bfloat16 from the page
//      cache, twice: seconds, GB/s of safetensors read, peak host RSS, device memory; with the
//      folder's reference (make_hf_random.py --reference), the prompt's last logits against
//      transformers' float32 ones within the bfloat16 tolerance, so a misplaced piece shows;
//   2. random weights of a size (default 32B) made on the device in bfloat16, compiled, and 20
//      tokens generated: load seconds, tokens/s, device memory.
// Prints one JSON report; exits 1 when a check fails.
//   node scripts/cuda-host/load_check.mjs --dir DIR [--device cuda] [--random-size 32B] [--tokens 20]
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Qwen3Model, generateStats, memoryStats, resetPeakMemory } from '../../dist/index.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string' },
    device: { type: 'string', default: 'cuda' },
    'random-size': { type: 'string', default: '32B' },
    tokens: { type: 'string', default: '20' },
  },
});
const { dir, device } = values;
const tokens = Number(values.tokens);
const gb = (bytes) => Number((bytes / 1e9).toFixed(2));
const deviceGB = () => {
  const m = device === 'cpu' ? null : memoryStats(device);
  return m ? { currentGB: gb(m.currentBytes), peakGB: m.peakBytes === null ? null : gb(m.peakBytes) } : null;
};
const report = { device };
let failed = false;

// The device's context and the addon come up outside the timings: a tiny random model first.
const tiny = { vocab_size: 64, context_length: 64, emb_dim: 64, n_heads: 4, n_layers: 1, hidden_dim: 64, head_dim: 16, qk_norm: true, n_kv_groups: 2, rope_base: 1e6, dtype: 'bfloat16' };
(await Qwen3Model.load({ config: tiny, randomWeights: {}, device })).dispose();

if (dir) {
  // The page cache is warmed through one reused buffer: load speed is measured from memory.
  let fileBytes = 0;
  const chunk = Buffer.allocUnsafe(1 << 24);
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) {
    const fd = openSync(join(dir, f), 'r');
    let n;
    while ((n = readSync(fd, chunk, 0, chunk.length, null)) > 0) fileBytes += n;
    closeSync(fd);
  }
  const loads = [];
  let model = null;
  for (let i = 0; i < 2; i++) {
    model?.dispose();
    const t0 = performance.now();
    model = await Qwen3Model.load(dir, { device, dtype: 'bfloat16' });
    const seconds = (performance.now() - t0) / 1000;
    loads.push({ seconds: Number(seconds.toFixed(2)), GBps: gb(fileBytes / seconds) });
  }
  report.folder = { dir, fileGB: gb(fileBytes), loads, peakRssGB: gb(process.resourceUsage().maxRSS * 1024), device: deviceGB() };
  const refPath = join(dir, 'reference.json');
  if (existsSync(refPath) && existsSync(join(dir, 'last_logits_float32.f32'))) {
    const ref = JSON.parse(readFileSync(refPath, 'utf8'));
    const want = new Float32Array(readFileSync(join(dir, 'last_logits_float32.f32')).buffer.slice(0));
    const { logits } = await model.prefill([ref.prompt], { logits: 'last' });
    let err = 0;
    let scale = 0;
    want.forEach((w, i) => {
      err = Math.max(err, Math.abs(w - logits.data[i]));
      scale = Math.max(scale, Math.abs(w));
    });
    report.folder.lastLogitsRelativeError = err / scale;
    if (!(err / scale < 5e-2)) failed = true;
  }
  model.dispose();
}

if (values['random-size'] !== 'none') {
  if (device !== 'cpu') resetPeakMemory(device);
  const t0 = performance.now();
  const model = await Qwen3Model.load({ config: values['random-size'], randomWeights: { seed: 0 }, device, dtype: 'bfloat16', compile: true });
  const loadSeconds = (performance.now() - t0) / 1000;
  const prompt = [151644, 9707, 11, 1879, 7, 42, 1000, 2000];
  await generateStats(model, prompt, { maxNewTokens: 3, eosTokenId: null }); // warm-up: first use, graph capture
  const { ids, stats } = await generateStats(model, prompt, { maxNewTokens: tokens, eosTokenId: null });
  report.random = {
    size: values['random-size'],
    parameterGB: gb(model.parameterBytes),
    loadSeconds: Number(loadSeconds.toFixed(2)),
    tokens: ids.length,
    tokensPerSecond: Number(stats.tokensPerSecond.toFixed(1)),
    decodeTokensPerSecond: Number(stats.decodeTokensPerSecond.toFixed(1)),
    device: deviceGB(),
  };
  if (ids.length !== tokens) failed = true;
  model.dispose();
}
console.log(JSON.stringify(report));
process.exitCode = failed ? 1 : 0;
