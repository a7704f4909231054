#!/usr/bin/env node
// Full-size check and load benchmark: loads a random-weight Qwen3-0.6B checkpoint made by
// `make_fixtures.py --full-size`, reports load time, throughput from the page cache and peak
// RSS, then checks 30 greedy tokens (KV cache) against the reference implementation's and
// reports decode tokens/s.
//   node scripts/full_size_check.mjs [--fixture DIR] [--device cpu|cuda] [--steps N] [--compile]
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Qwen3Model, generateStats } from '../dist/index.js';

const { values } = parseArgs({
  options: {
    fixture: { type: 'string', default: 'test/.fixtures/qwen3-0.6b-random' },
    device: { type: 'string', default: 'cpu' },
    steps: { type: 'string', default: '30' },
    compile: { type: 'boolean', default: false },
  },
});
const dir = values.fixture;
const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
const expected = ref.runs.bfloat16.ref_greedy_cache;
const modelPath = join(dir, 'model.pth');
const fileBytes = statSync(modelPath).size;

// Warm the page cache (the target is load speed from memory) through one small reused buffer,
// so the read itself does not raise this process's peak RSS.
{
  const fd = openSync(modelPath, 'r');
  const chunk = Buffer.allocUnsafe(1 << 24);
  while (readSync(fd, chunk, 0, chunk.length, null) > 0);
  closeSync(fd);
}
const rssBefore = process.memoryUsage().rss;
const t0 = performance.now();
const model = await Qwen3Model.load(modelPath, { config: join(dir, 'config.json'), device: values.device, dtype: 'bfloat16', compile: values.compile });
const loadSeconds = (performance.now() - t0) / 1000;
const peakRss = process.resourceUsage().maxRSS * 1024;

const steps = Math.min(Number(values.steps), expected.length);
await generateStats(model, ref.prompt, { maxNewTokens: 3, eosTokenId: null }); // warm-up
const { ids, stats } = await generateStats(model, ref.prompt, { maxNewTokens: steps, eosTokenId: null });
const same = ids.length === steps && ids.every((id, i) => id === expected[i]);
const report = {
  device: model.device,
  compiled: model.compiled,
  fileMiB: +(fileBytes / 2 ** 20).toFixed(1),
  loadSeconds: +loadSeconds.toFixed(3),
  loadGBps: +(fileBytes / 1e9 / loadSeconds).toFixed(2),
  peakRssMiB: +(peakRss / 2 ** 20).toFixed(1),
  rssBeforeLoadMiB: +(rssBefore / 2 ** 20).toFixed(1),
  peakRssOverFile: +(peakRss / fileBytes).toFixed(3),
  decodeTokensPerSecond: +stats.decodeTokensPerSecond.toFixed(2),
  tokensPerSecond: +stats.tokensPerSecond.toFixed(2),
  peakDeviceMemoryMiB: stats.peakMemoryBytes === null ? null : +(stats.peakMemoryBytes / 2 ** 20).toFixed(1),
  steps,
  greedyMatchesReference: same,
};
console.log(JSON.stringify(report, null, 2));
if (!same) {
  console.error(`greedy tokens differ:\n ours ${ids.join(',')}\n ref  ${expected.slice(0, steps).join(',')}`);
  process.exitCode = 1;
}
model.dispose();
