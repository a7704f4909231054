// One request in the batch scheduler: its tokens, how many of them its slot holds, how it
// samples, and the stream its caller reads the new tokens from.
import type { TokenLogprob } from '../model/slots.js';
import { seededUniforms } from '../model/uniforms.js';
import { Channel } from './channel.js';

export interface SequenceRequest {
  /** The prompt, already tokenized (at least one token). */
  promptIds: readonly number[];
  /** New tokens at most. */
  maxTokens: number;
  /** 0: greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Same seed, same tokens as the library's seeded generation. Default: random. */
  seed?: number;
  /** Tokens that end the sequence; they are not emitted. */
  stopIds?: readonly number[];
  /** null: none; 0..20: the chosen token's log-probability plus that many alternatives. */
  logprobs?: number | null;
  signal?: AbortSignal;
}

/** Why a sequence ended: a stop token, maxTokens reached, or its signal fired (or close('abort')). */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface GeneratedToken {
  id: number;
  logprob?: number;
  top?: TokenLogprob[];
}

export interface SequenceUsage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens whose keys and values came from the cache instead of being computed. */
  cachedPromptTokens: number;
}

/** The new tokens as they come, then how the sequence ended. */
export interface SequenceStream extends AsyncIterable<GeneratedToken> {
  /** Resolves when the sequence ends; rejects when a step of it failed. */
  readonly finished: Promise<FinishReason>;
  readonly usage: SequenceUsage;
}

export class Sequence implements SequenceStream {
  /** The prompt and every token chosen so far. */
  readonly tokens: number[];
  readonly promptLength: number;
  readonly maxTokens: number;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly stopIds: ReadonlySet<number>;
  readonly logprobs: number | null;
  readonly signal: AbortSignal | undefined;
  readonly usage: SequenceUsage;
  /** The request as its caller gave it. */
  readonly request: SequenceRequest;
  /** The slot it runs in (-1: none yet), and how many of `tokens` the slot holds. */
  slot = -1;
  computed = 0;
  readonly #draw: (() => number) | null;
  readonly #out = new Channel<GeneratedToken, FinishReason>();

  constructor(r: SequenceRequest, original: SequenceRequest = r) {
    this.request = original;
    this.tokens = [...r.promptIds];
    this.promptLength = r.promptIds.length;
    this.maxTokens = r.maxTokens;
    this.temperature = r.temperature ?? 0;
    this.topK = r.topK ?? 0;
    this.topP = r.topP ?? 1;
    this.stopIds = new Set(r.stopIds ?? []);
    this.logprobs = r.logprobs ?? null;
    this.signal = r.signal;
    this.usage = { promptTokens: this.promptLength, completionTokens: 0, cachedPromptTokens: 0 };
    const draws = this.temperature > 0 ? seededUniforms(r.seed ?? Math.floor(Math.random() * 2 ** 32)) : null;
    this.#draw = draws ? () => draws(1)[0]! : null;
  }

  get finished(): Promise<FinishReason> {
    return this.#out.finish;
  }

  get done(): boolean {
    return this.#out.ended;
  }

  get generated(): number {
    return this.tokens.length - this.promptLength;
  }

  /** The next chunk of tokens to run, at most `budget` long, and whether it ends with a choice that counts. */
  nextInput(budget: number): { ids: number[]; produces: boolean } {
    const end = Math.min(this.tokens.length, this.computed + Math.max(1, budget));
    return { ids: this.tokens.slice(this.computed, end), produces: end === this.tokens.length };
  }

  /** The draw for a step that produces a token (one per produced token, as the library draws). */
  draw(): number | undefined {
    return this.#draw?.();
  }

  /** Takes the step's chosen token; returns how the sequence ended, or null while it goes on. */
  accept(token: GeneratedToken): FinishReason | null {
    if (this.stopIds.has(token.id)) return 'stop';
    this.tokens.push(token.id);
    this.usage.completionTokens++;
    this.#out.push(token);
    return this.generated >= this.maxTokens ? 'length' : null;
  }

  finish(reason: FinishReason): void {
    this.#out.end(reason);
  }

  fail(err: unknown): void {
    this.#out.fail(err);
  }

  [Symbol.asyncIterator](): AsyncIterator<GeneratedToken> {
    return this.#out[Symbol.asyncIterator]();
  }
}
