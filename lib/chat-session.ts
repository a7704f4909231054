// ChatSession: generation that keeps its KV cache between calls. Each call's prompt is compared
// with what the session's slot already holds (the previous prompt and answer), and only the
// tokens past the shared beginning run: turn N of a conversation prefills turn N's new text
// instead of the whole history. It is a one-row batch scheduler whose prefix cache holds the
// session's one slot.
import { z } from 'zod';
import { BatchScheduler, type SequenceStream, type SequenceUsage } from './batch/scheduler.js';
import { Qwen3Model } from './model.js';
import { InvalidOptionError, abortSignal, describeValue, integer, number, parseOptions } from './validate.js';

export interface ChatSessionGenerateOptions {
  /** Default 50. */
  maxNewTokens?: number;
  /** 0 (default): greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Tokens that end the answer (not yielded), e.g. the tokenizer's eosTokenIds. */
  stopIds?: readonly number[];
  signal?: AbortSignal;
}

export class ChatSession {
  readonly model: Qwen3Model;
  readonly #scheduler: BatchScheduler;
  #last: SequenceUsage | null = null;

  constructor(model: Qwen3Model, options: { prefillChunk?: number } = {}) {
    if (!(model instanceof Qwen3Model)) throw new InvalidOptionError(`Expected Qwen3Model for model but received ${describeValue(model)}`, 'model');
    const o = parseOptions(z.object({ prefillChunk: integer(1, 1_000_000).optional() }).strict(), options);
    this.model = model;
    this.#scheduler = new BatchScheduler(model, { maxBatch: 1, cachedSlots: 1, prefillChunk: o.prefillChunk });
  }

  /**
   * Yields the new token ids after `promptIds` (the whole conversation so far, rendered and
   * tokenized). Calls run one after another; a call made while one runs waits its turn.
   */
  async *generate(promptIds: readonly number[], options: ChatSessionGenerateOptions = {}): AsyncGenerator<number, void, undefined> {
    const o = parseOptions(
      z
        .object({
          maxNewTokens: integer(1, this.model.config.context_length).optional(),
          temperature: number(0, 100).optional(),
          topK: integer(0, this.model.config.vocab_size).optional(),
          topP: number(0, 1).optional(),
          seed: integer(0, 2 ** 32 - 1).optional(),
          stopIds: z.array(integer(0, this.model.config.vocab_size - 1)).optional(),
          signal: abortSignal().optional(),
        })
        .strict(),
      options,
    );
    // A caller that stops reading ends the answer too (at the next step).
    const stop = new AbortController();
    const signal = o.signal ? AbortSignal.any([o.signal, stop.signal]) : stop.signal;
    const { maxNewTokens, ...sampling } = o;
    const stream: SequenceStream = this.#scheduler.submit({ ...sampling, signal, promptIds, maxTokens: maxNewTokens ?? 50 });
    this.#last = stream.usage;
    try {
      for await (const token of stream) yield token.id;
      await stream.finished;
    } finally {
      stop.abort();
    }
  }

  /** Token counts of the latest call: `cachedPromptTokens` of its prompt came from the previous turns. */
  get lastUsage(): SequenceUsage | null {
    return this.#last ? { ...this.#last } : null;
  }

  /** Ends the session and frees its slot (the model stays loaded). */
  async close(): Promise<void> {
    await this.#scheduler.close('abort');
  }
}
