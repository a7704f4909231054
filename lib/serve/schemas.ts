// The request bodies of /v1/chat/completions and /v1/completions as zod schemas. Fields the
// server does not know are dropped (OpenAI ignores harmless extras the same way); a known field
// of the wrong type or out of range is a 400 that names it. Optional fields take null as unset,
// as OpenAI's API does. Fields the server knows but cannot honour (penalties, logit_bias, echo,
// ...) are accepted only at their neutral value; see checkUnsupported.
import { z } from 'zod';
import { boolean, integer, number, oneOf } from '../validate.js';
import { ApiError } from './errors.js';
import { MAX_TOP_LOGPROBS } from './completer.js';

/** Choices per request at most (n, and prompts times n for /v1/completions). */
export const MAX_CHOICES = 64;
export const MAX_STOP_STRINGS = 16;

const opt = <T extends z.ZodType>(schema: T) => schema.nullish();

const stop = z.union([z.string(), z.array(z.string().min(1, { error: 'Expected non-empty stop strings' })).max(MAX_STOP_STRINGS)], {
  error: `Expected string or array of at most ${MAX_STOP_STRINGS} non-empty strings`,
});

/** What both endpoints share. */
const common = {
  model: opt(z.string({ error: 'Expected string' })),
  max_tokens: opt(integer(1, 2 ** 31 - 1)),
  temperature: opt(number(0, 2)),
  top_p: opt(number(0, 1, { exclusiveMin: true })),
  top_k: opt(integer(-1, 2 ** 31 - 1)),
  seed: opt(integer(0, 2 ** 32 - 1)),
  stop: opt(stop),
  n: opt(integer(1, MAX_CHOICES)),
  stream: opt(boolean()),
  stream_options: opt(z.object({ include_usage: opt(boolean()) }, { error: 'Expected object' })),
  /** vLLM's extension: the generated token ids with each choice (and each streamed chunk). */
  return_token_ids: opt(boolean()),
  /** vLLM's extension: generate max_tokens tokens even past an end token (benchmarks). */
  ignore_eos: opt(boolean()),
  frequency_penalty: opt(number(-2, 2)),
  presence_penalty: opt(number(-2, 2)),
  logit_bias: opt(z.record(z.string(), z.number(), { error: 'Expected object of token ids to numbers' })),
};

const textPart = z.object({ type: z.literal('text'), text: z.string({ error: 'Expected string' }) }, { error: 'Expected object' });
const content = z.union([z.string(), z.array(textPart)], { error: 'Expected string or array of text parts ({"type": "text", "text": ...}; images and audio are not supported)' });

const message = z.looseObject(
  {
    role: oneOf(['system', 'developer', 'user', 'assistant', 'tool']),
    content: content.nullish(),
    reasoning_content: opt(z.string({ error: 'Expected string' })),
    tool_calls: opt(z.array(z.looseObject({}, { error: 'Expected object' }), { error: 'Expected array of tool calls' })),
  },
  { error: 'Expected object' },
);

export const chatSchema = z.object({
  ...common,
  messages: z.array(message, { error: 'Expected array of messages' }).min(1, { error: 'Expected at least one message' }),
  max_completion_tokens: opt(integer(1, 2 ** 31 - 1)),
  logprobs: opt(boolean()),
  top_logprobs: opt(integer(0, MAX_TOP_LOGPROBS)),
  tools: opt(z.array(z.looseObject({}, { error: 'Expected object' }), { error: 'Expected array of tool definitions' })),
  chat_template_kwargs: opt(z.looseObject({ enable_thinking: opt(boolean()) }, { error: 'Expected object' })),
  response_format: opt(z.looseObject({ type: z.string({ error: 'Expected string' }) }, { error: 'Expected object' })),
});
export type ChatBody = z.output<typeof chatSchema>;

/** A prompt schema for a model with `vocab` ids: text, token ids, or a list of either. */
function promptSchema(vocab: number) {
  const id = integer(0, vocab - 1);
  const ids = z.array(id).min(1, { error: 'Expected at least one token id' });
  const msg = 'Expected string, array of strings, array of token ids or array of arrays of token ids';
  return z.union([z.string(), z.array(z.string()).min(1), ids, z.array(ids).min(1)], { error: msg });
}

export function completionSchema(vocab: number) {
  return z.object({
    ...common,
    prompt: promptSchema(vocab),
    logprobs: opt(integer(0, MAX_TOP_LOGPROBS)),
    echo: opt(boolean()),
    suffix: opt(z.string({ error: 'Expected string' })),
    best_of: opt(integer(1, MAX_CHOICES)),
  });
}
export type CompletionBody = z.output<ReturnType<typeof completionSchema>>;

function unsupported(param: string, what: string): ApiError {
  return new ApiError(400, `${param} is not supported by this server (${what})`, 'invalid_request_error', param);
}

/** Known fields this server cannot honour are refused unless they ask for nothing. */
interface Extras {
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  echo?: boolean | null;
  suffix?: string | null;
  best_of?: number | null;
  n?: number | null;
  response_format?: { type: string } | null;
  stream?: boolean | null;
  stream_options?: object | null;
}

export function checkUnsupported(body: Extras): void {
  if (body.frequency_penalty) throw unsupported('frequency_penalty', 'leave it out or set it to 0');
  if (body.presence_penalty) throw unsupported('presence_penalty', 'leave it out or set it to 0');
  if (body.logit_bias && Object.keys(body.logit_bias).length > 0) throw unsupported('logit_bias', 'leave it out or send {}');
  if (body.echo) throw unsupported('echo', 'leave it out or set it to false');
  if (body.suffix) throw unsupported('suffix', 'leave it out or send ""');
  if (body.best_of != null && body.best_of !== (body.n ?? 1)) throw unsupported('best_of', 'leave it out or set it to n');
  if (body.response_format && body.response_format.type !== 'text') throw unsupported('response_format', 'only {"type": "text"}');
  if (body.stream_options != null && !body.stream) {
    throw new ApiError(400, 'stream_options is only allowed when stream is true', 'invalid_request_error', 'stream_options');
  }
}
