#!/usr/bin/env node
// Leak check: does memory stop growing over many generations, and does dispose() give it back?
//
//   node scripts/checks/leak_check.mjs [--fixture test/.fixtures/tiny-gqa4] [--generations 1000] [--every 100]
//        [--tokens 20] [--cycles 20] [--device auto|cpu|cuda|cuda:N] [--device-generations 200] [--compile] [--json]
//
// 1. Host: a model on the CPU runs --generations generations of --tokens tokens; the process RSS
//    (after a full GC) is sampled 20 times over the run and printed every --every generations.
//    The first quarter is warm-up: allocator arenas and caches fill (on a many-core host that
//    takes longer). The rest is cut into 4 stretches, each summed up by the median of its
//    samples. A leak raises every stretch over the one before by the same amount; the
//    allocator's one-off steps (a new arena for a thread, a cache growing once: up to 8 MiB, even
//    late in a short run) raise one. So the verdict is the SMALLEST rise between stretches, which
//    must stay under 1 MiB: samples scatter by about +-0.5 MiB, a median of 4 or more by half
//    that. Over 1,000 generations a leak of 10 KiB per generation fails it. The RSS must also grow
//    by less than 24 MiB in all after warm-up: room for a few such steps, not for a leak that
//    comes in bursts.
// 2. Host: --cycles load/dispose cycles; RSS after the last may exceed the third by 32 MiB at most.
// 3. Device (when --device resolves to CUDA, as "auto" does on a GPU machine): the baseline is
//    the allocated device memory after one warm-up load, generation and dispose(), since the
//    first use of CUDA leaves per-process state behind for good (cuBLAS workspaces: reported as
//    "first use"). Then allocated memory after a load, every 20 of --device-generations
//    generations (must be flat: each generation reuses the KV cache), and after dispose() (must
//    equal the baseline); then 5 load/dispose cycles, each back to the baseline. --compile loads
//    the device model compiled (fused weights, CUDA-graph decode).
// Exits 1 when a check fails.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

if (typeof globalThis.gc !== 'function') {
  // RSS samples are only comparable after a full collection: run again with --expose-gc.
  const r = spawnSync(process.execPath, ['--expose-gc', ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(import.meta.url);
const lib = require(join(ROOT, 'dist', 'index.js'));

const args = { fixture: join(ROOT, 'test', '.fixtures', 'tiny-gqa4'), generations: 1000, every: 100, tokens: 20, cycles: 20, device: 'auto', deviceGenerations: 200 };
const SAMPLES = 20;
const STRETCHES = 4;
const STEADY_RISE_LIMIT_MIB = 1;
const TOTAL_GROWTH_LIMIT_MIB = 24;
for (let i = 2; i < process.argv.length; i++) {
  const key = process.argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
  if (key === 'json' || key === 'compile') args[key] = true;
  else args[key] = typeof args[key] === 'number' ? Number(process.argv[++i]) : process.argv[++i];
}

const modelPath = join(args.fixture, 'model.pth');
const configPath = join(args.fixture, 'config.json');
const prompt = JSON.parse(readFileSync(join(args.fixture, 'reference.json'), 'utf8')).prompt;
const MiB = 2 ** 20;
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    globalThis.gc();
    await new Promise((r) => setImmediate(r));
  }
};
const rss = async () => {
  await settle();
  return process.memoryUsage().rss;
};
const load = (device) => lib.Qwen3Model.load(modelPath, { config: configPath, device, dtype: 'float32', compile: device !== 'cpu' && Boolean(args.compile) });
const generate = (model) => lib.generateTextBasicCache(model, prompt, { maxNewTokens: args.tokens, eosTokenId: null });
const report = { checks: [] };
const check = (name, ok, detail) => {
  report.checks.push({ name, ok, detail });
  if (!args.json) console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}: ${detail}`);
};
const say = (line) => args.json || console.log(line);

// 1. RSS over many generations on the CPU.
{
  const model = await load('cpu');
  await generate(model);
  const start = await rss();
  const curve = [{ generations: 0, rssMiB: start / MiB }];
  const sampleEvery = Math.max(1, Math.floor(args.generations / SAMPLES));
  const t0 = performance.now();
  say(`host RSS over ${args.generations} generations of ${args.tokens} tokens (${modelPath}, cpu, float32)`);
  say(`  generations  RSS MiB  vs start`);
  say(`  ${String(0).padStart(11)}  ${(start / MiB).toFixed(1).padStart(7)}`);
  for (let i = 1; i <= args.generations; i++) {
    await generate(model);
    const shown = i % args.every === 0;
    if (i % sampleEvery === 0 || shown) {
      const now = await rss();
      curve.push({ generations: i, rssMiB: now / MiB });
      if (shown) say(`  ${String(i).padStart(11)}  ${(now / MiB).toFixed(1).padStart(7)}  ${((now - start) / MiB >= 0 ? '+' : '') + ((now - start) / MiB).toFixed(1)}`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  model.dispose();
  const verdict = growthAfterWarmUp(curve, args.generations);
  report.rssCurve = curve;
  report.rssGrowth = verdict;
  report.generationsPerSecond = args.generations / seconds;
  check(
    'RSS stops growing',
    verdict.steadyRiseMiB <= STEADY_RISE_LIMIT_MIB && verdict.totalMiB <= TOTAL_GROWTH_LIMIT_MIB,
    `after ${verdict.warmUp} warm-up generations, the ${STRETCHES} stretches rise by ${verdict.risesMiB.map((r) => r.toFixed(2)).join(', ')} MiB: ` +
      `at least ${verdict.steadyRiseMiB.toFixed(2)} each (limit ${STEADY_RISE_LIMIT_MIB}); ${verdict.totalMiB.toFixed(1)} MiB in all ` +
      `(limit ${TOTAL_GROWTH_LIMIT_MIB}); ${(args.generations / seconds).toFixed(0)} generations/s`,
  );
}

function median(xs) {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * The RSS after warm-up (the first quarter of the run) in STRETCHES stretches of samples: the
 * rise of each stretch's median over the one before, the smallest of those rises (what a steady
 * leak adds to every stretch), and the growth from the first sample after warm-up to the last.
 */
function growthAfterWarmUp(curve, generations) {
  const warmUp = Math.ceil(generations / 4);
  const points = curve.filter((p) => p.generations >= warmUp);
  const size = Math.floor(points.length / STRETCHES);
  if (size < 1) throw new Error(`too few RSS samples after warm-up (${points.length}) for ${STRETCHES} stretches: run more generations`);
  const levels = Array.from({ length: STRETCHES }, (_, k) => median(points.slice(k * size, k === STRETCHES - 1 ? points.length : (k + 1) * size).map((p) => p.rssMiB)));
  const risesMiB = levels.slice(1).map((l, k) => l - levels[k]);
  return { warmUp, samples: points.length, risesMiB, steadyRiseMiB: Math.min(...risesMiB), totalMiB: points.at(-1).rssMiB - points[0].rssMiB };
}

// 2. RSS over load/dispose cycles.
{
  const points = [];
  for (let i = 0; i < args.cycles; i++) {
    (await load('cpu')).dispose();
    points.push((await rss()) / MiB);
  }
  report.cycleRssMiB = points;
  const growth = points[points.length - 1] - points[Math.min(2, points.length - 1)];
  check(`${args.cycles} load/dispose cycles`, growth <= 32, `RSS ${points.map((p) => p.toFixed(0)).join(' ')} MiB; +${growth.toFixed(1)} MiB after the third (limit 32)`);
}

// 3. Device memory, where there is a device that reports it.
const device = lib.resolveDevice(args.device);
if (device.startsWith('cuda')) {
  const allocated = () => lib.memoryStats(device)?.currentBytes ?? 0;
  const untouched = allocated();
  {
    const warm = await load(device);
    await generate(warm);
    warm.dispose();
    await settle();
  }
  const baseline = allocated();
  const model = await load(device);
  const afterLoad = allocated();
  await generate(model);
  const samples = [];
  for (let i = 1; i <= args.deviceGenerations; i++) {
    await generate(model);
    if (i % 20 === 0) samples.push(allocated());
  }
  const peak = lib.memoryStats(device)?.peakBytes ?? null;
  model.dispose();
  await settle();
  const afterDispose = allocated();
  const cycles = [];
  for (let i = 0; i < 5; i++) {
    (await load(device)).dispose();
    cycles.push(allocated());
  }
  report.device = { device, untouched, baseline, afterLoad, samples, peak, afterDispose, cycles };
  say(`device memory on ${device}${args.compile ? ', compiled' : ''} (allocated bytes): first use ${baseline - untouched}, baseline ${baseline}, after load ${afterLoad}, peak ${peak}`);
  say(`  every 20 of ${args.deviceGenerations} generations: ${samples.join(' ')}`);
  check('device memory flat across generations', Math.max(...samples) === Math.min(...samples),
    `${samples.length} samples between ${Math.min(...samples)} and ${Math.max(...samples)} bytes`);
  check('device memory back to the baseline after dispose()', afterDispose === baseline, `${afterDispose} bytes after, ${baseline} before`);
  check('5 device load/dispose cycles', cycles.every((b) => b === baseline), `allocated after each: ${cycles.join(' ')}`);
} else {
  say(`device memory: skipped (device ${device} reports none; run on a CUDA machine or pass --device cuda)`);
}

if (args.json) console.log(JSON.stringify(report, null, 1));
process.exitCode = report.checks.every((c) => c.ok) ? 0 : 1;
