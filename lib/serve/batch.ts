// BatchCompleter: the server's completions through continuous batching (lib/batch/scheduler.ts):
// every request joins the running batch at the next step and leaves it at the step where it
// ends, so many clients share each step of the model. `--max-batch 1` is the same code serving
// one request at a time.
import { z } from 'zod';
import { BatchScheduler, QueueFullError as SchedulerQueueFull, type SequenceRequest, type StepSequence } from '../batch/scheduler.js';
import type { Qwen3Model } from '../model.js';
import { integer, parseOptions } from '../validate.js';
import {
  type Completer,
  CompleterClosedError,
  type CompleterStats,
  type Completion,
  type CompletionRequest,
  QueueFullError,
  type StepHook,
  type StepRow,
} from './completer.js';

export interface BatchCompleterOptions {
  /** Requests generated at once (default 32). */
  maxBatch?: number;
  /** Requests that may wait for a place (default 256); one more is refused with QueueFullError. */
  maxQueue?: number;
  /** Ended requests whose keys and values are kept for prefix reuse (default maxBatch). */
  cachedSlots?: number;
  /** See StepHook. */
  beforeStep?: StepHook;
}

export const DEFAULT_MAX_BATCH = 32;
export const DEFAULT_MAX_QUEUE = 256;

interface Job {
  request: CompletionRequest;
  /** Aborted by the request's signal or by close('abort'): what the scheduler and beforeStep see. */
  stop: AbortController;
}

export class BatchCompleter implements Completer {
  readonly #scheduler: BatchScheduler;
  readonly #jobs = new WeakMap<SequenceRequest, Job>();
  readonly #live = new Set<Job>();
  /** Completions ended by a stop token, which the scheduler does not count as generated. */
  #stops = 0;
  #closed = false;

  constructor(model: Qwen3Model, options: BatchCompleterOptions = {}) {
    const o = parseOptions(
      z
        .object({
          maxBatch: integer(1, 1024).optional(),
          maxQueue: integer(0, 2 ** 31 - 1).optional(),
          cachedSlots: integer(0, 4096).optional(),
          beforeStep: z.custom<StepHook>((f) => typeof f === 'function', { error: 'Expected function' }).optional(),
        })
        .strict(),
      options,
    );
    const hook = o.beforeStep;
    this.#scheduler = new BatchScheduler(model, {
      maxBatch: o.maxBatch ?? DEFAULT_MAX_BATCH,
      maxQueue: o.maxQueue ?? DEFAULT_MAX_QUEUE,
      cachedSlots: o.cachedSlots,
      beforeStep: hook ? (sequences) => hook(sequences.map((s) => this.#row(s))) : undefined,
    });
  }

  complete(request: CompletionRequest): Completion {
    if (this.#closed) throw new CompleterClosedError();
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    const sequenceRequest: SequenceRequest = {
      promptIds: request.promptIds,
      maxTokens: request.maxTokens,
      temperature: request.temperature,
      topK: request.topK,
      topP: request.topP,
      seed: request.seed,
      stopIds: request.stopIds,
      logprobs: request.logprobs,
      signal: stop.signal,
    };
    let stream;
    try {
      stream = this.#scheduler.submit(sequenceRequest);
    } catch (err) {
      throw err instanceof SchedulerQueueFull ? new QueueFullError(err.limit) : err;
    }
    const job: Job = { request, stop };
    this.#jobs.set(sequenceRequest, job);
    this.#live.add(job);
    if (request.signal.aborted) stop.abort();
    else request.signal.addEventListener('abort', onAbort, { once: true });
    // The sequence is the completion: its tokens as they come, and its end with OpenAI's count
    // (which includes a stop token the model generated; the sequence does not emit it).
    const finish = stream.finished.then((reason) => ({ reason, generatedTokens: stream.usage.completionTokens + (reason === 'stop' ? 1 : 0) }));
    finish.catch(() => {}); // a failure reaches the reader through the iteration too
    void finish
      .then(
        ({ reason }) => {
          if (reason === 'stop') this.#stops++;
        },
        () => {},
      )
      .finally(() => {
        request.signal.removeEventListener('abort', onAbort);
        this.#live.delete(job);
      });
    return { finish, [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator]() };
  }

  stats(): CompleterStats {
    const s = this.#scheduler.stats();
    return { queued: s.queued, running: s.running, generatedTokens: s.generatedTokens + this.#stops };
  }

  async close(how: 'drain' | 'abort'): Promise<void> {
    this.#closed = true;
    if (how === 'abort') for (const job of this.#live) job.stop.abort();
    await this.#scheduler.close(how);
  }

  #row(seq: StepSequence): StepRow {
    const job = this.#jobs.get(seq.request)!;
    return { request: job.request, generated: seq.generated, signal: job.stop.signal };
  }
}
