// First token after load, as a one-shot `qwen3 generate` sees it: each case is a fresh process
// (first-use costs are per process) that loads random weights and generates from a 512-token and
// then, in another process, a 10-token prompt. Eager and compiled, with the default warm-up at
// load (on CUDA) and with --no-warmup. Prints a table of the first token (the generation's prefillSeconds) and of
// the whole process's wall time (load included).
//   node scripts/cuda-host/cold_start.mjs [--size 0.6B] [--device cuda]
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { size: { type: 'string', default: '0.6B' }, device: { type: 'string', default: 'cuda' } } });
const cli = new URL('../../dist/cli.js', import.meta.url).pathname;

function run(promptTokens, flags) {
  const ids = Array.from({ length: promptTokens }, (_, i) => (i * 7919) % 50000).join(',');
  const args = [cli, 'generate', '--random-weights', '--size', values.size, '--device', values.device, '--dtype', 'bfloat16',
    '--prompt-ids', ids, '--max-new-tokens', '20', '--ignore-eos', '--json', ...flags];
  const t0 = performance.now();
  const out = JSON.parse(execFileSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
  return { firstTokenMs: out.stats.prefillSeconds * 1000, processSeconds: (performance.now() - t0) / 1000 };
}

const rows = [];
for (const compile of [false, true]) {
  for (const warmup of [false, true]) {
    const flags = [...(compile ? ['--compile'] : []), ...(warmup ? [] : ['--no-warmup'])];
    const long = run(512, flags);
    const short = run(10, flags);
    rows.push(`| ${compile ? 'compiled' : 'eager'} | ${warmup ? 'default' : '--no-warmup'} | ${long.firstTokenMs.toFixed(1)} | ${short.firstTokenMs.toFixed(1)} | ${long.processSeconds.toFixed(2)} |`);
  }
}
console.log(`${values.size} on ${values.device}, bfloat16, random weights`);
console.log('| mode | warm-up | first token, 512-token prompt (ms) | first token, 10-token prompt (ms) | process wall time, 512 (s) |');
console.log('|---|---|---:|---:|---:|');
for (const r of rows) console.log(r);
