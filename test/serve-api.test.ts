// The OpenAI-compatible server with the official openai client, on the tiny full-vocabulary model
// and the real Qwen3 tokenizer and chat template: what it answers equals what the library
// generates for the same prompt ids (greedy and seeded), streamed or whole, with logprobs equal
// to the log-softmax of the model's own logits, stop strings cut where they match, concurrent
// streams that do not disturb each other, and a client that goes away aborting only its own
// completion. The replies of a random model are gibberish, so each expectation is computed here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type OpenAI from 'openai';
import { type Qwen3Model, type Qwen3Tokenizer, generateTextBasicCache } from '../lib/index.js';
import { type RunningServer, startServer } from '../lib/serve/server.js';
import { StepGate, client, loadTiny } from './support/serve.js';

let model: Qwen3Model;
let tokenizer: Qwen3Tokenizer;
let server: RunningServer;
let api: OpenAI;
const gate = { current: null as StepGate | null };
let imEnd: number;
let specials: Set<number>;
/** vLLM's extension field: the server returns the generated ids with each choice. */
const withIds = { return_token_ids: true } as {};

beforeAll(async () => {
  ({ model, tokenizer } = await loadTiny());
  imEnd = tokenizer.specialTokens.get('<|im_end|>')!;
  specials = new Set(tokenizer.specialTokens.values());
  server = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', beforeStep: (rows) => gate.current?.hook(rows) });
  api = client(server.url);
});
afterAll(async () => {
  await server?.close();
  model?.dispose();
});

const textOf = (ids: readonly number[]) => tokenizer.decode(ids.filter((id) => !specials.has(id)));
const idsOf = (choice: unknown) => (choice as { token_ids: number[] }).token_ids;
const messages = [{ role: 'user' as const, content: 'Tell me about small language models.' }];

async function chatPrompt(enableThinking?: boolean): Promise<number[]> {
  return tokenizer.encodeChat(messages, { addGenerationPrompt: true, enableThinking });
}

describe('chat completions', () => {
  it('answers greedily with what the library generates for the rendered prompt, whole and streamed', async () => {
    const prompt = await chatPrompt();
    const expected = await generateTextBasicCache(model, prompt, { maxNewTokens: 12, eosTokenId: imEnd });
    expect(expected.some((id) => id === tokenizer.tokenToId('<think>') || id === tokenizer.tokenToId('</think>'))).toBe(false);
    const whole = await api.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0, ...withIds });
    expect(idsOf(whole.choices[0])).toEqual(expected);
    expect((whole.choices[0] as unknown as { prompt_token_ids: number[] }).prompt_token_ids).toEqual(prompt);
    expect(whole.choices[0]!.message.content).toBe(textOf(expected).replace(/^\n+/, ''));
    expect(whole.choices[0]!.finish_reason).toBe(expected.length === 12 ? 'length' : 'stop');
    expect(whole.usage).toEqual({ prompt_tokens: prompt.length, completion_tokens: 12, total_tokens: prompt.length + 12 });
    expect(whole.object).toBe('chat.completion');
    expect(whole.model).toBe('tiny');

    const stream = await api.chat.completions.create({ model: 'tiny', messages, max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true }, ...withIds } as never);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>) chunks.push(chunk);
    expect(chunks[0]!.choices[0]!.delta).toEqual({ role: 'assistant', content: '' });
    const content = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? '')).join('');
    expect(content).toBe(whole.choices[0]!.message.content);
    expect(chunks.flatMap((c) => c.choices.flatMap((ch) => idsOf(ch) ?? []))).toEqual(expected);
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe(whole.choices[0]!.finish_reason);
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toEqual(whole.usage);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
  });

  it('renders chat_template_kwargs.enable_thinking into the prompt', async () => {
    const r = await api.chat.completions.create({ model: 'tiny', messages, max_tokens: 1, temperature: 0, chat_template_kwargs: { enable_thinking: false }, ...withIds } as never);
    const prompt = (r as unknown as { choices: { prompt_token_ids: number[] }[] }).choices[0]!.prompt_token_ids;
    expect(prompt).toEqual(await chatPrompt(false));
    expect(prompt).not.toEqual(await chatPrompt());
  });

  it('samples what the seeded library samples, choice j with seed + j', async () => {
    const prompt = await chatPrompt();
    const sampling = { temperature: 0.9, topK: 40, topP: 0.95 };
    const expected = await Promise.all([7, 8].map((seed) => generateTextBasicCache(model, prompt, { maxNewTokens: 10, eosTokenId: imEnd, ...sampling, seed })));
    expect(expected[0]).not.toEqual(expected[1]);
    const r = await api.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0.9, top_k: 40, top_p: 0.95, seed: 7, n: 2, ...withIds } as never);
    const choices = (r as OpenAI.ChatCompletion).choices;
    expect(choices.map((c) => c.index)).toEqual([0, 1]);
    expect(choices.map(idsOf)).toEqual(expected);
  });

  it('gives logprobs equal to the log-softmax of the model logits, with the alternatives in order', async () => {
    const prompt = await chatPrompt();
    const r = await api.chat.completions.create({ model: 'tiny', messages, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3, ...withIds });
    const ids = idsOf(r.choices[0]);
    const entries = r.choices[0]!.logprobs!.content!;
    expect(entries).toHaveLength(ids.length);
    const { logits } = await model.forward([...prompt, ...ids]);
    const vocab = model.config.vocab_size;
    ids.forEach((id, i) => {
      const row = logits!.data.subarray((prompt.length - 1 + i) * vocab, (prompt.length + i) * vocab);
      const max = row.reduce((m, x) => Math.max(m, x), -Infinity);
      const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      const e = entries[i]!;
      expect(e.token).toBe(tokenizer.decode([id]));
      expect(e.bytes).toEqual([...Buffer.from(e.token, 'utf8')]);
      expect(e.logprob).toBeCloseTo(row[id]! - logZ, 3);
      expect(e.top_logprobs).toHaveLength(3);
      expect(e.top_logprobs[0]!.token).toBe(e.token); // greedy: the chosen token is the most likely
      expect(e.top_logprobs[0]!.logprob).toBeCloseTo(e.logprob, 10);
      expect(e.top_logprobs[1]!.logprob).toBeLessThanOrEqual(e.top_logprobs[0]!.logprob);
      expect(e.top_logprobs[2]!.logprob).toBeLessThanOrEqual(e.top_logprobs[1]!.logprob);
    });
  });
});

describe('end tokens', () => {
  it('stop a completion at an end token of the model folder, unless ignore_eos asks for max_tokens', async () => {
    const promptIds = [9707, 1879, 11, 1052, 374];
    const greedy = await generateTextBasicCache(model, promptIds, { maxNewTokens: 6, eosTokenId: null });
    // A server whose generation settings make the third greedy token an end token.
    const end = greedy[2]!;
    const local = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', generation: { eosTokenIds: [end], sampling: null } as never });
    try {
      const c = client(local.url);
      const stopped = await c.completions.create({ model: 'tiny', prompt: promptIds, max_tokens: 6, temperature: 0, ...withIds });
      expect(idsOf(stopped.choices[0])).toEqual(greedy.slice(0, greedy.indexOf(end)));
      expect(stopped.choices[0]!.finish_reason).toBe('stop');
      const full = await c.completions.create({ model: 'tiny', prompt: promptIds, max_tokens: 6, temperature: 0, ignore_eos: true, ...withIds } as never);
      expect(idsOf((full as OpenAI.Completion).choices[0])).toEqual(greedy);
      expect((full as OpenAI.Completion).choices[0]!.finish_reason).toBe('length');
    } finally {
      await local.close();
    }
  });
});

describe('completions', () => {
  const promptIds = [9707, 1879, 11, 1052, 374];

  it('answers a token-id prompt and a text prompt with the library greedy continuation, whole and streamed', async () => {
    const expected = await generateTextBasicCache(model, promptIds, { maxNewTokens: 10, eosTokenId: tokenizer.eosTokenId });
    const whole = await api.completions.create({ model: 'tiny', prompt: promptIds, max_tokens: 10, temperature: 0, ...withIds });
    expect(whole.object).toBe('text_completion');
    expect(idsOf(whole.choices[0])).toEqual(expected);
    expect(whole.choices[0]!.text).toBe(textOf(expected));
    expect(whole.usage).toMatchObject({ prompt_tokens: 5 });

    const text = 'Hello world, this is';
    const textIds = await tokenizer.encode(text, { chat: false });
    const fromText = await generateTextBasicCache(model, textIds, { maxNewTokens: 10, eosTokenId: tokenizer.eosTokenId });
    const stream = await api.completions.create({ model: 'tiny', prompt: text, max_tokens: 10, temperature: 0, stream: true, ...withIds });
    let streamed = '';
    const ids: number[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      streamed += chunk.choices[0]!.text;
      ids.push(...idsOf(chunk.choices[0]));
      finish = chunk.choices[0]!.finish_reason ?? finish;
    }
    expect(ids).toEqual(fromText);
    expect(streamed).toBe(textOf(fromText));
    expect(finish).toBe(fromText.length === 10 ? 'length' : 'stop');
  });

  it('gives tokens, token_logprobs, top_logprobs and text_offset', async () => {
    const r = await api.completions.create({ model: 'tiny', prompt: promptIds, max_tokens: 4, temperature: 0, logprobs: 2 });
    const lp = r.choices[0]!.logprobs!;
    expect(lp.tokens!.join('')).toBe(r.choices[0]!.text);
    expect(lp.text_offset).toEqual(lp.tokens!.map((_, i) => lp.tokens!.slice(0, i).join('').length));
    lp.top_logprobs!.forEach((top, i) => {
      expect(Object.keys(top)).toContain(lp.tokens![i]);
      expect(Math.max(...Object.values(top))).toBeCloseTo(lp.token_logprobs![i]!, 10);
    });
  });

  it('cuts the text at the first stop string and drops it, whole and streamed', async () => {
    const full = await api.completions.create({ model: 'tiny', prompt: promptIds, max_tokens: 12, temperature: 0 });
    const text = full.choices[0]!.text;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    expect(stop.trim()).not.toBe('');
    const cut = text.slice(0, text.indexOf(stop));
    const whole = await api.completions.create({ model: 'tiny', prompt: promptIds, max_tokens: 12, temperature: 0, stop: [stop, 'never-there'] });
    expect(whole.choices[0]!.text).toBe(cut);
    expect(whole.choices[0]!.finish_reason).toBe('stop');
    const stream = await api.completions.create({ model: 'tiny', prompt: promptIds, max_tokens: 12, temperature: 0, stop, stream: true });
    let streamed = '';
    for await (const chunk of stream) streamed += chunk.choices[0]!.text;
    expect(streamed).toBe(cut);
  });

  it('runs 8 concurrent greedy streams, each equal to its own single-stream result', async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => [100 + i * 7, 2000 + i, 30 + i]);
    const expected: number[][] = [];
    for (const p of prompts) expected.push(await generateTextBasicCache(model, p, { maxNewTokens: 6, eosTokenId: tokenizer.eosTokenId }));
    const results = await Promise.all(
      prompts.map(async (prompt) => {
        const stream = await api.completions.create({ model: 'tiny', prompt, max_tokens: 6, temperature: 0, stream: true, ...withIds });
        const ids: number[] = [];
        for await (const chunk of stream) ids.push(...idsOf(chunk.choices[0]));
        return ids;
      }),
    );
    expect(results).toEqual(expected);
  });

  it('aborts the completion of a client that goes away mid-stream while the others finish unchanged', async () => {
    const prompts = [[500, 501, 502], [600, 601, 602], [700, 701, 702]];
    const expected: number[][] = [];
    for (const p of prompts) expected.push(await generateTextBasicCache(model, p, { maxNewTokens: 8, eosTokenId: null }));
    // The middle request is held after its second token until its abort reaches the model loop.
    const held = new StepGate().hold(prompts[1]!, 2);
    gate.current = held;
    const controller = new AbortController();
    const run = async (prompt: number[], signal?: AbortSignal) => {
      const ids: number[] = [];
      const stream = await api.completions.create({ model: 'tiny', prompt, max_tokens: 8, temperature: 0, stream: true, stop: [], ...withIds }, { signal });
      for await (const chunk of stream) {
        ids.push(...idsOf(chunk.choices[0]));
        if (signal && ids.length === 2) controller.abort();
      }
      return ids;
    };
    const [first, aborted, last] = await Promise.allSettled([run(prompts[0]!), run(prompts[1]!, controller.signal), run(prompts[2]!)]);
    gate.current = null;
    expect(first).toEqual({ status: 'fulfilled', value: expected[0] });
    expect(last).toEqual({ status: 'fulfilled', value: expected[2] });
    // The openai client ends an aborted stream quietly, with what came before the abort.
    expect(aborted).toEqual({ status: 'fulfilled', value: expected[1]!.slice(0, 2) });
    expect(await held.outcome).toBe('aborted');
    expect(server.completer.stats()).toMatchObject({ queued: 0, running: 0 });
  });

  it('aborts the completion of a client that goes away before a whole response', async () => {
    const prompt = [800, 801, 802];
    const held = new StepGate().hold(prompt, 1);
    gate.current = held;
    const controller = new AbortController();
    const request = api.completions.create({ model: 'tiny', prompt, max_tokens: 50, temperature: 0 }, { signal: controller.signal });
    await held.reached;
    controller.abort();
    await expect(request).rejects.toThrow();
    // The gate holds the step until release() or the request's abort: the abort reached the model loop.
    expect(await held.outcome).toBe('aborted');
    gate.current = null;
    const after = await api.completions.create({ model: 'tiny', prompt, max_tokens: 2, temperature: 0 });
    expect(after.choices[0]!.finish_reason).toBe('length');
  });
});

describe('models, health and metrics', () => {
  it('lists the served model, answers health, and counts tokens and requests', async () => {
    const models = await api.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['tiny']);
    expect(await (await fetch(`${server.url}/health`)).json()).toEqual({ status: 'ok' });
    const before = await (await fetch(`${server.url}/metrics`)).text();
    const counter = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 'NaN');
    const r = await api.completions.create({ model: 'tiny', prompt: [1, 2, 3], max_tokens: 5, temperature: 0 });
    const after = await (await fetch(`${server.url}/metrics`)).text();
    expect(counter(after, 'qwen3_generated_tokens_total') - counter(before, 'qwen3_generated_tokens_total')).toBe(r.usage!.completion_tokens);
    expect(counter(after, 'qwen3_prompt_tokens_total') - counter(before, 'qwen3_prompt_tokens_total')).toBe(3);
    expect(counter(after, 'qwen3_queue_length')).toBe(0);
    expect(counter(after, 'qwen3_running_requests')).toBe(0);
    expect(counter(after, 'qwen3_time_to_first_token_seconds_count')).toBeGreaterThan(counter(before, 'qwen3_time_to_first_token_seconds_count'));
    expect(after).toMatch(/^qwen3_requests_total\{endpoint="\/v1\/completions",status="200"\} \d+$/m);
  });
});
