// The contract between the HTTP server and whatever produces completions. The server renders and
// tokenizes prompts, checks every field, turns tokens into text (stop strings, reasoning, UTF-8)
// and speaks OpenAI's API; a Completer only turns prompt ids into token ids (BatchCompleter, in
// batch.ts, does it by continuous batching), so how completions are produced can change without
// the HTTP layer knowing.
//
// Where this differs from a bare async iterable with a finish reason: `finish` resolves to an
// outcome that also counts the tokens generated (the stop token included, as OpenAI's usage
// counts it), and completers take an optional `beforeStep` hook so that tests (and tracing) can
// hold the engine at a known point instead of racing it.

/** The most alternatives a token's logprobs list (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;

/** Why a completion ended: a stop id, maxTokens reached, or its signal (or the completer's close('abort')). */
export type FinishReason = 'stop' | 'length' | 'abort';

export interface CompletionRequest {
  /** The rendered, tokenized prompt (at least one id, each below the model's vocab_size). */
  promptIds: readonly number[];
  /** New tokens at most; promptIds.length + maxTokens must fit the model's context_length. */
  maxTokens: number;
  /** 0: greedy. */
  temperature: number;
  /** 0: off. */
  topK: number;
  /** 1: off. */
  topP: number;
  /** Same seed, same tokens (and the same ones the library's generate functions sample); undefined: random. */
  seed: number | undefined;
  /** Ids that end the completion (EOS, `<|im_end|>`); the one that ends it is not yielded. */
  stopIds: readonly number[];
  /** null: no logprobs; 0..20: the chosen token's logprob plus that many most likely alternatives. */
  logprobs: number | null;
  /** Fired when the client went away or a stop string matched: the completion ends within one model step. */
  signal: AbortSignal;
}

export interface TopLogprob {
  id: number;
  logprob: number;
}

export interface CompletionToken {
  id: number;
  /** log-softmax of the model's raw logits (before temperature, top-k, top-p), when logprobs were asked for. */
  logprob?: number;
  /** The `logprobs` most likely tokens, most likely first. */
  top?: TopLogprob[];
}

export interface CompletionOutcome {
  reason: FinishReason;
  /** Tokens the model generated for this request, a final stop id included. */
  generatedTokens: number;
}

/**
 * One completion in progress. The tokens are pushed as the model makes them (a slow reader never
 * holds up the model); iterate at most once. `finish` settles whether or not anyone iterates, and
 * rejects (as the iteration throws) when the model failed.
 */
export interface Completion extends AsyncIterable<CompletionToken> {
  readonly finish: Promise<CompletionOutcome>;
}

export interface CompleterStats {
  /** Requests waiting for a turn. */
  queued: number;
  /** Requests being generated. */
  running: number;
  /** Tokens generated since the completer was made. */
  generatedTokens: number;
}

export interface Completer {
  /**
   * Starts a completion. Throws synchronously: QueueFullError when the queue is full,
   * CompleterClosedError after close(), InvalidOptionError for a malformed request.
   */
  complete(request: CompletionRequest): Completion;
  stats(): CompleterStats;
  /**
   * Refuses new requests; 'drain' lets queued and running ones finish, 'abort' ends them now
   * (reason 'abort'). Resolves once none is left. Calling it again (say 'abort' during a drain) is fine.
   */
  close(how: 'drain' | 'abort'): Promise<void>;
}

/** A row of a model step as a `beforeStep` hook sees it. */
export interface StepRow {
  request: CompletionRequest;
  /** Tokens this request has generated so far (0 before its prefill). */
  generated: number;
  /** Fires when the request is to end: its own signal, or the completer's close('abort'). */
  signal: AbortSignal;
}

/**
 * Awaited before every model step (a prefill chunk or a decode step) with the requests that step
 * advances. Every completer accepts one as its `beforeStep` option. Tests use it to hold the
 * engine at a known point (a client abort or a shutdown that must land mid-generation); leaving
 * it out costs nothing.
 */
export type StepHook = (rows: readonly StepRow[]) => void | Promise<void>;

/** The queue holds `limit` requests already (HTTP 429). */
export class QueueFullError extends Error {
  constructor(readonly limit: number) {
    super(`The server is busy: ${limit} requests are already waiting; try again shortly`);
    this.name = 'QueueFullError';
  }
}

/** The completer is shutting down (HTTP 503). */
export class CompleterClosedError extends Error {
  constructor() {
    super('The server is shutting down and takes no new requests');
    this.name = 'CompleterClosedError';
  }
}
