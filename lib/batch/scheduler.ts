// Continuous batching: many sequences share each step of one model. Every step runs one new
// token for each sequence that is decoding plus, within a token budget, chunks of the prompts
// of sequences that have just joined; a sequence leaves the batch at the step where it ends, and
// a waiting one takes its place at the next. Each sequence has a slot of its own in the KV cache
// (model/slots.ts), so rows never wait for or pad to each other. Ended sequences leave their
// slots in a prefix cache: a request that starts with the same tokens (a system prompt, the
// earlier turns of a conversation) only runs what is new. The steps go through the model's
// turn-taking queue like every other call, so the event loop never waits on them.
import { z } from 'zod';
import { PREFILL_CHUNK_SIZE } from '../generate.js';
import type { Qwen3Model } from '../model.js';
import { MAX_TOP_LOGPROBS, type SlotRow } from '../model/slots.js';
import { abortSignal, integer, number, parseOptions } from '../validate.js';
import { PrefixCache, commonPrefix } from './prefix-cache.js';
import { type FinishReason, Sequence, type SequenceRequest, type SequenceStream } from './sequence.js';

export type { FinishReason, GeneratedToken, SequenceRequest, SequenceStream, SequenceUsage } from './sequence.js';

export interface SchedulerOptions {
  /** Sequences in the running batch at most. Default 32. */
  maxBatch?: number;
  /** Sequences waiting for a place at most; more are refused with QueueFullError. Default 256. */
  maxQueue?: number;
  /** Prompt tokens per step at most, so a long prompt does not stall the running rows. Default 512. */
  prefillChunk?: number;
  /** Ended sequences whose slots are kept for prefix reuse. Default maxBatch. */
  cachedSlots?: number;
  /** A new request copies a running sequence's keys and values when they share at least this many tokens. Default 16. */
  minSharedPrefix?: number;
  /**
   * Awaited before every step with the sequences it advances; a sequence aborted meanwhile is
   * left out of the step. Tests hold the scheduler at a known point with it; tracing can count.
   */
  beforeStep?: (sequences: readonly StepSequence[]) => void | Promise<void>;
}

/** A sequence as beforeStep sees it. */
export interface StepSequence {
  /** The object given to submit(). */
  readonly request: SequenceRequest;
  /** Tokens emitted so far. */
  readonly generated: number;
}

export interface SchedulerStats {
  queued: number;
  running: number;
  steps: number;
  promptTokens: number;
  cachedPromptTokens: number;
  generatedTokens: number;
}

export class QueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`The queue is full (${limit} requests waiting): try again later`);
    this.name = 'QueueFullError';
  }
}

const optionsSchema = z
  .object({
    maxBatch: integer(1, 1024).optional(),
    maxQueue: integer(0, 1_000_000).optional(),
    prefillChunk: integer(1, 1_000_000).optional(),
    cachedSlots: integer(0, 4096).optional(),
    minSharedPrefix: integer(1, 1_000_000).optional(),
    beforeStep: z.custom<SchedulerOptions['beforeStep']>((f) => typeof f === 'function', { error: 'Expected function' }).optional(),
  })
  .strict();

const GREEDY_ROW = { temperature: 0, topK: 0, topP: 1 };

export class BatchScheduler {
  readonly #model: Qwen3Model;
  readonly #maxBatch: number;
  readonly #maxQueue: number;
  readonly #prefillChunk: number;
  readonly #minShared: number;
  readonly #cache: PrefixCache;
  readonly #beforeStep: SchedulerOptions['beforeStep'];
  readonly #parseRequest: (request: SequenceRequest) => SequenceRequest;
  readonly #waiting: Sequence[] = [];
  readonly #running: Sequence[] = [];
  #loop: Promise<void> | null = null;
  #closed = false;
  readonly #stats: SchedulerStats = { queued: 0, running: 0, steps: 0, promptTokens: 0, cachedPromptTokens: 0, generatedTokens: 0 };

  constructor(model: Qwen3Model, options: SchedulerOptions = {}) {
    const o = parseOptions(optionsSchema, options);
    this.#model = model;
    this.#maxBatch = o.maxBatch ?? 32;
    this.#maxQueue = o.maxQueue ?? 256;
    this.#prefillChunk = o.prefillChunk ?? PREFILL_CHUNK_SIZE;
    this.#minShared = o.minSharedPrefix ?? 16;
    this.#cache = new PrefixCache(o.cachedSlots ?? this.#maxBatch);
    this.#beforeStep = o.beforeStep;
    this.#parseRequest = requestParser(model);
  }

  /** Queues a request; its tokens stream as they are chosen. Throws QueueFullError when the queue is full. */
  submit(request: SequenceRequest): SequenceStream {
    if (this.#closed) throw new Error('The scheduler is closed');
    const r = this.#parseRequest(request);
    if (this.#waiting.length >= this.#maxQueue) throw new QueueFullError(this.#maxQueue);
    const seq = new Sequence(r, request);
    this.#stats.promptTokens += seq.promptLength;
    if (seq.signal?.aborted) {
      seq.finish('abort');
      return seq;
    }
    this.#waiting.push(seq);
    this.#loop ??= this.#runSteps().finally(() => (this.#loop = null));
    return seq;
  }

  stats(): SchedulerStats {
    return { ...this.#stats, queued: this.#waiting.length, running: this.#running.length };
  }

  /** Refuses new requests; 'drain' lets the others finish, 'abort' ends them now. Then gives the slots back. */
  async close(how: 'drain' | 'abort' = 'drain'): Promise<void> {
    this.#closed = true;
    if (how === 'abort') {
      for (const seq of [...this.#waiting.splice(0), ...this.#running]) seq.finish('abort');
    }
    await this.#loop;
    for (const slot of this.#cache.clear()) this.#model.giveSlot(slot);
  }

  async #runSteps(): Promise<void> {
    while (this.#waiting.length > 0 || this.#running.length > 0) {
      this.#dropEnded();
      await this.#admit();
      let step = this.#plan();
      if (this.#beforeStep && step.rows.length > 0) {
        await this.#beforeStep(step.sequences);
        step = this.#withoutEnded(step);
      }
      if (step.rows.length === 0) continue;
      let outputs;
      try {
        outputs = await this.#model.slotStep(step.rows, { topLogprobs: step.topLogprobs });
      } catch (err) {
        for (const seq of step.sequences) this.#end(seq, err);
        continue;
      }
      this.#stats.steps++;
      step.sequences.forEach((seq, i) => {
        const out = outputs[i]!;
        seq.computed = out.length;
        if (!step.produces[i] || seq.done) return;
        const token = seq.logprobs === null ? { id: out.next } : { id: out.next, logprob: out.logprob, top: out.top?.slice(0, seq.logprobs) };
        const reason = seq.accept(token);
        if (reason !== 'stop') this.#stats.generatedTokens++;
        if (reason) this.#end(seq, reason);
      });
    }
  }

  /** Ends the sequences that were aborted (or closed) while waiting or running. */
  #dropEnded(): void {
    for (const list of [this.#waiting, this.#running]) {
      for (const seq of [...list]) {
        if (seq.signal?.aborted && !seq.done) seq.finish('abort');
        if (seq.done) this.#end(seq, 'abort');
      }
    }
  }

  /** Removes a sequence from the batch and keeps its slot for prefix reuse (or gives it back after a failure). */
  #end(seq: Sequence, outcome: FinishReason | unknown): void {
    for (const list of [this.#waiting, this.#running]) {
      const i = list.indexOf(seq);
      if (i >= 0) list.splice(i, 1);
    }
    if (outcome === 'stop' || outcome === 'length' || outcome === 'abort') seq.finish(outcome);
    else seq.fail(outcome);
    if (seq.slot < 0) return;
    const slot = seq.slot;
    seq.slot = -1;
    if (outcome !== 'stop' && outcome !== 'length' && outcome !== 'abort') {
      this.#model.giveSlot(slot); // what the slot holds after a failed step is unknown
      return;
    }
    for (const evicted of this.#cache.put({ slot, tokens: seq.tokens.slice(0, seq.computed) })) this.#model.giveSlot(evicted);
  }

  /** Moves waiting sequences into the batch, each into a slot that already holds as much of its prompt as any. */
  async #admit(): Promise<void> {
    while (this.#running.length < this.#maxBatch && this.#waiting.length > 0) {
      const seq = this.#waiting.shift()!;
      // The prompt's last token always runs: its logits choose the first new token.
      const reusable = seq.promptLength - 1;
      const cached = this.#cache.best(seq.tokens);
      const fromCache = Math.min(cached?.shared ?? 0, reusable);
      let donor: Sequence | null = null;
      let fromDonor = 0;
      for (const other of this.#running) {
        const shared = Math.min(commonPrefix(other.tokens.slice(0, other.computed), seq.tokens), reusable);
        if (shared > fromDonor) [donor, fromDonor] = [other, shared];
      }
      this.#running.push(seq);
      if (cached && fromCache > 0 && fromCache >= fromDonor) {
        this.#cache.take(cached.entry);
        seq.slot = cached.entry.slot;
        seq.computed = fromCache;
      } else {
        seq.slot = this.#model.takeSlot();
        seq.computed = 0;
        if (donor && fromDonor >= this.#minShared) {
          try {
            await this.#model.exclusive((s) => s.copySlot(donor.slot, seq.slot, fromDonor));
            seq.computed = fromDonor;
          } catch {
            seq.computed = 0; // the donor may have ended meanwhile: run the prompt whole
          }
        }
      }
      seq.usage.cachedPromptTokens = seq.computed;
      this.#stats.cachedPromptTokens += seq.computed;
    }
  }

  /** The step less the sequences that were aborted (or closed) while beforeStep ran. */
  #withoutEnded(step: Step): Step {
    const keep = step.sequences.map((seq) => !seq.done && !seq.signal?.aborted);
    const pick = <T>(list: T[]) => list.filter((_, i) => keep[i]);
    return { ...step, rows: pick(step.rows), sequences: pick(step.sequences), produces: pick(step.produces) };
  }

  /** This step's rows: one token for every decoding sequence, and prompt chunks within the budget. */
  #plan(): Step {
    const rows: SlotRow[] = [];
    const sequences: Sequence[] = [];
    const produces: boolean[] = [];
    let budget = this.#prefillChunk;
    let topLogprobs: number | null = null;
    for (const seq of this.#running) {
      const prompt = seq.tokens.length - seq.computed > 1;
      if (prompt && budget <= 0) continue;
      const input = seq.nextInput(prompt ? budget : 1);
      if (prompt) budget -= input.ids.length;
      rows.push({ slot: seq.slot, start: seq.computed, ids: input.ids, sampling: input.produces ? { temperature: seq.temperature, topK: seq.topK, topP: seq.topP, uniform: seq.draw() } : GREEDY_ROW });
      sequences.push(seq);
      produces.push(input.produces);
      if (input.produces && seq.logprobs !== null) topLogprobs = Math.max(topLogprobs ?? 0, seq.logprobs);
    }
    return { rows, sequences, produces, topLogprobs };
  }
}

interface Step {
  rows: SlotRow[];
  sequences: Sequence[];
  /** Whether each row's chosen token counts (its input reaches the end of the sequence's tokens). */
  produces: boolean[];
  topLogprobs: number | null;
}

/** The checks of a request on `model`, built once per scheduler rather than per request. */
function requestParser(model: Qwen3Model): (request: SequenceRequest) => SequenceRequest {
  const { vocab_size: vocab, context_length: context } = model.config;
  const schema = z.object({
    promptIds: z.array(integer(0, vocab - 1)).min(1, 'Expected at least one token for promptIds'),
    maxTokens: integer(1, context),
    temperature: number(0, 100).optional(),
    topK: integer(0, vocab).optional(),
    topP: number(0, 1).optional(),
    seed: integer(0, 2 ** 32 - 1).optional(),
    stopIds: z.array(integer(0, 2 ** 31 - 1)).optional(),
    logprobs: integer(0, MAX_TOP_LOGPROBS).nullable().optional(),
    signal: abortSignal().optional(),
  });
  return (request) => {
    const r = parseOptions(schema, request);
    if (r.promptIds.length + r.maxTokens > context) {
      throw new RangeError(`Expected the prompt plus maxTokens to fit the context_length of ${context} but received ${r.promptIds.length} + ${r.maxTokens}`);
    }
    return r;
  };
}
