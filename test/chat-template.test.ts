// Chat templates from model folders against Python transformers: every conversation that
// scripts/python/make_chat_template_fixtures.py rendered with apply_chat_template (text and ids) must
// come out identical here, and folders, templates and messages that cannot work are refused by name.
import { cpSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatTemplate, type TemplateMessage, splitThinking } from '../lib/tokenizer/chat-template.js';
import { readGenerationConfig, withSamplingDefaults } from '../lib/model/generation-config.js';
import { Qwen3Tokenizer, formatChat } from '../lib/tokenizer.js';

const FIXTURE = join(__dirname, '.fixtures', 'chat-template');
const TOKENIZER_DIR = join(FIXTURE, 'tokenizer');

interface Case {
  name: string;
  messages: TemplateMessage[];
  tools: Record<string, unknown>[] | null;
  add_generation_prompt: boolean;
  enable_thinking: boolean | null;
  text: string;
  ids: number[];
}
const { meta, cases } = JSON.parse(readFileSync(join(FIXTURE, 'cases.json'), 'utf8')) as { meta: { conversations: number }; cases: Case[] };
const options = (c: Case) => ({
  tools: c.tools,
  addGenerationPrompt: c.add_generation_prompt,
  ...(c.enable_thinking === null ? {} : { enableThinking: c.enable_thinking }),
});

let tokenizer: Qwen3Tokenizer;
const scratch = mkdtempSync(join(tmpdir(), 'qwen3-chat-template-'));
beforeAll(async () => {
  tokenizer = await Qwen3Tokenizer.load({ modelDir: TOKENIZER_DIR });
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A folder with the real tokenizer files plus `files` (name to content; null removes a file). */
function folder(name: string, files: Record<string, string | null> = {}): string {
  const dir = join(scratch, name);
  cpSync(TOKENIZER_DIR, dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) {
    if (content === null) rmSync(join(dir, file));
    else {
      mkdirSync(join(dir, file, '..'), { recursive: true });
      writeFileSync(join(dir, file), content);
    }
  }
  return dir;
}
const tokenizerConfig = () => JSON.parse(readFileSync(join(TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;

describe('parity with transformers apply_chat_template', () => {
  it('covers many conversations in every setting', () => {
    expect(meta.conversations).toBeGreaterThanOrEqual(40);
    expect(cases.length).toBe(meta.conversations * 4);
    const all = cases.flatMap((c) => c.messages);
    for (const role of ['system', 'user', 'assistant', 'tool']) expect(all.some((m) => m.role === role)).toBe(true);
    expect(all.some((m) => typeof m.reasoning_content === 'string')).toBe(true);
    expect(all.some((m) => m.tool_calls?.some((t) => typeof t.function?.arguments === 'object'))).toBe(true);
    expect(cases.some((c) => c.tools !== null && c.enable_thinking === false)).toBe(true);
  });

  it('renders the same text for every case', () => {
    const wrong = cases.filter((c) => tokenizer.applyChatTemplate(c.messages, options(c)) !== c.text);
    expect(wrong.map((c) => `${c.name} (generation prompt ${c.add_generation_prompt}, thinking ${c.enable_thinking})`)).toEqual([]);
    // Spot check one case in full, so that a failure shows the difference.
    const c = cases.find((x) => x.name === 'multi-step tools with reasoning' && x.enable_thinking === false)!;
    expect(tokenizer.applyChatTemplate(c.messages, options(c))).toBe(c.text);
  });

  it('gives the same ids for every case', async () => {
    const ids = await Promise.all(cases.map((c) => tokenizer.encodeChat(c.messages, options(c))));
    const wrong = cases.filter((c, i) => JSON.stringify(ids[i]) !== JSON.stringify(c.ids));
    expect(wrong.map((c) => c.name)).toEqual([]);
  });

  it('strips the thinking of answers before the last user message, keeps it after', () => {
    const c = cases.find((x) => x.name === 'three rounds with thinking in every answer' && x.add_generation_prompt && x.enable_thinking === null)!;
    const text = tokenizer.applyChatTemplate(c.messages, options(c));
    expect(text).not.toContain('Easy: Paris.');
    expect(text).toContain('<|im_start|>assistant\nParis.<|im_end|>');
    const last = cases.find((x) => x.name === 'assistant with think block last')!;
    expect(tokenizer.applyChatTemplate(last.messages, options(last))).toContain('<think>\nThe user greets me. I should answer briefly.\n</think>\n\nHello!');
  });

  it('the bundled tokenizer carries the official template too, which matches the book\'s layout for one user turn', async () => {
    const bundled = await Qwen3Tokenizer.load();
    const c = cases.find((x) => x.name === 'one tool call and its answer')!;
    expect(bundled.applyChatTemplate(c.messages, options(c))).toBe(c.text);
    // What encode({ chat: true }) renders (the tokenizer parity tests pin it) is what the official template gives.
    const user = [{ role: 'user' as const, content: 'Explain large language models.' }];
    expect(formatChat(user)).toBe(bundled.applyChatTemplate(user));
    expect(formatChat(user, { addGenerationPrompt: true })).toBe(bundled.applyChatTemplate(user, { addGenerationPrompt: true, enableThinking: false }));
    expect(formatChat(user, { addGenerationPrompt: true, addThinking: true })).toBe(bundled.applyChatTemplate(user, { addGenerationPrompt: true, enableThinking: true }));
  });
});

describe('model folders', () => {
  it('take the end tokens from generation_config.json, then config.json, then tokenizer_config.json', async () => {
    const gen = await Qwen3Tokenizer.load({ modelDir: folder('gen', { 'generation_config.json': '{"eos_token_id": [151645, 151643], "do_sample": true}' }) });
    expect(gen.eosTokenIds).toEqual([151645, 151643]);
    expect(gen.eosTokenId).toBe(151645);
    const base = await Qwen3Tokenizer.load({ modelDir: folder('base', { 'generation_config.json': '{"bos_token_id": 151643}', 'config.json': '{"eos_token_id": 151643}' }) });
    expect(base.eosTokenIds).toEqual([151643]);
    const config = await Qwen3Tokenizer.load({ modelDir: folder('tok-only', { 'tokenizer_config.json': JSON.stringify({ ...tokenizerConfig(), eos_token: '<|endoftext|>' }) }) });
    expect(config.eosTokenIds).toEqual([151643]);
    expect(tokenizer.eosTokenIds).toEqual([151645]); // the fixture's tokenizer_config.json: <|im_end|>
    expect(tokenizer.modelDir).toBe(TOKENIZER_DIR);
  });

  it('prefer chat_template.jinja to tokenizer_config.json, and pick "default" (or "tool_use" with tools) among several', async () => {
    const jinja = await Qwen3Tokenizer.load({ modelDir: folder('jinja', { 'chat_template.jinja': '{{ eos_token }}|{{ messages | length }}|{{ add_generation_prompt }}' }) });
    expect(jinja.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: true })).toBe('<|im_end|>|1|true');
    const listed = { ...tokenizerConfig(), chat_template: [{ name: 'default', template: 'D{{ tools is none }}' }, { name: 'tool_use', template: 'T{{ tools | length }}' }] };
    const several = await Qwen3Tokenizer.load({ modelDir: folder('list', { 'tokenizer_config.json': JSON.stringify(listed) }) });
    expect(several.applyChatTemplate([{ role: 'user', content: 'x' }])).toBe('Dtrue');
    expect(several.applyChatTemplate([{ role: 'user', content: 'x' }], { tools: [{ name: 'f' }] })).toBe('T1');
    const files = await Qwen3Tokenizer.load({ modelDir: folder('files', { 'additional_chat_templates/rag.jinja': 'R' }) });
    expect(() => files.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(/has several chat templates and none named "default" \(it has "rag"\)/);
  });

  it('strips as Python does: only the characters given, else Python\'s whitespace', () => {
    const t = new ChatTemplate("[{{ messages[0].content.strip() }}|{{ messages[1].content.lstrip() }}|{{ 'xx--'.rstrip('-x') }}]");
    expect(t.render([{ role: 'user', content: '\ufeff a \x1c' }, { role: 'user', content: ' \x85x\u3000' }])).toBe('[\ufeff a|x\u3000|]');
    expect(() => new ChatTemplate('{{ messages.strip() }}').render([{ role: 'user', content: 'a' }])).toThrow(/strip\(\) is a string method, but it was called on array of length 1/);
  });

  it('passes enable_thinking only when set, and raise_exception surfaces as an error naming the template', () => {
    const t = new ChatTemplate("{{ enable_thinking is defined }}{% if messages[0].content == 'boom' %}{{ raise_exception('no boom here') }}{% endif %}", {}, 'test template');
    expect(t.render([{ role: 'user', content: 'a' }])).toBe('false');
    expect(t.render([{ role: 'user', content: 'a' }], { enableThinking: false })).toBe('true');
    expect(() => t.render([{ role: 'user', content: 'boom' }])).toThrow('test template could not render these messages: no boom here');
    expect(() => new ChatTemplate('{% if %}').render([{ role: 'user', content: 'a' }])).toThrow(/^Cannot parse the chat template: /);
  });

  it('are refused by name when they cannot give a tokenizer or a template', async () => {
    await expect(Qwen3Tokenizer.load({ modelDir: join(scratch, 'absent') })).rejects.toThrow(`Model folder not found: ${join(scratch, 'absent')}`);
    const noTokenizer = folder('no-tokenizer', { 'tokenizer.json': null });
    await expect(Qwen3Tokenizer.load({ modelDir: noTokenizer })).rejects.toThrow(`Model folder ${noTokenizer} has no tokenizer.json`);
    await expect(Qwen3Tokenizer.load({ modelDir: join(TOKENIZER_DIR, 'tokenizer.json') })).rejects.toThrow(/is not a directory/);
    await expect(Qwen3Tokenizer.load({ modelDir: TOKENIZER_DIR, tokenizerFilePath: 'x.json' })).rejects.toThrow('Expected either modelDir or tokenizerFilePath for options but received both');
    const badGen = folder('bad-gen', { 'generation_config.json': '{"eos_token_id": "end"}' });
    await expect(Qwen3Tokenizer.load({ modelDir: badGen })).rejects.toThrow(`${join(badGen, 'generation_config.json')}: unexpected value for eos_token_id`);
    const badJson = folder('bad-json', { 'tokenizer_config.json': '{"chat_template": ' });
    await expect(Qwen3Tokenizer.load({ modelDir: badJson })).rejects.toThrow(`${join(badJson, 'tokenizer_config.json')} is not valid JSON`);
    const badList = folder('bad-list', { 'tokenizer_config.json': '{"chat_template": [{"name": "default"}]}' });
    await expect(Qwen3Tokenizer.load({ modelDir: badList })).rejects.toThrow(/expected chat_template to be a string or a list of \{name, template\}/);
    const none = await Qwen3Tokenizer.load({ modelDir: folder('no-template', { 'tokenizer_config.json': '{}' }) });
    expect(() => none.applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(/has no chat template/);
    const file = await Qwen3Tokenizer.load({ tokenizerFilePath: join(TOKENIZER_DIR, 'tokenizer.json') });
    expect(file.chatTemplate).toBeNull();
  });
});

describe('generation settings of a folder', () => {
  it("sample only with do_sample, filling what is left out with transformers' defaults; the user's values win", async () => {
    const settings = async (json: object) => (await readGenerationConfig(folder(`gen-${JSON.stringify(json).replace(/\W/g, '')}`, { 'generation_config.json': JSON.stringify(json) }))).sampling;
    expect(await settings({ do_sample: true, temperature: 0.6, top_k: 20, top_p: 0.95 })).toEqual({ temperature: 0.6, topK: 20, topP: 0.95 });
    expect(await settings({ do_sample: true, temperature: 0.7 })).toEqual({ temperature: 0.7, topK: 50, topP: 1 });
    expect(await settings({ temperature: 0.7, top_k: 20 })).toBeNull(); // greedy in transformers too
    expect((await readGenerationConfig(TOKENIZER_DIR)).sampling).toBeNull();
    const defaults = { temperature: 0.6, topK: 20, topP: 0.95 };
    expect(withSamplingDefaults({ temperature: undefined, topK: undefined, topP: undefined }, defaults)).toEqual(defaults);
    expect(withSamplingDefaults({ temperature: 0, topK: undefined, topP: 0.5 }, defaults)).toEqual({ temperature: 0, topK: 20, topP: 0.5 });
    expect(withSamplingDefaults({ temperature: 1 }, null)).toEqual({ temperature: 1 });
  });
});

describe('messages and options', () => {
  it('are checked and named', () => {
    const render = (messages: unknown, opts: unknown = {}) => () => tokenizer.applyChatTemplate(messages as TemplateMessage[], opts as object);
    expect(render([])).toThrow('Expected at least one chat message for messages but received array of length 0');
    expect(render('hi')).toThrow('Expected array of chat messages for messages but received "hi"');
    expect(render([{ role: 'robot', content: 'x' }])).toThrow('Expected one of "system", "user", "assistant", "tool" for messages.0.role but received "robot"');
    expect(render([{ role: 'assistant', content: null, tool_calls: [] }])).toThrow('Expected string for messages.0.content but received null');
    expect(render([{ role: 'assistant', content: '', tool_calls: 'f()' }])).toThrow('Expected array of tool calls or null for messages.0.tool_calls but received "f()"');
    expect(render([{ role: 'user', content: 'x' }], { tools: {} })).toThrow('Expected array of tool definitions or null for options.tools but received object {}');
    expect(render([{ role: 'user', content: 'x' }], { thinking: true })).toThrow('Unknown option options.thinking');
    expect(render([{ role: 'user', content: 'x', when: new Date(0) }])).toThrow(/^Expected a JSON value .* for messages\.0\.when but received object/);
    expect(render([{ role: 'user', content: 'x' }], { tools: [{ f: () => 1 }] })).toThrow(/for options\.tools\.0\.f but received function/);
  });

  it('drop null fields and accept reasoning under its older names, as transformers does', () => {
    const t = new ChatTemplate('{% for m in messages %}{{ m | tojson }}{% endfor %}');
    expect(t.render([{ role: 'assistant', content: 'a', reasoning: 'r', tool_calls: null }])).toBe('{"thinking": "r", "role": "assistant", "content": "a", "reasoning": "r", "reasoning_content": "r"}');
  });
});

describe('splitThinking', () => {
  it('reads a reply the way the template reads an assistant turn', () => {
    expect(splitThinking('<think>\nHmm.\n</think>\n\nYes.')).toEqual({ thinking: 'Hmm.', answer: 'Yes.' });
    expect(splitThinking('Hmm.\n</think>\n\nYes.\n')).toEqual({ thinking: 'Hmm.', answer: 'Yes.\n' });
    expect(splitThinking('Just an answer')).toEqual({ thinking: '', answer: 'Just an answer' });
    expect(splitThinking('<think>\n\n</think>\n\n')).toEqual({ thinking: '', answer: '' });
  });
});
