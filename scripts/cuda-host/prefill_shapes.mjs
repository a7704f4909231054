// The cost of a prompt length seen for the first time: in one process, after the warm-up at
// load, a prefill of each of several new lengths, timed the first time and again, then the
// median of six 2,048-token prefills. QWEN3_SDPA_CUDNN=1 measures cuDNN's attention instead of
// the flash kernels (platform/device.h).
//   node scripts/cuda-host/prefill_shapes.mjs [--size 0.6B]
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { size: { type: 'string', default: '0.6B' } } });
const { Qwen3Model } = await import(new URL('../../dist/index.js', import.meta.url).pathname);
const model = await Qwen3Model.load({ config: values.size, randomWeights: { seed: 0 }, device: 'cuda', dtype: 'bfloat16', compile: true });
const ids = (n) => Array.from({ length: n }, (_, i) => (i * 7919) % 50000);
const time = async (n) => {
  const t0 = performance.now();
  await model.prefill(ids(n));
  const ms = performance.now() - t0;
  await model.resetCache();
  return ms;
};
const rows = [];
for (const n of [10, 11, 37, 100, 300, 700, 1000]) rows.push(`| ${n} | ${(await time(n)).toFixed(1)} | ${(await time(n)).toFixed(1)} |`);
const long = [];
for (let i = 0; i < 6; i++) long.push(await time(2048));
long.sort((a, b) => a - b);
console.log(`${values.size}, bfloat16, compiled; attention: ${process.env.QWEN3_SDPA_CUDNN === '1' ? 'cuDNN' : 'flash'}`);
console.log('| prompt tokens | first prefill of this length (ms) | again (ms) |\n|---:|---:|---:|');
for (const r of rows) console.log(r);
console.log(`2,048-token prefill, median of 6: ${long[3].toFixed(2)} ms (${((2048 / long[3]) * 1000).toFixed(0)} tokens/s)`);
model.dispose();
