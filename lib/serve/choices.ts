// Runs the choices of one request (n completions of each prompt) on the completer and reports
// each as deltas of text, reasoning and tokens, then its end. The HTTP formats (chat or text,
// streamed or whole) are built from these by responses.ts.
import type { Qwen3Tokenizer } from '../tokenizer.js';
import type { Completer, Completion, CompletionToken } from './completer.js';
import type { Plan } from './prepare.js';
import { ReasoningSplitter, StopMatcher, TextStream } from './text.js';

export interface TokenInfo {
  id: number;
  /** The token decoded on its own (for logprobs). */
  text: string;
  logprob?: number;
  top?: { id: number; text: string; logprob: number }[];
}

export interface ChoiceDelta {
  index: number;
  reasoning: string;
  content: string;
  tokens: TokenInfo[];
}

/** 'abort': the server shut down before the completion ended (a client that went away gets no answer). */
export type ResponseFinish = 'stop' | 'length' | 'abort';

export interface ChoiceEnd {
  index: number;
  finishReason: ResponseFinish;
  completionTokens: number;
}

export interface ChoiceSink {
  delta(d: ChoiceDelta): void;
  /** The first token of any choice arrived. */
  firstToken?(): void;
}

interface Started {
  index: number;
  completion: Completion;
  stop: AbortController;
}

/**
 * Starts every choice of `plan`: choice i*n + j is prompt i's j-th completion, seeded with seed + j
 * (so choice 0 samples what the library samples with `seed`). A refusal (a full queue) aborts the
 * ones already started and is thrown. `signal` (the client went away) aborts them all.
 */
export function startChoices(completer: Completer, plan: Plan, signal: AbortSignal): Started[] {
  const started: Started[] = [];
  try {
    plan.prompts.forEach((prompt, p) => {
      for (let j = 0; j < plan.n; j++) {
        const stop = new AbortController();
        if (signal.aborted) stop.abort();
        else signal.addEventListener('abort', () => stop.abort(), { once: true });
        const completion = completer.complete({
          promptIds: prompt.ids,
          maxTokens: prompt.maxTokens,
          temperature: plan.temperature,
          topK: plan.topK,
          topP: plan.topP,
          seed: plan.seed === undefined ? undefined : (plan.seed + j) % 2 ** 32,
          stopIds: plan.stopIds,
          logprobs: plan.logprobs,
          signal: stop.signal,
        });
        started.push({ index: p * plan.n + j, completion, stop });
      }
    });
  } catch (err) {
    for (const s of started) s.stop.abort();
    throw err;
  }
  return started;
}

function describe(tokenizer: Qwen3Tokenizer, t: CompletionToken, withLogprobs: boolean): TokenInfo {
  if (!withLogprobs) return { id: t.id, text: '' };
  return {
    id: t.id,
    text: tokenizer.decode([t.id]),
    logprob: t.logprob,
    top: t.top?.map((a) => ({ id: a.id, text: tokenizer.decode([a.id]), logprob: a.logprob })),
  };
}

/** Reads one choice to its end, reporting deltas to `sink`; rejects when the model failed. */
export async function runChoice(tokenizer: Qwen3Tokenizer, plan: Plan, choice: Started, sink: ChoiceSink): Promise<ChoiceEnd> {
  const text = new TextStream(tokenizer);
  const stops = new StopMatcher(plan.stops);
  const splitter = plan.startsThinking === null ? null : new ReasoningSplitter(plan.startsThinking);
  const withLogprobs = plan.logprobs !== null;
  const report = (piece: string, tokens: TokenInfo[], last = false) => {
    const parts = splitter === null ? { reasoning: '', content: piece } : splitter.push(piece);
    if (last && splitter !== null) {
      const rest = splitter.flush();
      parts.reasoning += rest.reasoning;
      parts.content += rest.content;
    }
    if (parts.reasoning !== '' || parts.content !== '' || tokens.length > 0) sink.delta({ index: choice.index, ...parts, tokens });
  };
  let consumed = 0;
  for await (const token of choice.completion) {
    if (consumed++ === 0) sink.firstToken?.();
    report(stops.push(text.push(token.id)), [describe(tokenizer, token, withLogprobs)]);
    if (stops.stopped) {
      choice.stop.abort(); // the model need not go on
      break;
    }
  }
  report(stops.push(text.flush()) + stops.flush(), [], true);
  const outcome = await choice.completion.finish;
  if (stops.stopped) return { index: choice.index, finishReason: 'stop', completionTokens: consumed };
  return { index: choice.index, finishReason: outcome.reason, completionTokens: outcome.generatedTokens };
}
