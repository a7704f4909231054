// How the server turns token ids into response text, independent of the model: stop strings and
// Qwen3's thinking split the same way however the text is cut into pieces; and, through a server
// whose completer plays back scripted tokens, reasoning_content apart from content (whole and
// streamed, also when the prompt opened the think block), no half UTF-8 character in any chunk,
// special tokens left out, a chat template's own error as a 400, and the sampling defaults and
// stop ids the server hands the completer.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Qwen3Model, Qwen3Tokenizer } from '../lib/index.js';
import { type RunningServer, type ServerOptions, startServer } from '../lib/serve/server.js';
import { ReasoningSplitter, StopMatcher } from '../lib/serve/text.js';
import { ScriptedCompleter, TOKENIZER_DIR, client, loadTiny, parseEvents, post } from './support/serve.js';

/** Every way to cut `text` in two, and one character at a time. */
function cuts(text: string): string[][] {
  const chars = [...text];
  return [[text], chars, ...chars.map((_, i) => [chars.slice(0, i).join(''), chars.slice(i).join('')])];
}

describe('StopMatcher and ReasoningSplitter', () => {
  it.each([
    ['Hello world, goodbye', ['o w', 'bye'], 'Hell'],
    ['abcabd', ['abd'], 'abc'],
    ['no stop in here', ['xyz', 'herex'], 'no stop in here'],
    ['ends with a partial sto', ['stop'], 'ends with a partial sto'],
    ['emoji 😀 then stop', ['😀'], 'emoji '],
  ])('cuts %j at the first of %j however it arrives', (text, stops, expected) => {
    for (const pieces of cuts(text)) {
      const m = new StopMatcher(stops);
      const out = pieces.map((p) => m.push(p)).join('') + m.flush();
      expect(out).toBe(expected);
      expect(m.stopped).toBe(expected !== text);
    }
  });

  it.each([
    ['<think>\nLet me see.\n</think>\n\nIt is 4.', false, 'Let me see.', 'It is 4.'],
    ['\n<think>\n\n</think>\n\nDirect answer\n', false, '', 'Direct answer\n'],
    ['Just an answer with </think> inside', false, '', 'Just an answer with </think> inside'],
    ['<thinking is not a tag', false, '', '<thinking is not a tag'],
    ['Opened by the prompt.\n</think>\n\nAnswer', true, 'Opened by the prompt.', 'Answer'],
    ['<think>\ncut off by max_tokens\n\n', false, 'cut off by max_tokens', ''],
  ])('splits %j (prompt opened the block: %s) into reasoning and content however it arrives', (text, opened, reasoning, content) => {
    for (const pieces of cuts(text)) {
      const s = new ReasoningSplitter(opened);
      const parts = [...pieces.map((p) => s.push(p)), s.flush()];
      expect(parts.map((p) => p.reasoning).join('')).toBe(reasoning);
      expect(parts.map((p) => p.content).join('')).toBe(content);
    }
  });
});

describe('a server with scripted completions', () => {
  let model: Qwen3Model;
  let tokenizer: Qwen3Tokenizer;
  const scratch = mkdtempSync(join(tmpdir(), 'qwen3-serve-text-'));
  const servers: RunningServer[] = [];
  const ids = (text: string) => tokenizer.encode(text, { chat: false });

  beforeAll(async () => {
    ({ model, tokenizer } = await loadTiny());
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    model?.dispose();
    rmSync(scratch, { recursive: true, force: true });
  });

  async function serve(script: number[], options: Partial<ServerOptions> = {}): Promise<{ url: string; completer: ScriptedCompleter }> {
    const completer = new ScriptedCompleter(script);
    const server = await startServer({ model, tokenizer, port: 0, servedModelName: 'tiny', completer, ...options });
    servers.push(server);
    return { url: server.url, completer };
  }

  const messages = [{ role: 'user' as const, content: 'What is 2 + 2?' }];

  it('returns the thinking as reasoning_content and the rest as content, whole and streamed', async () => {
    const script = [tokenizer.tokenToId('<think>')!, ...(await ids('\nTwo and two.\n')), tokenizer.tokenToId('</think>')!, ...(await ids('\n\nIt is 4.'))];
    const { url } = await serve(script);
    const whole = await client(url).chat.completions.create({ model: 'tiny', messages });
    expect(whole.choices[0]!.message).toMatchObject({ role: 'assistant', content: 'It is 4.', reasoning_content: 'Two and two.' });
    expect(whole.choices[0]!.finish_reason).toBe('stop');
    expect(whole.usage!.completion_tokens).toBe(script.length + 1);
    const stream = await client(url).chat.completions.create({ model: 'tiny', messages, stream: true });
    let reasoning = '';
    let content = '';
    for await (const chunk of stream) {
      const delta = chunk.choices[0]!.delta as { content?: string; reasoning_content?: string };
      reasoning += delta.reasoning_content ?? '';
      content += delta.content ?? '';
    }
    expect({ reasoning, content }).toEqual({ reasoning: 'Two and two.', content: 'It is 4.' });
  });

  it('reads the reply as thinking from the start when the generation prompt opens the think block', async () => {
    const dir = join(scratch, 'thinking-template');
    cpSync(TOKENIZER_DIR, dir, { recursive: true });
    writeFileSync(join(dir, 'chat_template.jinja'), "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n<think>\n");
    const thinking = await Qwen3Tokenizer.load({ modelDir: dir });
    const { url } = await serve([...(await ids('Hmm.')), tokenizer.tokenToId('</think>')!, ...(await ids('\n\nFour.'))], { tokenizer: thinking });
    const r = await client(url).chat.completions.create({ model: 'tiny', messages });
    expect(r.choices[0]!.message).toMatchObject({ content: 'Four.', reasoning_content: 'Hmm.' });
  });

  it('never streams half a UTF-8 character, and leaves special tokens out of the text', async () => {
    const split = await ids('a𝄞b');
    expect(split.length).toBeGreaterThan(3); // 𝄞 takes two tokens
    const { url } = await serve([...split, tokenizer.specialTokens.get('<|endoftext|>')!, ...(await ids('c'))]);
    const r = await post(url, '/v1/completions', { prompt: 'x', stream: true, return_token_ids: true });
    const { events, done } = parseEvents(r.text);
    expect(done).toBe(true);
    const texts = events.map((e: any) => e.choices[0].text as string);
    expect(texts.some((t) => t.includes('\uFFFD'))).toBe(false);
    expect(texts.join('')).toBe('a𝄞bc');
    expect(events.flatMap((e: any) => e.choices[0].token_ids)).toHaveLength(split.length + 2);
  });

  it("answers a chat template's own error with a 400 naming messages", async () => {
    const dir = join(scratch, 'strict-template');
    cpSync(TOKENIZER_DIR, dir, { recursive: true });
    writeFileSync(join(dir, 'chat_template.jinja'), "{% if messages[-1].role != 'user' %}{{ raise_exception('The last message must come from the user') }}{% endif %}{{ messages[-1].content }}");
    const strict = await Qwen3Tokenizer.load({ modelDir: dir });
    const { url } = await serve([], { tokenizer: strict });
    const r = await post(url, '/v1/chat/completions', { messages: [{ role: 'assistant', content: 'x' }] });
    expect(r.status).toBe(400);
    expect(r.json.error).toMatchObject({ param: 'messages', type: 'invalid_request_error' });
    expect(r.json.error.message).toMatch(/The last message must come from the user/);
  });

  it("hands the completer the request's sampling, else the folder's generation_config, else OpenAI's defaults", async () => {
    const generation = { eosTokenIds: [151643], sampling: { temperature: 0.6, topK: 20, topP: 0.95 } };
    const withDefaults = await serve([], { generation });
    const api = client(withDefaults.url);
    await api.chat.completions.create({ model: 'tiny', messages });
    await api.chat.completions.create({ model: 'tiny', messages, temperature: 0, top_k: -1, seed: 9, n: 3 } as never);
    await api.completions.create({ model: 'tiny', prompt: [1, 2, 3], top_p: 0.5, max_tokens: 7, logprobs: 2 });
    const [plain, ...rest] = withDefaults.completer.requests;
    const imEnd = tokenizer.specialTokens.get('<|im_end|>')!;
    expect(plain).toMatchObject({ temperature: 0.6, topK: 20, topP: 0.95, seed: undefined, logprobs: null, stopIds: [imEnd, 151643] });
    expect(plain!.maxTokens).toBe(model.config.context_length - plain!.promptIds.length);
    expect(rest.slice(0, 3).map((r) => [r.temperature, r.topK, r.topP, r.seed])).toEqual([[0, 0, 0.95, 9], [0, 0, 0.95, 10], [0, 0, 0.95, 11]]);
    expect(rest[3]).toMatchObject({ promptIds: [1, 2, 3], temperature: 0.6, topK: 20, topP: 0.5, maxTokens: 7, logprobs: 2, stopIds: [imEnd, 151643] });

    const bare = await serve([]);
    await client(bare.url).completions.create({ model: 'tiny', prompt: [1] });
    expect(bare.completer.requests[0]).toMatchObject({ temperature: 1, topK: 0, topP: 1, stopIds: [imEnd] });
  });
});
