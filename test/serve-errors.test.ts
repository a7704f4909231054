// The server's refusals, each with OpenAI's error shape {error: {message, type, param, code}} and
// the status clients act on: 400 for malformed JSON and wrong fields (the message names the
// field), for a prompt and max_tokens past the context, 404 for an unknown model or route, 401
// without the API key, 413 for a body over the limit, 429 with Retry-After when the queue is full,
// 503 and a drain on shutdown. The server answers normally after all of it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import type { Qwen3Model, Qwen3Tokenizer } from '../lib/index.js';
import { type RunningServer, startServer } from '../lib/serve/server.js';
import { StepGate, client, loadTiny, parseEvents, post } from './support/serve.js';

let model: Qwen3Model;
let tokenizer: Qwen3Tokenizer;
let server: RunningServer;
const chat = (extra: object) => ({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, temperature: 0, ...extra });

beforeAll(async () => {
  ({ model, tokenizer } = await loadTiny());
  server = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', bodyLimit: 1024 * 1024 });
});
afterAll(async () => {
  await server?.close();
  model?.dispose();
});

function expectError(r: { status: number; json: any }, status: number, param: string | null, message: RegExp | string, code: string | null = null) {
  expect(r.status).toBe(status);
  expect(Object.keys(r.json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(r.json.error.param).toBe(param);
  expect(r.json.error.code).toBe(code);
  expect(r.json.error.type).toBe(status >= 500 ? 'server_error' : status === 429 ? 'rate_limit_error' : 'invalid_request_error');
  if (typeof message === 'string') expect(r.json.error.message).toBe(message);
  else expect(r.json.error.message).toMatch(message);
}

describe('400: the request is malformed', () => {
  it('says so for a body that is not JSON, or not a JSON object', async () => {
    expectError(await post(server.url, '/v1/chat/completions', '{"messages": ['), 400, null, 'The request body is not valid JSON', 'FST_ERR_CTP_INVALID_JSON_BODY');
    expectError(await post(server.url, '/v1/completions', '[1, 2]'), 400, null, 'Expected a JSON object for the request body but received array of length 2');
  });

  it.each([
    ['/v1/chat/completions', { max_tokens: 2 }, 'messages', 'Expected array of messages for messages but received undefined'],
    ['/v1/chat/completions', { messages: 'hi' }, 'messages', 'Expected array of messages for messages but received "hi"'],
    ['/v1/chat/completions', { messages: [] }, 'messages', 'Expected at least one message for messages but received array of length 0'],
    ['/v1/chat/completions', chat({ messages: [{ role: 'robot', content: 'x' }] }), 'messages.0.role', /^Expected one of "system", "developer", "user", "assistant", "tool" for messages\.0\.role but received "robot"$/],
    ['/v1/chat/completions', chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }), 'messages.0.content', /images and audio are not supported/],
    ['/v1/chat/completions', chat({ temperature: 'hot' }), 'temperature', 'Expected number between 0 and 2 for temperature but received "hot"'],
    ['/v1/chat/completions', chat({ temperature: 2.5 }), 'temperature', 'Expected number between 0 and 2 for temperature but received 2.5'],
    ['/v1/chat/completions', chat({ max_tokens: 0 }), 'max_tokens', 'Expected integer between 1 and 2147483647 for max_tokens but received 0'],
    ['/v1/chat/completions', chat({ top_p: 0 }), 'top_p', 'Expected number greater than 0 and at most 1 for top_p but received 0'],
    ['/v1/chat/completions', chat({ top_k: 200000 }), 'top_k', 'Expected integer between -1 and 151936 for top_k but received 200000'],
    ['/v1/chat/completions', chat({ seed: -1 }), 'seed', 'Expected integer between 0 and 4294967295 for seed but received -1'],
    ['/v1/chat/completions', chat({ n: 1.5 }), 'n', 'Expected integer between 1 and 64 for n but received 1.5'],
    ['/v1/chat/completions', chat({ stop: 5 }), 'stop', 'Expected string or array of at most 16 non-empty strings for stop but received 5'],
    ['/v1/chat/completions', chat({ stream: 'yes' }), 'stream', 'Expected boolean for stream but received "yes"'],
    ['/v1/chat/completions', chat({ top_logprobs: 2 }), 'top_logprobs', 'top_logprobs needs logprobs set to true'],
    ['/v1/chat/completions', chat({ stream_options: { include_usage: true } }), 'stream_options', 'stream_options is only allowed when stream is true'],
    ['/v1/chat/completions', chat({ presence_penalty: 0.5 }), 'presence_penalty', /^presence_penalty is not supported by this server/],
    ['/v1/completions', { prompt: 5 }, 'prompt', /^Expected string, array of strings, array of token ids or array of arrays of token ids for prompt/],
    ['/v1/completions', { prompt: [1, 151936] }, 'prompt.1', 'Expected integer between 0 and 151935 for prompt.1 but received 151936'],
    ['/v1/completions', { prompt: [[1], [2, -1]] }, 'prompt.1.1', 'Expected integer between 0 and 151935 for prompt.1.1 but received -1'],
    ['/v1/completions', { prompt: '' }, 'prompt', 'The prompt is empty: it must have at least one token'],
    ['/v1/completions', { prompt: [1], logprobs: 21 }, 'logprobs', 'Expected integer between 0 and 20 for logprobs but received 21'],
    ['/v1/completions', { prompt: [1], echo: true }, 'echo', /^echo is not supported by this server/],
    ['/v1/completions', { prompt: [[1], [2]], n: 40 }, 'n', 'Expected at most 64 choices (prompts times n) but received 2 × 40'],
  ])('%s %j: 400 naming %s', async (path, body, param, message) => {
    expectError(await post(server.url, path, body), 400, param, message);
  });

  it('refuses a prompt and max_tokens past the context, through the openai client too', async () => {
    expectError(
      await post(server.url, '/v1/completions', { prompt: [1, 2, 3], max_tokens: 254 }),
      400,
      'prompt',
      "This model's maximum context length is 256 tokens, but 257 were requested (3 in the prompt, 254 for the completion); shorten the prompt or lower max_tokens",
      'context_length_exceeded',
    );
    expectError(await post(server.url, '/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'word '.repeat(300) }], max_tokens: null })), 400, 'messages', /maximum context length is 256 tokens, but the messages has \d+ tokens/, 'context_length_exceeded');
    const error = await client(server.url).completions.create({ model: 'tiny', prompt: [1, 2, 3], max_tokens: 300 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('context_length_exceeded');
    expect((error as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('prompt');
  });

  it('ignores fields it does not know, as OpenAI does', async () => {
    const r = await post(server.url, '/v1/chat/completions', chat({ user: 'someone', metadata: { a: 1 }, future_field: [1, 2], frequency_penalty: 0, logit_bias: {} }));
    expect(r.status).toBe(200);
    expect(r.json.choices[0].finish_reason).toMatch(/^(length|stop)$/);
  });
});

describe('404, 413 and 415', () => {
  it('refuses an unknown model, also a path-like one, and an unknown route', async () => {
    expectError(await post(server.url, '/v1/chat/completions', chat({ model: '../../etc/passwd' })), 404, 'model', 'The model "../../etc/passwd" does not exist; this server serves "tiny"', 'model_not_found');
    const error = await client(server.url).chat.completions.create({ model: 'gpt-4', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    const route = await fetch(`${server.url}/v1/embeddings`, { method: 'POST' });
    expectError({ status: route.status, json: await route.json() }, 404, null, 'There is no POST /v1/embeddings on this server', 'not_found');
  });

  it('refuses a body over the limit, a form, and plain text that is not a JSON object', async () => {
    const big = await post(server.url, '/v1/completions', { prompt: 'x'.repeat(1024 * 1024) });
    expectError(big, 413, null, /too large/i, 'FST_ERR_CTP_BODY_TOO_LARGE');
    const form = await post(server.url, '/v1/completions', 'prompt=hi', { 'content-type': 'application/x-www-form-urlencoded' });
    expectError(form, 415, null, /Unsupported Media Type/i, 'FST_ERR_CTP_INVALID_MEDIA_TYPE');
    const plain = await post(server.url, '/v1/completions', 'prompt=hi', { 'content-type': 'text/plain' });
    expectError(plain, 400, null, 'Expected a JSON object for the request body but received "prompt=hi"');
  });
});

describe('401: the API key', () => {
  it('is required on /v1/ routes when set, in constant-time comparison, and not on /health or /metrics', async () => {
    const keyed = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', apiKey: 'sekret' });
    try {
      expectError(await post(keyed.url, '/v1/completions', { prompt: [1], max_tokens: 1 }), 401, null, /Missing or wrong API key/, 'invalid_api_key');
      expectError(await post(keyed.url, '/v1/completions', { prompt: [1], max_tokens: 1 }, { authorization: 'Bearer sekreT' }), 401, null, /Missing or wrong API key/, 'invalid_api_key');
      const error = await client(keyed.url, 'wrong').models.list().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
      const ok = await client(keyed.url, 'sekret').completions.create({ model: 'tiny', prompt: [1], max_tokens: 1, temperature: 0 });
      expect(ok.choices).toHaveLength(1);
      expect((await fetch(`${keyed.url}/health`)).status).toBe(200);
      expect((await fetch(`${keyed.url}/metrics`)).status).toBe(200);
    } finally {
      await keyed.close();
    }
  });
});

describe('429 and shutdown', () => {
  it('answers 429 with Retry-After when the queue is full, and finishes the requests it took', async () => {
    const gate = new StepGate();
    const busy = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', maxQueue: 1, beforeStep: gate.hook });
    try {
      const api = client(busy.url);
      const a = [11, 12, 13];
      const b = [21, 22, 23];
      gate.hold(a, 1);
      const running = api.completions.create({ model: 'tiny', prompt: a, max_tokens: 4, temperature: 0 });
      await gate.reached; // a runs (held after its first token)
      const queued = await api.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'queued' }], max_tokens: 3, temperature: 0, stream: true });
      const refused = await post(busy.url, '/v1/completions', { prompt: b, max_tokens: 2 });
      expectError(refused, 429, null, 'The server is busy: 1 requests are already waiting; try again shortly', 'rate_limit_exceeded');
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(await api.completions.create({ model: 'tiny', prompt: b, max_tokens: 2 }).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.RateLimitError);
      expect(busy.completer.stats()).toMatchObject({ queued: 1, running: 1 });
      gate.release();
      expect((await running).usage!.completion_tokens).toBe(4);
      let finish: string | null = null;
      for await (const chunk of queued) finish = chunk.choices[0]?.finish_reason ?? finish;
      expect(finish).toBe('length');
      const metrics = await (await fetch(`${busy.url}/metrics`)).text();
      expect(metrics).toMatch(/^qwen3_requests_total\{endpoint="\/v1\/completions",status="429"\} 2$/m);
    } finally {
      await busy.close();
    }
  });

  it('drains on close: new requests are refused while the one in flight finishes in full', async () => {
    const gate = new StepGate();
    const draining = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', beforeStep: gate.hook });
    const prompt = [31, 32, 33];
    gate.hold(prompt, 1);
    const inFlight = post(draining.url, '/v1/completions', { prompt, max_tokens: 5, temperature: 0, stream: true });
    await gate.reached;
    const closed = draining.close();
    const late = await fetch(`${draining.url}/health`).then((r) => r.status, () => 'refused');
    expect([503, 'refused']).toContain(late);
    gate.release();
    const { events, done } = parseEvents((await inFlight).text);
    expect(done).toBe(true);
    expect(events.at(-1)).toMatchObject({ choices: [{ finish_reason: 'length' }] });
    expect(events.map((e: any) => e.choices[0].text).join('')).not.toBe('');
    await closed;
    expect(draining.completer.stats()).toEqual({ queued: 0, running: 0, generatedTokens: 5 });
    await expect(fetch(`${draining.url}/health`)).rejects.toThrow();
  });

  it('aborts what is still in flight when the drain time is up, ending its stream with finish_reason "abort"', async () => {
    const gate = new StepGate();
    const impatient = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', beforeStep: gate.hook, drainTimeoutMs: 0 });
    const prompt = [41, 42, 43];
    gate.hold(prompt, 1);
    const inFlight = post(impatient.url, '/v1/completions', { prompt, max_tokens: 50, temperature: 0, stream: true });
    await gate.reached;
    const closed = impatient.close();
    expect(await gate.outcome).toBe('aborted'); // the gate never released it: the drain timeout did
    const { events, done } = parseEvents((await inFlight).text);
    expect(done).toBe(true);
    expect(events.at(-1)).toMatchObject({ choices: [{ finish_reason: 'abort' }] });
    await closed;
  });
});

it('still answers after all of it', async () => {
  const r = await client(server.url).chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Still there?' }], max_tokens: 3, temperature: 0 });
  expect(r.choices[0]!.finish_reason).toMatch(/^(length|stop)$/);
  expect(server.completer.stats()).toMatchObject({ queued: 0, running: 0 });
});
