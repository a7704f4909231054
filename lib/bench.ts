// `npm run bench` / `qwen3 bench`: the book's speed table (Regular, Regular compiled, KV cache,
// KV cache compiled; tokens/s and peak device memory) for each device, plus prefill throughput,
// batched decode, compile time and achieved memory bandwidth, optionally side by side with
// Hugging Face transformers on the same weights and device.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { projectPython } from './addon/index.js';
import { modelHome } from './cli-common.js';
import { MODEL_SIZES } from './config.js';
import { availableDevices, resolveDevice } from './device.js';
import { generateBatchCache, generateStats } from './generate.js';
import { Qwen3Model } from './model.js';
import { native, packageRoot } from './native.js';
import { Qwen3Tokenizer } from './tokenizer.js';

export const BENCH_PROMPT = 'Explain large language models in a single sentence.';
export const BENCH_ROWS = ['Regular', 'Regular compiled', 'KV cache', 'KV cache compiled'] as const;
export type BenchRowName = (typeof BENCH_ROWS)[number];

export interface BenchOptions {
  devices?: string[];
  model?: string;
  newTokens?: number;
  runs?: number;
  rows?: BenchRowName[];
  batches?: number[];
  prefill?: number[];
  baseline?: 'transformers';
  log?: (line: string) => void;
}

export interface BenchRow {
  device: string;
  row: string;
  tokensPerSecond: number;
  /** Median time to the first token (the prompt's prefill), seconds. */
  prefillSeconds: number;
  /** Median rate of the tokens after the first: the decode steps alone. */
  decodeTokensPerSecond: number;
  peakMemoryBytes: number | null;
  /** The same measurement from Hugging Face transformers, where --baseline ran it. */
  baselineTokensPerSecond?: number;
}

export interface BenchReport {
  machine: { cpu: string; cores: number; gpus: string[]; libtorch: string; node: string };
  weights: string;
  promptTokens: number;
  newTokens: number;
  runs: number;
  rows: BenchRow[];
  prefill: { device: string; tokens: number; tokensPerSecond: number; baselineTokensPerSecond?: number }[];
  batched: { device: string; batch: number; tokensPerSecond: number; baselineTokensPerSecond?: number }[];
  compileSeconds: Record<string, number>;
  bandwidth: { device: string; measuredGBps: number; bytesPerToken: number; achievedGBps: number; fraction: number }[];
  /** What the baseline could not measure, and why (e.g. its torch.compile failing on a device). */
  baselineErrors?: string[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Real 0.6B base weights if downloaded, else a random-weight 0.6B checkpoint made once by the Python reference. */
function benchWeights(log: (s: string) => void): { path: string; kind: string } {
  const real = join(modelHome(), 'qwen3-0.6B-base.pth');
  if (existsSync(real)) return { path: real, kind: `real Qwen3-0.6B base weights (${real})` };
  const dir = join(modelHome(), 'bench');
  const path = join(dir, 'qwen3-0.6b-random', 'model.pth');
  if (!existsSync(path)) {
    log('No downloaded weights: making a random-weight Qwen3-0.6B checkpoint with scripts/python/make_fixtures.py ...');
    execFileSync(projectPython(), [join(packageRoot, 'scripts', 'python', 'make_fixtures.py'), '--out', dir, '--full-size', '--only', 'qwen3-0.6b-random'], { stdio: 'inherit' });
  }
  return { path, kind: 'random weights of the Qwen3-0.6B shape (no real weights downloaded)' };
}

async function timedRuns(runs: number, fn: () => Promise<number>): Promise<number[]> {
  await fn(); // warm-up: first-use allocations, kernel selection, CUDA graph capture
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(await fn());
  return out;
}

export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const log = options.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const devices = (options.devices ?? availableDevices().filter((d) => !/:\d+$/.test(d))).map((d) => resolveDevice(d));
  const newTokens = options.newTokens ?? 200;
  const runs = options.runs ?? 2;
  const rows = options.rows ?? [...BENCH_ROWS];
  const weights = options.model ? { path: options.model, kind: options.model } : benchWeights(log);
  const tokenizer = await Qwen3Tokenizer.load();
  const prompt = await tokenizer.encode(BENCH_PROMPT);
  const config = MODEL_SIZES['0.6B'];
  const gen = { maxNewTokens: newTokens, ignoreEos: true };
  const info = native().buildInfo();
  const report: BenchReport = {
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, gpus: native().devices().cudaNames, libtorch: info.torchVersion, node: process.version },
    weights: weights.kind,
    promptTokens: prompt.length,
    newTokens,
    runs,
    rows: [],
    prefill: [],
    batched: [],
    compileSeconds: {},
    bandwidth: [],
  };

  for (const device of devices) {
    for (const compile of [false, true]) {
      const wanted = rows.filter((r) => r.endsWith('compiled') === compile);
      const needsModel = wanted.length > 0 || (compile && ((options.batches?.length ?? 3) > 0 || (options.prefill?.length ?? 2) > 0));
      if (!needsModel) continue;
      log(`${device}: loading ${compile ? 'compiled' : 'eager'} model`);
      const model = await Qwen3Model.load(weights.path, { config, device, dtype: 'bfloat16', compile });
      try {
        for (const row of wanted) {
          const useCache = row.startsWith('KV cache');
          const peaks: (number | null)[] = [];
          const prefills: number[] = [];
          const decodes: number[] = [];
          const rates = await timedRuns(runs, async () => {
            const { stats } = await generateStats(model, prompt, { ...gen, useCache });
            peaks.push(stats.peakMemoryBytes);
            prefills.push(stats.prefillSeconds);
            decodes.push(stats.decodeTokensPerSecond);
            return stats.tokensPerSecond;
          });
          const tokensPerSecond = median(rates);
          // Medians of the timed runs (the warm-up's entries come first).
          const prefillSeconds = median(prefills.slice(1));
          const decodeTokensPerSecond = median(decodes.slice(1));
          report.rows.push({ device, row, tokensPerSecond, prefillSeconds, decodeTokensPerSecond, peakMemoryBytes: peaks.at(-1) ?? null });
          log(`${device} ${row}: ${tokensPerSecond.toFixed(1)} tokens/s`);
          if (row === 'KV cache compiled') {
            const measured = await native().measureBandwidth(device, 1 << 30);
            // A decode step reads every weight once except the embedding table (one row of it).
            const bytesPerToken = model.parameterBytes - config.vocab_size * config.emb_dim * 2;
            const achieved = bytesPerToken * tokensPerSecond;
            report.bandwidth.push({ device, measuredGBps: measured / 1e9, bytesPerToken, achievedGBps: achieved / 1e9, fraction: achieved / measured });
          }
        }
        if (!compile) continue;
        report.compileSeconds[device] = model.compileSeconds;
        for (const tokens of options.prefill ?? [512, 2048]) {
          const ids = Array.from({ length: tokens }, (_, i) => prompt[i % prompt.length]!);
          const seconds = await timedRuns(runs, async () => {
            await model.resetCache();
            const t0 = performance.now();
            await model.prefill(ids);
            return (performance.now() - t0) / 1000;
          });
          report.prefill.push({ device, tokens, tokensPerSecond: tokens / median(seconds) });
          log(`${device} prefill ${tokens}: ${(tokens / median(seconds)).toFixed(0)} tokens/s`);
        }
        for (const batch of options.batches ?? [1, 8, 32]) {
          const prompts = Array.from({ length: batch }, () => prompt);
          const seconds = await timedRuns(runs, async () => {
            const t0 = performance.now();
            await generateBatchCache(model, prompts, gen);
            return (performance.now() - t0) / 1000;
          });
          report.batched.push({ device, batch, tokensPerSecond: (batch * newTokens) / median(seconds) });
          log(`${device} batch ${batch}: ${((batch * newTokens) / median(seconds)).toFixed(0)} tokens/s`);
        }
      } finally {
        model.dispose();
      }
    }
    if (options.baseline === 'transformers') mergeBaseline(report, device, weights.path, prompt, options, log);
  }
  return report;
}

/** Runs scripts/python/bench_transformers.py for one device and stores its numbers next to ours. */
function mergeBaseline(report: BenchReport, device: string, weights: string, prompt: number[], options: BenchOptions, log: (s: string) => void): void {
  log(`${device}: running the Hugging Face transformers baseline (torch.compile takes a while)`);
  const args = [join(packageRoot, 'scripts', 'python', 'bench_transformers.py'), '--model', weights, '--device', device, '--prompt-ids', prompt.join(','),
    '--new-tokens', String(report.newTokens), '--runs', String(report.runs),
    '--batches', (options.batches ?? [1, 8, 32]).join(','), '--prefill', (options.prefill ?? [512, 2048]).join(',')];
  const theirs = JSON.parse(execFileSync(projectPython(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 })) as {
    rows: Record<string, number>;
    batched: Record<string, number>;
    prefill: Record<string, number>;
    error?: string;
  };
  if (theirs.error) (report.baselineErrors ??= []).push(`${device}: ${theirs.error}`);
  for (const r of report.rows) if (r.device === device && theirs.rows[r.row] !== undefined) r.baselineTokensPerSecond = theirs.rows[r.row];
  for (const b of report.batched) if (b.device === device) b.baselineTokensPerSecond = theirs.batched[String(b.batch)];
  for (const p of report.prefill) if (p.device === device) p.baselineTokensPerSecond = theirs.prefill[String(p.tokens)];
}

/** The report as markdown tables, shaped like the book's. */
export function formatBenchReport(r: BenchReport): string {
  const gb = (b: number | null) => (b === null ? 'n/a' : `${(b / 1e9).toFixed(2)} GB`);
  const vs = (ours: number, theirs?: number) => (theirs ? ` | ${theirs.toFixed(1)} | ${(ours / theirs).toFixed(2)}x` : '');
  const base = r.rows.some((x) => x.baselineTokensPerSecond);
  const out = [
    `Machine: ${r.machine.cpu} (${r.machine.cores} cores)${r.machine.gpus.length ? `, ${r.machine.gpus.join(', ')}` : ''}; libtorch ${r.machine.libtorch}; Node ${r.machine.node}`,
    `Weights: ${r.weights}. Prompt ${r.promptTokens} tokens, ${r.newTokens} new tokens (EOS ignored), median of ${r.runs} runs after 1 warm-up.`,
    '',
    `| Device | Mode | Tokens/sec | Peak device memory${base ? ' | transformers tokens/sec | ours/theirs' : ''} | First token | Decode tokens/sec |`,
    `|---|---|---|---${base ? '|---|---' : ''}|---|---|`,
    ...r.rows.map(
      (x) =>
        `| ${x.device} | ${x.row} | ${x.tokensPerSecond.toFixed(1)} | ${gb(x.peakMemoryBytes)}${vs(x.tokensPerSecond, x.baselineTokensPerSecond)} | ${(x.prefillSeconds * 1000).toFixed(1)} ms | ${x.decodeTokensPerSecond.toFixed(1)} |`,
    ),
  ];
  if (r.prefill.length) {
    const b2 = r.prefill.some((p) => p.baselineTokensPerSecond);
    out.push('', `| Device | Prefill tokens | Tokens/sec${b2 ? ' | transformers | ours/theirs' : ''} |`, `|---|---|---${b2 ? '|---|---' : ''}|`, ...r.prefill.map((p) => `| ${p.device} | ${p.tokens} | ${p.tokensPerSecond.toFixed(0)}${vs(p.tokensPerSecond, p.baselineTokensPerSecond)} |`));
  }
  if (r.batched.length) {
    const b3 = r.batched.some((b) => b.baselineTokensPerSecond);
    out.push('', `| Device | Batch | Total tokens/sec (KV cache compiled)${b3 ? ' | transformers | ours/theirs' : ''} |`, `|---|---|---${b3 ? '|---|---' : ''}|`, ...r.batched.map((b) => `| ${b.device} | ${b.batch} | ${b.tokensPerSecond.toFixed(0)}${vs(b.tokensPerSecond, b.baselineTokensPerSecond)} |`));
  }
  for (const [device, s] of Object.entries(r.compileSeconds)) out.push('', `Compile time on ${device}: ${s.toFixed(2)} s (weight fusion + CUDA graph captures)`);
  for (const e of r.baselineErrors ?? []) out.push(`Baseline not measured on ${e}`);
  for (const b of r.bandwidth) {
    out.push(`Bandwidth on ${b.device}: ${(b.bytesPerToken / 1e9).toFixed(2)} GB read per token, ${b.achievedGBps.toFixed(0)} GB/s achieved of ${b.measuredGBps.toFixed(0)} GB/s measured (${(100 * b.fraction).toFixed(0)}%)`);
  }
  return out.join('\n');
}
