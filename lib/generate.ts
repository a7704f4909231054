// Text generation over a Qwen3Model: the book's generate_text_basic family (no cache, cache,
// streaming) plus sampling, abort and statistics. The core is one async generator of token ids.
import { z } from 'zod';
import { Qwen3Model, type ModelSession, type SamplingOptions } from './model.js';
import { InvalidOptionError, abortSignal, boolean, describeValue, integer, number, parseOptions } from './validate.js';
import { seededUniforms } from './model/uniforms.js';

export interface GenerateOptions {
  /** How many tokens to generate at most. Default 50. */
  maxNewTokens?: number;
  /** Stop when this token is generated (it is not returned). null: never stop early. */
  eosTokenId?: number | null;
  /** Keep going past eosTokenId (benchmarks). */
  ignoreEos?: boolean;
  /** false: re-feed the whole sequence every step (the book's generate_text_basic). Default true. */
  useCache?: boolean;
  /** 0 (default) is greedy argmax. */
  temperature?: number;
  /** Keep only the k most likely tokens (0: all). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1: all). */
  topP?: number;
  /** Same seed, same sampled tokens. Default: random. */
  seed?: number;
  /**
   * Stops within one step (one native call of up to 16 steps on CUDA), or between two prefill
   * chunks while the prompt is being read; what was generated so far is kept.
   */
  signal?: AbortSignal;
  /**
   * Prompt tokens per prefill call with the KV cache (default PREFILL_CHUNK_SIZE). A prompt longer
   * than this is prefilled in pieces, so an abort takes effect after at most one piece.
   */
  prefillChunkSize?: number;
}

/**
 * Prompt tokens per prefill call by default: long enough that the per-call overhead is lost in
 * the work, short enough that an abort during a long prompt lands within seconds on a CPU.
 */
export const PREFILL_CHUNK_SIZE = 512;

/** The most prompts generateBatchCache takes in one batch. */
export const MAX_BATCH_SIZE = 65_536;

export interface GenerationStats {
  /** Wall time of the whole generation. */
  seconds: number;
  generatedTokens: number;
  tokensPerSecond: number;
  /** Time to the first new token (the prompt's forward pass). */
  prefillSeconds: number;
  /** New tokens after the first, per second of decoding. */
  decodeTokensPerSecond: number;
  /** Peak device memory during the generation; null where the device reports none (CPU). */
  peakMemoryBytes: number | null;
  device: string;
  aborted: boolean;
}

function optionsSchema(model: Qwen3Model) {
  return z
    .object({
      maxNewTokens: integer(1, model.config.context_length).optional(),
      // Any id: one past the model's vocabulary (a big tokenizer on a small test model) simply never stops it.
      eosTokenId: integer(0, 2 ** 31 - 1).nullable().optional(),
      ignoreEos: boolean().optional(),
      useCache: boolean().optional(),
      temperature: number(0, 100).optional(),
      topK: integer(0, model.config.vocab_size).optional(),
      topP: number(0, 1, { exclusiveMin: true }).optional(),
      seed: integer(0, 2 ** 32 - 1).optional(),
      signal: abortSignal().optional(),
      prefillChunkSize: integer(1, model.config.context_length).optional(),
    })
    .strict();
}

/** Every entry point checks its model first, so a wrong argument never surfaces as a TypeError deep inside. */
function checkModel(model: unknown): asserts model is Qwen3Model {
  if (!(model instanceof Qwen3Model)) throw new InvalidOptionError(`Expected Qwen3Model for model but received ${describeValue(model)}`, 'model');
}

interface Timing {
  start: number;
  firstToken?: number;
  end?: number;
  count: number;
  aborted: boolean;
}

/** What both generation loops derive from their options: length, stop token and sampling per step. */
type ParsedOptions = z.output<ReturnType<typeof optionsSchema>>;

interface Plan {
  maxNewTokens: number;
  eos: number | null;
  /** Sampling settings for `steps` steps (default 1); draws one uniform per row and step when sampling. */
  sampling: (steps?: number) => SamplingOptions;
  /** Decode steps per native call (Qwen3Model.decodeSteps): 1 where a call costs little next to a step. */
  chunk: number;
  prefillChunk: number;
}

/**
 * On CUDA a decode step takes about a millisecond, so a round trip through JS per token would
 * leave the GPU idle for a tenth of the time; there steps run 16 to a native call (chained on
 * the device when greedy). Elsewhere each step is its own call, which streams every token as
 * soon as it exists.
 */
const CUDA_DECODE_CHUNK = 16;

function plan(model: Qwen3Model, o: ParsedOptions, promptLength: number, rows: number): Plan {
  const maxNewTokens = o.maxNewTokens ?? 50;
  if (promptLength + maxNewTokens > model.config.context_length) {
    throw new RangeError(
      `Expected prompt plus maxNewTokens to fit the context_length of ${model.config.context_length} but received ${promptLength} + ${maxNewTokens}`,
    );
  }
  if ((o.temperature ?? 0) > 0 && o.seed === undefined && model.processGroup && !model.forwardsCalls) {
    throw new InvalidOptionError('A model split over processes samples only with a seed (or with forwardCalls): every rank must draw the same numbers', 'seed');
  }
  const draw = (o.temperature ?? 0) > 0 ? seededUniforms(o.seed ?? Math.floor(Math.random() * 2 ** 32)) : null;
  return {
    maxNewTokens,
    eos: o.ignoreEos ? null : (o.eosTokenId ?? null),
    // Draws in step order, so the same seed samples the same tokens whatever the chunking.
    sampling: (steps = 1) => ({ temperature: o.temperature ?? 0, topK: o.topK ?? 0, topP: o.topP ?? 1, uniforms: draw?.(rows * steps) }),
    chunk: model.device.startsWith('cuda') ? CUDA_DECODE_CHUNK : 1,
    prefillChunk: o.prefillChunkSize ?? PREFILL_CHUNK_SIZE,
  };
}

const GREEDY: SamplingOptions = { temperature: 0, topK: 0, topP: 1 };

/**
 * Runs equally long prompt rows into an empty KV cache, `chunk` tokens per call, checking the
 * signal before each call. Returns the next token per row, or null when the signal fired first.
 * Only the last call samples (the earlier ones' next tokens are discarded), so the seeded draws
 * are the same however the prompt is cut. Left padding is taken only by the step that starts the
 * cache and must leave that step a real token in every row, so the first chunk is stretched to
 * one past the longest padding when needed.
 */
async function prefillInChunks(
  session: ModelSession,
  rows: readonly (readonly number[])[],
  chunk: number,
  sampling: () => SamplingOptions,
  signal: AbortSignal | undefined,
  pad?: readonly number[],
): Promise<number[] | null> {
  const length = rows[0]!.length;
  let longestPad = 0;
  for (const p of pad ?? []) longestPad = Math.max(longestPad, p);
  const padding = longestPad > 0 ? pad : undefined;
  for (let start = 0, end = Math.min(length, Math.max(chunk, longestPad + 1)); ; start = end, end = Math.min(length, end + chunk)) {
    if (signal?.aborted) return null;
    const last = end === length;
    const ids = start === 0 && last ? rows : rows.map((row) => row.slice(start, end));
    const { next } = await session.prefill(ids, 'none', last ? sampling() : GREEDY, start === 0 ? padding : undefined);
    if (last) return next;
  }
}

/**
 * Core loop: yields new token ids for a single prompt (batch 1). Holds the model's lock while
 * it runs, so concurrent generations on one model queue up instead of sharing the KV cache.
 */
async function* tokens(model: Qwen3Model, promptIds: readonly number[], options: GenerateOptions, timing?: Timing): AsyncGenerator<number> {
  checkModel(model);
  const o = parseOptions(optionsSchema(model), options);
  if (!Array.isArray(promptIds)) parseOptions(z.array(z.number(), { error: 'Expected array of token ids' }), promptIds, 'promptIds');
  const { maxNewTokens, eos, sampling, chunk, prefillChunk } = plan(model, o, promptIds.length, 1);
  const useCache = o.useCache ?? true;

  const { session, release } = await model.acquire();
  try {
    const sequence = [...promptIds];
    let ready: number[] = []; // tokens a multi-step call produced that are not yielded yet
    // The next token, or null when an abort landed between prefill chunks.
    const step = async (s: ModelSession, i: number): Promise<number | null> => {
      if (ready.length > 0) return ready.shift()!;
      if (!useCache) return (await s.forward(sequence, 'none', sampling())).next[0]!;
      if (i === 0) return (await prefillInChunks(s, [sequence], prefillChunk, sampling, o.signal))?.[0] ?? null;
      const last = [sequence[sequence.length - 1]!];
      const n = Math.min(chunk, maxNewTokens - i);
      if (n === 1) return (await s.decode(last, 'none', sampling())).next[0]!;
      ready = (await s.decodeSteps(last, n, sampling(n), eos)).steps.map((row) => row[0]!);
      return ready.shift()!;
    };
    if (useCache) session.resetCache();
    for (let i = 0; i < maxNewTokens; i++) {
      const next = o.signal?.aborted ? null : await step(session, i);
      if (next === null) {
        if (timing) timing.aborted = true;
        return;
      }
      if (timing) {
        timing.firstToken ??= performance.now();
        timing.count++;
      }
      if (next === eos) return;
      sequence.push(next);
      yield next;
    }
  } finally {
    if (timing) timing.end = performance.now();
    release();
  }
}

async function collect(gen: AsyncGenerator<number>): Promise<number[]> {
  const out: number[] = [];
  for await (const id of gen) out.push(id);
  return out;
}

/** The book's generate_text_basic: no KV cache, the whole sequence re-fed each step. */
export function generateTextBasic(model: Qwen3Model, promptIds: readonly number[], options: GenerateOptions = {}): Promise<number[]> {
  return collect(tokens(model, promptIds, { ...options, useCache: false }));
}

/** The book's generate_text_basic_cache: prefill once, then one token per step. */
export function generateTextBasicCache(model: Qwen3Model, promptIds: readonly number[], options: GenerateOptions = {}): Promise<number[]> {
  return collect(tokens(model, promptIds, { ...options, useCache: true }));
}

/** Streaming form of generateTextBasic: `for await (const id of ...)`. */
export function generateTextBasicStream(model: Qwen3Model, promptIds: readonly number[], options: GenerateOptions = {}): AsyncGenerator<number> {
  return tokens(model, promptIds, { ...options, useCache: false });
}

/** Streaming form of generateTextBasicCache. */
export function generateTextBasicStreamCache(model: Qwen3Model, promptIds: readonly number[], options: GenerateOptions = {}): AsyncGenerator<number> {
  return tokens(model, promptIds, { ...options, useCache: true });
}

/**
 * Batched greedy or sampled generation with the KV cache (one prefill of the whole batch, then
 * one decode step per token for all rows). Prompts of different lengths are left-padded with an
 * attention mask. Each row stops at
 * its first eosTokenId (not returned); the batch runs until every row has stopped. An abort
 * keeps what each row has so far: one empty row per prompt when it fired before the first token.
 */
export async function generateBatchCache(
  model: Qwen3Model,
  prompts: readonly (readonly number[])[],
  options: Omit<GenerateOptions, 'useCache'> = {},
): Promise<number[][]> {
  checkModel(model);
  const o = parseOptions(optionsSchema(model), options);
  if (!Array.isArray(prompts) || prompts.length === 0) {
    throw new InvalidOptionError(`Expected non-empty array of prompts for prompts but received ${describeValue(prompts)}`, 'prompts');
  }
  if (prompts.length > MAX_BATCH_SIZE) {
    throw new InvalidOptionError(`Expected at most ${MAX_BATCH_SIZE} prompts for prompts but received ${describeValue(prompts)}`, 'prompts');
  }
  // Shorter prompts are left-padded to the longest; the padding is masked out and skipped by
  // RoPE, so each row generates what it would alone. (A loop, not Math.max(...lengths): a
  // spread of a huge batch overflows the call stack.)
  let length = 0;
  prompts.forEach((p, i) => {
    if (!Array.isArray(p)) throw new InvalidOptionError(`Expected array of token ids for prompts[${i}] but received ${describeValue(p)}`, `prompts[${i}]`);
    if (p.length === 0) throw new InvalidOptionError('Expected at least one token in every prompt for prompts', 'prompts');
    length = Math.max(length, p.length);
  });
  const pad = prompts.map((p) => length - p.length);
  const padded = prompts.map((p, i) => new Array<number>(pad[i]!).fill(0).concat(p));
  const { maxNewTokens, eos, sampling, chunk, prefillChunk } = plan(model, o, length, prompts.length);
  if (o.signal?.aborted) return prompts.map(() => []);
  return model.exclusive(async (session) => {
    const out: number[][] = prompts.map(() => []);
    const done = prompts.map(() => false);
    // Takes one step's tokens; true once every row has finished.
    const take = (ids: number[]): boolean => {
      ids.forEach((id, row) => {
        if (done[row]) return;
        if (id === eos) done[row] = true;
        else out[row]!.push(id);
      });
      return done.every(Boolean);
    };
    session.resetCache();
    const first = await prefillInChunks(session, padded, prefillChunk, sampling, o.signal, pad);
    if (first === null) return out;
    let last = first;
    let produced = 1;
    if (take(last)) return out;
    while (produced < maxNewTokens && !o.signal?.aborted) {
      const n = Math.min(chunk, maxNewTokens - produced);
      const feed = last.map((id) => [id]);
      const steps = n > 1 ? (await session.decodeSteps(feed, n, sampling(n), eos)).steps : [(await session.decode(feed, 'none', sampling())).next];
      for (const ids of steps) {
        produced++;
        last = ids;
        if (take(ids)) return out;
      }
    }
    return out;
  });
}

/**
 * The book's generate_stats, folded into generation: generates, then reports time, tokens/s,
 * prefill time, decode tokens/s and peak device memory (the peak is reset first). `onToken`
 * sees each id as it is generated; `print: true` writes the book-style lines to stderr.
 */
export async function generateStats(
  model: Qwen3Model,
  promptIds: readonly number[],
  options: GenerateOptions & { print?: boolean; onToken?: (id: number) => void } = {},
): Promise<{ ids: number[]; stats: GenerationStats }> {
  checkModel(model);
  const { print, onToken, ...generateOptions } = options ?? {};
  parseOptions(
    z.object({ print: boolean().optional(), onToken: z.custom<(id: number) => void>((f) => typeof f === 'function', { error: 'Expected function' }).optional() }),
    { print, onToken },
  );
  model.resetPeakMemory();
  const timing: Timing = { start: performance.now(), count: 0, aborted: false };
  const ids: number[] = [];
  for await (const id of tokens(model, promptIds, generateOptions, timing)) {
    ids.push(id);
    onToken?.(id);
  }
  const end = timing.end ?? performance.now();
  const seconds = (end - timing.start) / 1000;
  const prefillSeconds = ((timing.firstToken ?? end) - timing.start) / 1000;
  const decodeSeconds = seconds - prefillSeconds;
  const stats: GenerationStats = {
    seconds,
    generatedTokens: timing.count,
    tokensPerSecond: seconds > 0 ? timing.count / seconds : 0,
    prefillSeconds,
    decodeTokensPerSecond: decodeSeconds > 0 && timing.count > 1 ? (timing.count - 1) / decodeSeconds : 0,
    peakMemoryBytes: model.memoryStats()?.peakBytes ?? null,
    device: model.device,
    aborted: timing.aborted,
  };
  if (print) process.stderr.write(`${formatStats(stats)}\n`);
  return { ids, stats };
}

/** The book's stats lines: "Time: 1.40 sec", "29 tokens/sec", "Max CUDA memory allocated: 1.52 GB". */
export function formatStats(stats: GenerationStats): string {
  if (typeof stats !== 'object' || stats === null || typeof stats.seconds !== 'number') {
    throw new InvalidOptionError(`Expected generation stats object for stats but received ${describeValue(stats)}`, 'stats');
  }
  const lines = [
    `Time: ${stats.seconds.toFixed(2)} sec`,
    `${Math.round(stats.tokensPerSecond)} tokens/sec`,
    `Prefill: ${stats.prefillSeconds.toFixed(3)} sec, decode: ${stats.decodeTokensPerSecond.toFixed(1)} tokens/sec`,
  ];
  if (stats.peakMemoryBytes !== null) {
    const kind = stats.device.startsWith('cuda') ? 'CUDA' : stats.device.toUpperCase();
    lines.push(`Max ${kind} memory allocated: ${(stats.peakMemoryBytes / 1e9).toFixed(2)} GB`);
  }
  return lines.join('\n');
}
