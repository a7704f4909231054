// The two response formats (chat.completion and text_completion), whole or streamed as
// server-sent events (`data: {chunk}` lines, then `data: [DONE]`), built from the choices' deltas.
import { randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { FastifyReply } from 'fastify';
import type { Qwen3Tokenizer } from '../tokenizer.js';
import { type ChoiceDelta, type ChoiceEnd, type TokenInfo, runChoice, startChoices } from './choices.js';
import type { Completer } from './completer.js';
import { toApiError } from './errors.js';
import type { Plan } from './prepare.js';

export type Endpoint = 'chat' | 'text';

export interface ResponseArgs {
  endpoint: Endpoint;
  tokenizer: Qwen3Tokenizer;
  completer: Completer;
  plan: Plan;
  modelName: string;
  stream: boolean;
  includeUsage: boolean;
  returnTokenIds: boolean;
  /** Fires when the client goes away. */
  signal: AbortSignal;
  onFirstToken(): void;
}

const encoder = new TextEncoder();
const bytes = (text: string) => Array.from(encoder.encode(text));

/** Chat's logprobs: one entry per token with its bytes and alternatives. */
function chatLogprobs(tokens: TokenInfo[]) {
  return {
    content: tokens.map((t) => ({
      token: t.text,
      logprob: t.logprob!,
      bytes: bytes(t.text),
      top_logprobs: (t.top ?? []).map((a) => ({ token: a.text, logprob: a.logprob, bytes: bytes(a.text) })),
    })),
  };
}

/** The legacy completions' logprobs; `offset` is where the first token's text starts in the choice's text. */
function textLogprobs(tokens: TokenInfo[], offset: number) {
  const text_offset: number[] = [];
  for (const t of tokens) {
    text_offset.push(offset);
    offset += t.text.length;
  }
  return {
    tokens: tokens.map((t) => t.text),
    token_logprobs: tokens.map((t) => t.logprob!),
    top_logprobs: tokens.map((t) => Object.fromEntries((t.top ?? []).map((a) => [a.text, a.logprob]))),
    text_offset,
  };
}

function usage(plan: Plan, ends: ChoiceEnd[]) {
  const prompt = plan.prompts.reduce((sum, p) => sum + p.ids.length, 0);
  const completion = ends.reduce((sum, e) => sum + e.completionTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** What a choice has produced so far (a whole response adds it all up). */
interface Gathered {
  reasoning: string;
  content: string;
  tokens: TokenInfo[];
  /** Characters of token text so far (text_offset of the next token). */
  offset: number;
}

/**
 * Runs the request's choices and answers: a whole JSON response (returned), or a stream that is
 * sent on `reply` as it goes (undefined is returned once it has started).
 */
export async function respond(reply: FastifyReply, args: ResponseArgs): Promise<object | undefined> {
  const { plan, endpoint } = args;
  const started = startChoices(args.completer, plan, args.signal);
  const id = `${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
  const head = { id, object: endpoint === 'chat' ? 'chat.completion' : 'text_completion', created: Math.floor(Date.now() / 1000), model: args.modelName };
  const gathered = new Map<number, Gathered>(started.map((s) => [s.index, { reasoning: '', content: '', tokens: [], offset: 0 }]));
  const logprobsOf = (g: Gathered, tokens: TokenInfo[]) => (plan.logprobs === null ? null : endpoint === 'chat' ? chatLogprobs(tokens) : textLogprobs(tokens, g.offset));
  let first = true;
  const sink = (onDelta: (d: ChoiceDelta) => void) => ({
    delta: onDelta,
    firstToken: () => {
      if (first) args.onFirstToken();
      first = false;
    },
  });
  const runAll = (onDelta: (d: ChoiceDelta) => void, onEnd: (e: ChoiceEnd) => void) =>
    Promise.all(started.map((s) => runChoice(args.tokenizer, plan, s, sink(onDelta)).then((end) => (onEnd(end), end)))).catch((err) => {
      for (const s of started) s.stop.abort();
      throw err;
    });

  if (!args.stream) {
    const ends = await runAll((d) => {
      const g = gathered.get(d.index)!;
      g.reasoning += d.reasoning;
      g.content += d.content;
      g.tokens.push(...d.tokens);
    }, () => {});
    const choices = ends.map((e) => {
      const g = gathered.get(e.index)!;
      const ids = args.returnTokenIds ? { token_ids: g.tokens.map((t) => t.id), prompt_token_ids: plan.prompts[Math.floor(e.index / plan.n)]!.ids } : {};
      if (endpoint === 'chat') {
        const message = { role: 'assistant', content: g.content, reasoning_content: plan.startsThinking !== null && g.reasoning !== '' ? g.reasoning : null };
        return { index: e.index, message, logprobs: logprobsOf(g, g.tokens), finish_reason: e.finishReason, ...ids };
      }
      return { index: e.index, text: g.content, logprobs: logprobsOf(g, g.tokens), finish_reason: e.finishReason, ...ids };
    });
    return { ...head, choices, usage: usage(plan, ends) };
  }

  const sse = new PassThrough();
  const send = (data: unknown) => {
    if (!sse.destroyed && !args.signal.aborted) sse.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  };
  const chunkHead = { ...head, object: endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion' };
  const usageField = args.includeUsage ? { usage: null } : {};
  const chunk = (index: number, body: Record<string, unknown>, finish: string | null, tokens: TokenInfo[]) => {
    const g = gathered.get(index)!;
    const choice = { index, ...body, logprobs: logprobsOf(g, tokens), finish_reason: finish, ...(args.returnTokenIds ? { token_ids: tokens.map((t) => t.id) } : {}) };
    for (const t of tokens) g.offset += t.text.length;
    send({ ...chunkHead, choices: [choice], ...usageField });
  };
  reply.header('content-type', 'text/event-stream; charset=utf-8').header('cache-control', 'no-cache').header('x-accel-buffering', 'no');
  void reply.send(sse);
  // The role comes first, as OpenAI sends it; it also tells the client its request was taken.
  if (endpoint === 'chat') for (const s of started) chunk(s.index, { delta: { role: 'assistant', content: '' } }, null, []);
  const worth = (d: ChoiceDelta) => d.reasoning !== '' || d.content !== '' || (d.tokens.length > 0 && (plan.logprobs !== null || args.returnTokenIds));
  void runAll(
    (d) => {
      if (!worth(d)) return;
      if (endpoint === 'text') return chunk(d.index, { text: d.content }, null, d.tokens);
      const delta = { ...(d.reasoning !== '' ? { reasoning_content: d.reasoning } : {}), ...(d.content !== '' ? { content: d.content } : {}) };
      chunk(d.index, { delta }, null, d.tokens);
    },
    (e) => chunk(e.index, endpoint === 'chat' ? { delta: {} } : { text: '' }, e.finishReason, []),
  )
    .then((ends) => {
      if (args.includeUsage) send({ ...chunkHead, choices: [], usage: usage(plan, ends) });
    })
    .catch((err) => send(toApiError(err).body()))
    .finally(() => {
      send('[DONE]');
      sse.end();
    });
  return undefined;
}
