// `npm run bench` / `qwen3 bench`: the book's speed table (Regular, Regular compiled, KV cache,
// KV cache compiled; tokens/s and peak device memory) for each device, plus prefill throughput,
// batched decode, compile time and achieved memory bandwidth, optionally side by side with
// Hugging Face transformers on the same weights and device. The weights are the book's
// Qwen3-0.6B by default, or any model the library loads: a checkpoint, a Hugging Face folder or
// repo id, or random weights of any config's shape made on the device.
import { execFileSync } from 'node:child_process';
import { cpus, freemem, totalmem } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { projectPython } from './addon/index.js';
import { DTYPES, type Dtype, type Quantize, type Qwen3Config } from './config.js';
import { availableDevices, resolveDevice } from './device.js';
import { MAX_BATCH_SIZE, PREFILL_CHUNK_SIZE, generateBatchCache, generateStats } from './generate.js';
import { BENCH_CONFIG, type BenchSource, benchSource, checkWeightsChoice, loadSource, sameShape } from './bench-weights.js';
import { type RandomWeights, loadSchema, resolveRanks } from './model/load.js';
import { describeEstimate, estimateGenerationMemory, formatGB } from './model/memory.js';
import { Qwen3Model } from './model.js';
import { native, packageRoot } from './native.js';
import { Qwen3Tokenizer } from './tokenizer.js';
import { InvalidOptionError, integer, nonEmptyString, oneOf, parseOptions } from './validate.js';

export const BENCH_PROMPT = 'Explain large language models in a single sentence.';
export const BENCH_ROWS = ['Regular', 'Regular compiled', 'KV cache', 'KV cache compiled'] as const;
export type BenchRowName = (typeof BENCH_ROWS)[number];
/** What a run measures when an option is left out (the CLI shows these in its help). */
export const BENCH_DEFAULTS = { newTokens: 200, runs: 2, batches: [1, 8, 32], prefill: [512, 2048] } as const;
/** The compute dtype unless asked otherwise. */
const BENCH_DTYPE: Dtype = 'bfloat16';
const MAX_RUNS = 1000;
/** The largest context any config may have (lib/config.ts); the model's own is checked once known. */
const MAX_CONTEXT = 1 << 24;

export interface BenchOptions {
  devices?: string[];
  /** A checkpoint (.pth), a Hugging Face folder or a Hub repo id (downloaded first). */
  model?: string;
  /** For a Hub repo id: the branch, tag or commit. */
  revision?: string;
  /** For a .pth or random weights: a config object, JSON file (either key set) or size; default "0.6B". */
  config?: Qwen3Config | string;
  /** Compute dtype, default bfloat16. */
  dtype?: Dtype;
  /** Random weights of the config's shape, made on each device (Qwen3Model.load's randomWeights). */
  randomWeights?: RandomWeights;
  /** Weights quantized at load (Qwen3Model.load's quantize). */
  quantize?: Quantize;
  newTokens?: number;
  runs?: number;
  rows?: BenchRowName[];
  batches?: number[];
  prefill?: number[];
  /** Context lengths for batch-1 decode after a long prompt (none by default). */
  contexts?: number[];
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
  dtype: Dtype;
  /** The format the weights were quantized to at load, if any. */
  quantize?: Quantize;
  promptTokens: number;
  newTokens: number;
  runs: number;
  rows: BenchRow[];
  prefill: { device: string; tokens: number; tokensPerSecond: number; baselineTokensPerSecond?: number }[];
  batched: { device: string; batch: number; tokensPerSecond: number; baselineTokensPerSecond?: number }[];
  compileSeconds: Record<string, number>;
  bandwidth: { device: string; measuredGBps: number; bytesPerToken: number; achievedGBps: number; fraction: number }[];
  /**
   * Batch-1 decode after a prompt of `contextTokens` (compiled): its rate, and the weights plus the
   * keys and values a step reads, against the device's measured copy bandwidth.
   */
  contextDecode: { device: string; contextTokens: number; decodeTokensPerSecond: number; bytesPerToken: number; achievedGBps: number; fraction: number }[];
  /** What the baseline could not measure, and why (e.g. its torch.compile failing on a device). */
  baselineErrors?: string[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** What a benchmark run measures: the options with every default filled in. */
interface BenchPlan {
  devices: string[];
  model: string | undefined;
  revision: string | undefined;
  config: Qwen3Config | string | undefined;
  dtype: Dtype;
  randomWeights: RandomWeights | undefined;
  quantize: Quantize | undefined;
  newTokens: number;
  runs: number;
  rows: BenchRowName[];
  batches: number[];
  prefill: number[];
  contexts: number[];
  /** Which of newTokens and prefill the caller gave; the defaults shrink to fit a short context. */
  given: { newTokens: boolean; prefill: boolean };
  baseline: 'transformers' | undefined;
  log: (line: string) => void;
}

/** The options; the lengths are checked against the model's context once it is known (contextSchema). */
function optionsSchema(promptTokens: number) {
  return z
    .object({
      devices: z.array(nonEmptyString(), { error: 'Expected array of device names' }).optional(),
      model: nonEmptyString().optional(),
      revision: nonEmptyString().optional(),
      config: loadSchema.shape.config,
      dtype: oneOf(DTYPES).optional(),
      randomWeights: loadSchema.shape.randomWeights,
      quantize: loadSchema.shape.quantize,
      newTokens: integer(1, MAX_CONTEXT - promptTokens).optional(),
      runs: integer(1, MAX_RUNS).optional(),
      rows: z.array(oneOf(BENCH_ROWS), { error: 'Expected array of row names' }).optional(),
      batches: z.array(integer(1, MAX_BATCH_SIZE), { error: 'Expected array of batch sizes' }).optional(),
      prefill: z.array(integer(1, MAX_CONTEXT), { error: 'Expected array of prompt lengths' }).optional(),
      contexts: z.array(integer(1, MAX_CONTEXT), { error: 'Expected array of context lengths' }).optional(),
      baseline: oneOf(['transformers']).optional(),
      log: z.custom<(line: string) => void>((f) => typeof f === 'function', { error: 'Expected function' }).optional(),
    })
    .strict();
}

/** Every option checked and defaulted before anything is loaded, built or run. */
function benchPlan(options: BenchOptions, promptTokens: number): BenchPlan {
  const o = parseOptions(optionsSchema(promptTokens), options);
  return {
    // An entry "cuda:0,cuda:1" is one tensor-parallel model over those devices.
    devices: (o.devices ?? availableDevices().filter((d) => !/:\d+$/.test(d))).map((d) =>
      d.includes(',') ? resolveRanks({ devices: d.split(',') }).join(',') : resolveDevice(d, 'devices')),
    model: o.model,
    revision: o.revision,
    config: o.config as Qwen3Config | string | undefined,
    dtype: o.dtype ?? BENCH_DTYPE,
    randomWeights: o.randomWeights,
    quantize: o.quantize,
    newTokens: o.newTokens ?? BENCH_DEFAULTS.newTokens,
    runs: o.runs ?? BENCH_DEFAULTS.runs,
    rows: o.rows ?? [...BENCH_ROWS],
    batches: o.batches ?? [...BENCH_DEFAULTS.batches],
    prefill: o.prefill ?? [...BENCH_DEFAULTS.prefill],
    contexts: o.contexts ?? [],
    given: { newTokens: o.newTokens !== undefined, prefill: o.prefill !== undefined },
    baseline: o.baseline,
    log: o.log ?? ((s: string) => process.stderr.write(`${s}\n`)),
  };
}

/**
 * The plan for this model: lengths the caller gave are checked against its context, the default
 * ones shrink to fit it; and the baseline, which knows only the 0.6B checkpoint, is refused for
 * other weights.
 */
function fitToModel(plan: BenchPlan, config: Qwen3Config, checkpoint: boolean, promptTokens: number): BenchPlan {
  const context = config.context_length;
  const newTokens = plan.given.newTokens ? plan.newTokens : Math.min(BENCH_DEFAULTS.newTokens, context - promptTokens);
  const prefill = plan.given.prefill ? plan.prefill : BENCH_DEFAULTS.prefill.filter((n) => n <= context);
  parseOptions(z.object({ newTokens: integer(1, context - promptTokens) }), { newTokens });
  parseOptions(z.object({ prefill: z.array(integer(1, context)) }), { prefill });
  parseOptions(z.object({ contexts: z.array(integer(1, context - newTokens)) }), { contexts: plan.contexts });
  if (plan.baseline && (!checkpoint || !sameShape(config, BENCH_CONFIG))) {
    throw new InvalidOptionError("The transformers baseline runs the book's Qwen3-0.6B checkpoint in bfloat16 only, not this model", 'baseline');
  }
  return { ...plan, newTokens, prefill };
}

/**
 * Refuses, with the numbers, a measurement that cannot fit in this machine's memory (one that
 * would otherwise end with the kernel's OOM killer). Checked for the CPU, against the memory
 * available now; device memory is not queried, so GPU runs are not checked here (the load
 * itself checks the weights and a generation against the device's free memory).
 */
function checkMemory(plan: BenchPlan, config: Qwen3Config, tied: boolean, promptTokens: number): void {
  if (!plan.devices.includes('cpu')) return;
  const tokens = promptTokens + plan.newTokens;
  const work = [
    ...(plan.rows.length > 0 ? [{ what: `Generating ${plan.newTokens} tokens`, batch: 1, tokens, passTokens: tokens }] : []),
    ...plan.batches.map((batch) => ({ what: `Batch ${batch}`, batch, tokens, passTokens: Math.min(promptTokens, PREFILL_CHUNK_SIZE) })),
    ...plan.prefill.map((length) => ({ what: `A prefill of ${length} tokens`, batch: 1, tokens: length, passTokens: length })),
    ...plan.contexts.map((length) => ({
      what: `Decoding after ${length} tokens`, batch: 1, tokens: length + plan.newTokens, passTokens: Math.min(length, PREFILL_CHUNK_SIZE),
    })),
  ];
  const available = freemem();
  for (const { what, ...size } of work) {
    const estimate = estimateGenerationMemory(config, plan.dtype, size, tied);
    if (estimate.total > available) {
      throw new InvalidOptionError(
        `${what} needs about ${formatGB(estimate.total)} of memory (${describeEstimate(estimate)}); this machine has ${formatGB(available)} available of ${formatGB(totalmem())}`,
        what.startsWith('Batch') ? 'batches' : what.startsWith('A prefill') ? 'prefill' : what.startsWith('Decoding') ? 'contexts' : 'newTokens',
      );
    }
  }
}

function emptyReport(plan: BenchPlan, weights: string, promptTokens: number): BenchReport {
  const info = native().buildInfo();
  return {
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, gpus: native().devices().cudaNames, libtorch: info.torchVersion, node: process.version },
    weights,
    dtype: plan.dtype,
    ...(plan.quantize ? { quantize: plan.quantize } : {}),
    promptTokens,
    newTokens: plan.newTokens,
    runs: plan.runs,
    rows: [],
    prefill: [],
    batched: [],
    compileSeconds: {},
    bandwidth: [],
    contextDecode: [],
  };
}

async function timedRuns(runs: number, fn: () => Promise<number>): Promise<number[]> {
  await fn(); // warm-up: first-use allocations, kernel selection, CUDA graph capture
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(await fn());
  return out;
}

/** One row of the speed table: whole generations of the book's prompt, with or without the KV cache. */
async function measureRow(model: Qwen3Model, device: string, row: BenchRowName, prompt: number[], plan: BenchPlan, report: BenchReport): Promise<number> {
  const useCache = row.startsWith('KV cache');
  const peaks: (number | null)[] = [];
  const prefills: number[] = [];
  const decodes: number[] = [];
  const rates = await timedRuns(plan.runs, async () => {
    const { stats } = await generateStats(model, prompt, { maxNewTokens: plan.newTokens, ignoreEos: true, useCache });
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
  plan.log(`${device} ${row}: ${tokensPerSecond.toFixed(1)} tokens/s`);
  return tokensPerSecond;
}

/** Bytes a batch-1 decode step reads of the weights: all but the embedding table (one row of it). */
function weightBytesPerToken(model: Qwen3Model): number {
  // A tied table is the head as well, read whole, unless the head is a quantized copy of it.
  const config = model.config;
  const embedding = model.tieWordEmbeddings && !model.quantize ? 0 : config.vocab_size * config.emb_dim * (model.dtype === 'float32' ? 4 : 2);
  return model.parameterBytes - embedding;
}

/** The copy bandwidth of the model's devices together: tensor-parallel ranks read their shares at once. */
async function copyBandwidth(model: Qwen3Model): Promise<number> {
  return (await native().measureBandwidth(model.device, 1 << 30)) * model.devices.length;
}

/** The device's copy bandwidth (`bandwidth`, bytes/s) next to what the fastest row achieved. */
async function measureBandwidth(model: Qwen3Model, device: string, tokensPerSecond: number, bandwidth: () => Promise<number>, report: BenchReport): Promise<void> {
  const measured = await bandwidth();
  const bytesPerToken = weightBytesPerToken(model);
  const achieved = bytesPerToken * tokensPerSecond;
  report.bandwidth.push({ device, measuredGBps: measured / 1e9, bytesPerToken, achievedGBps: achieved / 1e9, fraction: achieved / measured });
}

/**
 * Batch-1 decode after a long prompt: each step also reads the keys and values of every token
 * before it, on average the prompt and half the new tokens.
 */
async function measureContexts(
  model: Qwen3Model, device: string, prompt: number[], plan: BenchPlan, bandwidth: () => Promise<number>, report: BenchReport,
): Promise<void> {
  if (plan.contexts.length === 0) return;
  const measured = await bandwidth();
  const c = model.config;
  const kvBytesPerToken = 2 * c.n_layers * c.n_kv_groups * c.head_dim * (model.dtype === 'float32' ? 4 : 2);
  for (const contextTokens of plan.contexts) {
    const ids = Array.from({ length: contextTokens }, (_, i) => prompt[i % prompt.length]!);
    const rates = await timedRuns(plan.runs, async () => {
      const { stats } = await generateStats(model, ids, { maxNewTokens: plan.newTokens, ignoreEos: true });
      return stats.decodeTokensPerSecond;
    });
    const decodeTokensPerSecond = median(rates);
    const bytesPerToken = weightBytesPerToken(model) + kvBytesPerToken * (contextTokens + plan.newTokens / 2);
    const achieved = bytesPerToken * decodeTokensPerSecond;
    report.contextDecode.push({ device, contextTokens, decodeTokensPerSecond, bytesPerToken, achievedGBps: achieved / 1e9, fraction: achieved / measured });
    plan.log(`${device} decode after ${contextTokens} tokens: ${decodeTokensPerSecond.toFixed(1)} tokens/s`);
  }
}

/** Prompt throughput: one prefill of each length from an empty cache. */
async function measurePrefill(model: Qwen3Model, device: string, prompt: number[], plan: BenchPlan, report: BenchReport): Promise<void> {
  for (const tokens of plan.prefill) {
    const ids = Array.from({ length: tokens }, (_, i) => prompt[i % prompt.length]!);
    const seconds = await timedRuns(plan.runs, async () => {
      await model.resetCache();
      const t0 = performance.now();
      await model.prefill(ids);
      return (performance.now() - t0) / 1000;
    });
    report.prefill.push({ device, tokens, tokensPerSecond: tokens / median(seconds) });
    plan.log(`${device} prefill ${tokens}: ${(tokens / median(seconds)).toFixed(0)} tokens/s`);
  }
}

/** Batched decode: the same prompt in every row, total tokens per second. */
async function measureBatches(model: Qwen3Model, device: string, prompt: number[], plan: BenchPlan, report: BenchReport): Promise<void> {
  for (const batch of plan.batches) {
    const prompts = Array.from({ length: batch }, () => prompt);
    const seconds = await timedRuns(plan.runs, async () => {
      const t0 = performance.now();
      await generateBatchCache(model, prompts, { maxNewTokens: plan.newTokens, ignoreEos: true });
      return (performance.now() - t0) / 1000;
    });
    report.batched.push({ device, batch, tokensPerSecond: (batch * plan.newTokens) / median(seconds) });
    plan.log(`${device} batch ${batch}: ${((batch * plan.newTokens) / median(seconds)).toFixed(0)} tokens/s`);
  }
}

/**
 * Everything measured on one device: the eager model for the uncompiled rows, then the compiled
 * one for its rows, the bandwidth, prefill and batched decode (each model loaded only if needed).
 */
async function benchDevice(device: string, source: BenchSource, prompt: number[], plan: BenchPlan, report: BenchReport): Promise<void> {
  for (const compile of [false, true]) {
    const wanted = plan.rows.filter((r) => r.endsWith('compiled') === compile);
    const needsModel = wanted.length > 0 || (compile && (plan.batches.length > 0 || plan.prefill.length > 0 || plan.contexts.length > 0));
    if (!needsModel) continue;
    plan.log(`${device}: loading ${compile ? 'compiled' : 'eager'} model`);
    const model = await loadSource(source, device, plan.dtype, compile, plan.quantize);
    // Measured once per model, for the bandwidth line and the long-context rows.
    let copied: Promise<number> | undefined;
    const bandwidth = () => (copied ??= copyBandwidth(model));
    try {
      for (const row of wanted) {
        const tokensPerSecond = await measureRow(model, device, row, prompt, plan, report);
        if (row === 'KV cache compiled') await measureBandwidth(model, device, tokensPerSecond, bandwidth, report);
      }
      if (!compile) continue;
      report.compileSeconds[device] = model.compileSeconds;
      await measurePrefill(model, device, prompt, plan, report);
      await measureBatches(model, device, prompt, plan, report);
      await measureContexts(model, device, prompt, plan, bandwidth, report);
    } finally {
      model.dispose();
    }
  }
}

/**
 * Runs the benchmark. Every option is checked first, and work that cannot fit in memory is
 * refused, before any weights are made or loaded.
 */
export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const tokenizer = await Qwen3Tokenizer.load();
  const prompt = await tokenizer.encode(BENCH_PROMPT);
  const request = benchPlan(options, prompt.length);
  checkWeightsChoice(request);
  if (request.model === undefined && !request.randomWeights) {
    // The default checkpoint may have to be made: only once every check has passed.
    checkMemory(fitToModel(request, BENCH_CONFIG, true, prompt.length), BENCH_CONFIG, false, prompt.length);
  }
  const source = await benchSource(request);
  const plan = fitToModel(request, source.config, source.kind === 'checkpoint', prompt.length);
  checkMemory(plan, source.config, source.kind !== 'checkpoint' && source.tied, prompt.length);
  const report = emptyReport(plan, source.description, prompt.length);
  // Speed does not depend on which tokens run: a model with a smaller vocabulary than the
  // tokenizer's (a test model) gets the prompt's ids folded into its own.
  const ids = prompt.map((id) => id % source.config.vocab_size);
  for (const device of plan.devices) {
    await benchDevice(device, source, ids, plan, report);
    if (plan.baseline === 'transformers' && source.kind === 'checkpoint' && !device.includes(',')) mergeBaseline(report, device, source.path, prompt, plan);
  }
  return report;
}

/** Runs scripts/python/bench_transformers.py for one device and stores its numbers next to ours. */
function mergeBaseline(report: BenchReport, device: string, weights: string, prompt: number[], plan: BenchPlan): void {
  plan.log(`${device}: running the Hugging Face transformers baseline (torch.compile takes a while)`);
  const args = [join(packageRoot, 'scripts', 'python', 'bench_transformers.py'), '--model', weights, '--device', device, '--prompt-ids', prompt.join(','),
    '--new-tokens', String(report.newTokens), '--runs', String(report.runs),
    '--batches', plan.batches.join(','), '--prefill', plan.prefill.join(',')];
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
    `Weights: ${r.weights}, ${r.dtype ?? BENCH_DTYPE}${r.quantize ? ` (${r.quantize} at load)` : ''}. Prompt ${r.promptTokens} tokens, ${r.newTokens} new tokens (EOS ignored), median of ${r.runs} runs after 1 warm-up.`,
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
  if (r.contextDecode?.length) {
    out.push('', '| Device | Context tokens | Decode tokens/sec (batch 1, compiled) | GB read per token | Bandwidth used |', '|---|---|---|---|---|');
    for (const x of r.contextDecode) {
      out.push(`| ${x.device} | ${x.contextTokens} | ${x.decodeTokensPerSecond.toFixed(1)} | ${(x.bytesPerToken / 1e9).toFixed(2)} | ${x.achievedGBps.toFixed(0)} GB/s (${(100 * x.fraction).toFixed(0)}%) |`);
    }
  }
  return out.join('\n');
}
