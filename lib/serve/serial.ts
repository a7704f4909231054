// SerialCompleter: one request at a time, in arrival order, on a Qwen3Model's public step API
// (the `--max-batch 1` mode of `qwen3 serve`). Each request takes the model's turn-taking lock,
// so other users of the same model interleave safely and no step blocks the event loop; it
// prefills its prompt in PREFILL_CHUNK_SIZE pieces and decodes one token per step, sampling with
// the same seeded draws as the library's generate functions (same seed, same tokens), reading
// logprobs from the returned logits, and checking its signal between steps.
import { z } from 'zod';
import { PREFILL_CHUNK_SIZE } from '../generate.js';
import { seededUniforms } from '../model/uniforms.js';
import type { LogitsMode, Qwen3Model, StepOutput } from '../model.js';
import { GREEDY, type SamplingOptions } from '../model/request.js';
import { InvalidOptionError, abortSignal, integer, number, parseOptions } from '../validate.js';
import { CompletionChannel } from './channel.js';
import {
  type Completer,
  CompleterClosedError,
  type CompleterStats,
  type Completion,
  type CompletionRequest,
  type CompletionToken,
  type FinishReason,
  MAX_TOP_LOGPROBS,
  QueueFullError,
  type StepHook,
} from './completer.js';
import { tokenLogprobs } from './logprobs.js';

export interface SerialCompleterOptions {
  /** Requests that may wait while one runs (default 256); one more is refused with QueueFullError. */
  maxQueue?: number;
  /** See StepHook. */
  beforeStep?: StepHook;
}

export const DEFAULT_MAX_QUEUE = 256;

interface Job {
  request: CompletionRequest;
  channel: CompletionChannel;
  /** Aborted by the request's signal or by close('abort'). */
  stop: AbortController;
  /** Listens to the request's signal: aborts `stop`, and ends the job if it is still queued. */
  onAbort: () => void;
}

function requestSchema(model: Qwen3Model) {
  const { vocab_size: vocab, context_length: context } = model.config;
  return z.object({
    promptIds: z.array(integer(0, vocab - 1), { error: 'Expected array of token ids' }).min(1, { error: 'Expected at least one token id' }),
    maxTokens: integer(1, context),
    temperature: number(0, 100),
    topK: integer(0, vocab),
    topP: number(0, 1, { exclusiveMin: true }),
    seed: integer(0, 2 ** 32 - 1).optional(),
    stopIds: z.array(integer(0, 2 ** 31 - 1), { error: 'Expected array of token ids' }),
    logprobs: integer(0, MAX_TOP_LOGPROBS).nullable(),
    signal: abortSignal(),
  });
}

export class SerialCompleter implements Completer {
  readonly #model: Qwen3Model;
  readonly #maxQueue: number;
  readonly #beforeStep: StepHook | undefined;
  readonly #schema: ReturnType<typeof requestSchema>;
  #queue: Job[] = [];
  #running: Job | null = null;
  #generated = 0;
  #closed = false;
  #whenIdle: (() => void)[] = [];

  constructor(model: Qwen3Model, options: SerialCompleterOptions = {}) {
    const o = parseOptions(
      z.object({ maxQueue: integer(0, 2 ** 31 - 1).optional(), beforeStep: z.custom<StepHook>((f) => typeof f === 'function', { error: 'Expected function' }).optional() }).strict(),
      options,
    );
    this.#model = model;
    this.#maxQueue = o.maxQueue ?? DEFAULT_MAX_QUEUE;
    this.#beforeStep = o.beforeStep;
    this.#schema = requestSchema(model);
  }

  complete(request: CompletionRequest): Completion {
    if (this.#closed) throw new CompleterClosedError();
    const r = parseOptions(this.#schema, request) as CompletionRequest;
    const { context_length: context } = this.#model.config;
    if (r.promptIds.length + r.maxTokens > context) {
      throw new InvalidOptionError(
        `Expected promptIds plus maxTokens to fit the context_length of ${context} but received ${r.promptIds.length} + ${r.maxTokens}`,
        'maxTokens',
      );
    }
    if (this.#running !== null && this.#queue.length >= this.#maxQueue) throw new QueueFullError(this.#maxQueue);
    const job: Job = {
      request: r,
      channel: new CompletionChannel(),
      stop: new AbortController(),
      onAbort: () => {
        job.stop.abort();
        this.#dropQueued(job);
      },
    };
    if (r.signal.aborted) job.stop.abort();
    else r.signal.addEventListener('abort', job.onAbort, { once: true });
    this.#queue.push(job);
    this.#next();
    return job.channel;
  }

  stats(): CompleterStats {
    return { queued: this.#queue.length, running: this.#running === null ? 0 : 1, generatedTokens: this.#generated };
  }

  close(how: 'drain' | 'abort'): Promise<void> {
    this.#closed = true;
    if (how === 'abort') {
      this.#running?.stop.abort();
      for (const job of this.#queue.splice(0)) this.#endQueued(job);
    }
    if (this.#running === null && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#whenIdle.push(resolve));
  }

  #dropQueued(job: Job): void {
    const at = this.#queue.indexOf(job);
    if (at < 0) return; // already running: the loop sees the signal
    this.#queue.splice(at, 1);
    this.#endQueued(job);
  }

  #endQueued(job: Job): void {
    job.request.signal.removeEventListener('abort', job.onAbort);
    job.stop.abort();
    job.channel.end({ reason: 'abort', generatedTokens: 0 });
    this.#settleIfIdle();
  }

  #next(): void {
    if (this.#running !== null) return;
    const job = this.#queue.shift();
    if (job === undefined) return this.#settleIfIdle();
    this.#running = job;
    void this.#run(job).finally(() => {
      job.request.signal.removeEventListener('abort', job.onAbort);
      this.#running = null;
      this.#next();
    });
  }

  #settleIfIdle(): void {
    if (this.#running !== null || this.#queue.length > 0) return;
    for (const resolve of this.#whenIdle.splice(0)) resolve();
  }

  async #run({ request: r, channel, stop }: Job): Promise<void> {
    const aborted = () => stop.signal.aborted;
    const rows = [{ request: r, generated: 0, signal: stop.signal }];
    const end = (reason: FinishReason) => channel.end({ reason, generatedTokens: rows[0]!.generated });
    const hold = async (): Promise<boolean> => {
      if (this.#beforeStep) await this.#beforeStep(rows);
      return aborted();
    };
    try {
      if (aborted()) return end('abort');
      const { session, release } = await this.#model.acquire();
      try {
        session.resetCache();
        // Draws in step order, one per sampled step, exactly as lib/generate.ts does.
        const draw = r.temperature > 0 ? seededUniforms(r.seed ?? Math.floor(Math.random() * 2 ** 32)) : null;
        const sampling = (): SamplingOptions => ({ temperature: r.temperature, topK: r.topK, topP: r.topP, uniforms: draw?.(1) });
        const logits: LogitsMode = r.logprobs === null ? 'none' : 'last';
        const stops = new Set(r.stopIds);
        const ids = r.promptIds;
        let out: StepOutput | null = null;
        for (let start = 0; start < ids.length; start += PREFILL_CHUNK_SIZE) {
          if (await hold()) return end('abort');
          const last = start + PREFILL_CHUNK_SIZE >= ids.length;
          out = await session.prefill(ids.slice(start, start + PREFILL_CHUNK_SIZE), last ? logits : 'none', last ? sampling() : GREEDY);
        }
        for (;;) {
          const id = out!.next[0]!;
          rows[0]!.generated++;
          this.#generated++;
          if (stops.has(id)) return end('stop');
          channel.push(this.#token(id, out!, r.logprobs));
          if (rows[0]!.generated >= r.maxTokens) return end('length');
          if (await hold()) return end('abort');
          out = await session.decode([id], logits, sampling());
        }
      } finally {
        release();
      }
    } catch (err) {
      channel.fail(err);
    }
  }

  #token(id: number, out: StepOutput, logprobs: number | null): CompletionToken {
    if (logprobs === null || out.logits === null) return { id };
    return { id, ...tokenLogprobs(out.logits.data, id, logprobs) };
  }
}
