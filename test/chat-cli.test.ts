// `qwen3 tokenize --messages` and `qwen3 chat` with model folders: the rendered conversation and
// its ids are transformers' (the fixture of scripts/python/make_chat_template_fixtures.py), the chat sends
// what the folder's template renders, shows the thinking apart from the answer, stops at every end
// token the folder names, and samples with the folder's generation_config.json unless told
// otherwise. The model is tiny-bigvocab (the real tokenizer's vocabulary, random weights), so the
// expected replies are computed here with the library from the prompts the template gives.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TemplateMessage, Qwen3Model, Qwen3Tokenizer, generateTextBasicCache } from '../lib/index.js';
import { ReplyWriter } from '../lib/cli/reply-writer.js';
import { loadFixture } from './support/fixtures.js';
import { freePorts } from './support/ports.js';
import { runCli } from './support/run-cli.js';

const FIXTURES = join(__dirname, '.fixtures');
const TOKENIZER_DIR = join(FIXTURES, 'chat-template', 'tokenizer');
const big = loadFixture('tiny-bigvocab');
const modelArgs = ['--model', big.modelPath, '--config', big.configPath, '--device', 'cpu', '--dtype', 'float32'];

interface Case { name: string; messages: TemplateMessage[]; tools: object[] | null; add_generation_prompt: boolean; enable_thinking: boolean | null; text: string; ids: number[] }
const { cases } = JSON.parse(readFileSync(join(FIXTURES, 'chat-template', 'cases.json'), 'utf8')) as { cases: Case[] };

function qwen3(args: string[], input = '', env: NodeJS.ProcessEnv = process.env) {
  return runCli(args, { input, env });
}

const scratch = mkdtempSync(join(tmpdir(), 'qwen3-chat-cli-'));
/** A folder with the real tokenizer files plus `files` (name to content). */
function folder(name: string, files: Record<string, string> = {}): string {
  const dir = join(scratch, name);
  cpSync(TOKENIZER_DIR, dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content);
  return dir;
}
function file(name: string, value: unknown): string {
  writeFileSync(join(scratch, name), JSON.stringify(value));
  return join(scratch, name);
}

let model: Qwen3Model;
beforeAll(async () => {
  model = await Qwen3Model.load(big.modelPath, { config: big.configPath, device: 'cpu', dtype: 'float32' });
});
afterAll(() => {
  model.dispose();
  rmSync(scratch, { recursive: true, force: true });
});

/** The greedy reply of the model to `text`, as the chat shows it (newlines around it dropped). */
async function greedyReply(tokenizer: Qwen3Tokenizer, text: string, maxNewTokens: number, eosTokenId = tokenizer.eosTokenId): Promise<{ ids: number[]; shown: string }> {
  const ids = await generateTextBasicCache(model, await tokenizer.encode(text, { chat: false }), { maxNewTokens, eosTokenId });
  return { ids, shown: tokenizer.decode(ids).replace(/^\n+|\n+$/g, '') };
}

describe('qwen3 tokenize --messages', () => {
  // A model folder as the Hub has them: an hf fixture's config and weights with the real tokenizer files.
  let hfDir: string;
  beforeAll(() => {
    hfDir = join(scratch, 'hf-model');
    cpSync(join(FIXTURES, 'hf-untied-f32'), hfDir, { recursive: true });
    cpSync(TOKENIZER_DIR, hfDir, { recursive: true });
  });

  it.each([
    ['tools, no thinking', (c: Case) => c.name === 'multi-step tools with reasoning' && c.enable_thinking === false, ['--no-think']],
    ['thinking on', (c: Case) => c.name === 'parallel calls and two consecutive tool answers' && c.enable_thinking === true, ['--think']],
    ['no generation prompt', (c: Case) => c.name === 'three rounds with thinking in every answer' && !c.add_generation_prompt, ['--no-generation-prompt']],
    ['template default', (c: Case) => c.name === 'unicode everywhere' && c.add_generation_prompt && c.enable_thinking === null, []],
  ] as const)('prints the text and ids transformers gives (%s)', async (_, pick, flags) => {
    const c = cases.find(pick)!;
    const args = ['tokenize', '--model', hfDir, '--messages', file(`${c.name}.json`, c.messages), ...flags, '--json'];
    if (c.tools) args.push('--tools', file(`${c.name}-tools.json`, c.tools));
    const r = await qwen3(args);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ ids: c.ids, text: c.text });
  });

  it('prints the ids alone without --json, and takes a tokenizer folder or the bundled tokenizer', async () => {
    const c = cases.find((x) => x.name === 'system and user' && x.enable_thinking === false)!;
    const messages = file('plain.json', c.messages);
    const runs = await Promise.all([
      qwen3(['tokenize', '--tokenizer', TOKENIZER_DIR, '--messages', messages, '--no-think']),
      qwen3(['tokenize', '--messages', messages, '--no-think']),
    ]);
    for (const r of runs) expect(r.stdout).toBe(`${c.ids.join(',')}\n`);
  });

  it('refuses what cannot work, by name', async () => {
    const messages = file('ok.json', [{ role: 'user', content: 'hi' }]);
    const bad = join(scratch, 'bad.json');
    writeFileSync(bad, '[{"role": "user",');
    const runs: [string[], RegExp][] = [
      [['tokenize', '--model', 'Qwen/Qwen3-1.7B', '--messages', messages], /^qwen3: HF_HUB_OFFLINE is set and Qwen\/Qwen3-1\.7B at revision main is not in the cache at /],
      [['tokenize', '--model', join(scratch, 'nowhere'), '--messages', messages], /^qwen3: Model folder not found: /],
      [['tokenize', '--model', messages, '--messages', messages], /^qwen3: Expected a model folder for modelDir but .*ok\.json is not a directory/],
      [['tokenize', '--model', hfDir, '--tokenizer', TOKENIZER_DIR, '--messages', messages], /^qwen3: Give either --model or --tokenizer, not both/],
      [['tokenize', '--messages', messages, '--prompt', 'x'], /^qwen3: Give either --messages or a prompt/],
      [['tokenize', '--prompt', 'x', '--no-think'], /^qwen3: --tools, --think, --no-think and --no-generation-prompt go with --messages/],
      [['tokenize', '--messages', bad], /^qwen3: Expected JSON in .*bad\.json for --messages: /],
      [['tokenize', '--messages', join(scratch, 'absent.json')], /^qwen3: Cannot read .*absent\.json for --messages: no such file/],
      [['tokenize', '--messages', file('obj.json', { role: 'user' })], /^qwen3: Expected a JSON array of messages in .*obj\.json for --messages/],
      [['tokenize', '--messages', messages, '--tools', file('tools.json', { name: 'f' })], /^qwen3: Expected a JSON array of tool definitions/],
      [['tokenize', '--messages', file('null.json', [{ role: 'assistant', content: null }])], /^qwen3: Expected string for messages\.0\.content but received null/],
      [['tokenize', '--tokenizer', join(big.dir), '--messages', messages], /has no tokenizer\.json/],
    ];
    // Offline, with an empty Hugging Face cache: a repo id must not reach the network.
    const offline = { ...process.env, HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home'), HF_HUB_CACHE: undefined };
    const results = await Promise.all(runs.map(([args]) => qwen3(args, '', offline)));
    results.forEach((r, i) => {
      expect(r.status, runs[i]![0].join(' ')).toBe(1);
      expect(r.stderr).toMatch(runs[i]![1]);
    });
  });
});

describe('qwen3 chat with a model folder', () => {
  const official = (JSON.parse(readFileSync(join(TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8')) as { chat_template: string }).chat_template;

  it("sends what the folder's template renders, each answer kept in the history without its thinking", async () => {
    // A template the book's layout cannot produce: a fixed system prompt before Qwen3's own.
    const dir = folder('system-template', { 'chat_template.jinja': `<|im_start|>system\nYou are a test.<|im_end|>\n${official}` });
    const tokenizer = await Qwen3Tokenizer.load({ modelDir: dir });
    const user1 = { role: 'user' as const, content: 'Hello there' };
    const user2 = { role: 'user' as const, content: 'What did I say?' };
    const first = await greedyReply(tokenizer, tokenizer.applyChatTemplate([user1], { addGenerationPrompt: true, enableThinking: false }), 8);
    const second = await greedyReply(tokenizer, tokenizer.applyChatTemplate([user1, { role: 'assistant', content: first.shown }, user2], { addGenerationPrompt: true, enableThinking: false }), 8);
    // The book's layout would have sent another prompt, with another reply.
    const book = await greedyReply(tokenizer, '<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n', 8);
    expect(book.shown).not.toBe(first.shown);
    const r = await qwen3(['chat', ...modelArgs, '--tokenizer', dir, '--max-new-tokens', '8'], 'Hello there\nWhat did I say?\n');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${first.shown}\n${second.shown}\n`);
  });

  it('--distributed: rank 0 chats as one process does, rank 1 follows its calls, both exit 0', async () => {
    const dir = folder('distributed');
    const args = ['chat', ...modelArgs, '--tokenizer', dir, '--max-new-tokens', '8'];
    const input = 'Hello there\nWhat did I say?\n';
    const alone = await qwen3(args, input);
    expect(alone.status).toBe(0);
    const [MASTER_PORT, QWEN3_FORWARD_PORT] = (await freePorts(2)).map(String);
    const env = (rank: number) => ({ ...process.env, RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT, QWEN3_FORWARD_PORT });
    const [lead, follow] = await Promise.all([qwen3([...args, '--distributed'], input, env(0)), qwen3([...args, '--distributed'], '', env(1))]);
    expect(lead!.status, lead!.stderr).toBe(0);
    expect(lead!.stdout).toBe(alone.stdout);
    expect(follow!.status, follow!.stderr).toBe(0);
    expect(follow!.stdout).toBe('');
  });

  it('shows the thinking on stderr and the answer on stdout', async () => {
    // A generation prompt that opens the think block, as Qwen3's thinking-only models do.
    const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";
    const dir = folder('thinking-template', { 'chat_template.jinja': template });
    const tokenizer = await Qwen3Tokenizer.load({ modelDir: dir });
    const reply = await greedyReply(tokenizer, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n', 8);
    expect(reply.ids).not.toContain(tokenizer.tokenToId('</think>')); // the random model never closes it
    const r = await qwen3(['chat', ...modelArgs, '--tokenizer', dir, '--max-new-tokens', '8', '--think'], 'Hi\n');
    expect(r.status).toBe(0);
    expect(r.stderr).toBe(`${reply.shown}\n`);
    expect(r.stdout).toBe('\n');
  });

  it('stops at every end token the folder names', async () => {
    const tokenizer = await Qwen3Tokenizer.load({ modelDir: TOKENIZER_DIR });
    const text = tokenizer.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true, enableThinking: false });
    const { ids } = await greedyReply(tokenizer, text, 8);
    const k = ids.findIndex((id, i) => i >= 2 && ids.indexOf(id) === i);
    expect(k).toBeGreaterThanOrEqual(2);
    const dir = folder('two-ends', { 'generation_config.json': JSON.stringify({ eos_token_id: [151645, ids[k]] }) });
    const r = await qwen3(['chat', ...modelArgs, '--tokenizer', dir, '--max-new-tokens', '8'], 'Hi\n');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${tokenizer.decode(ids.slice(0, k)).replace(/^\n+|\n+$/g, '')}\n`);
  });

  it("samples with generation_config.json's settings unless the user sets them", async () => {
    const settings = { temperature: 1.0, top_k: 1000, top_p: 0.95 };
    const sampling = folder('sampling', { 'generation_config.json': JSON.stringify({ do_sample: true, ...settings }) });
    const chat = (dir: string, flags: string[]) => qwen3(['chat', ...modelArgs, '--tokenizer', dir, '--max-new-tokens', '8', ...flags], 'Hi\n');
    const [fromFolder, fromFlags, greedy, overridden] = await Promise.all([
      chat(sampling, ['--seed', '7']),
      chat(TOKENIZER_DIR, ['--seed', '7', '--temperature', '1', '--top-k', '1000', '--top-p', '0.95']),
      chat(TOKENIZER_DIR, []),
      chat(sampling, ['--temperature', '0']),
    ]);
    for (const r of [fromFolder, fromFlags, greedy, overridden]) expect(r.status).toBe(0);
    expect(fromFolder.stdout).toBe(fromFlags.stdout);
    expect(fromFolder.stdout).not.toBe(greedy.stdout);
    expect(overridden.stdout).toBe(greedy.stdout);
  });
});

describe('ReplyWriter', () => {
  it('splits a streamed Qwen3 reply into thinking and answer, dropping the newlines around each', async () => {
    const tokenizer = await Qwen3Tokenizer.load({ modelDir: TOKENIZER_DIR });
    const think = { start: tokenizer.tokenToId('<think>'), end: tokenizer.tokenToId('</think>') };
    const run = async (text: string, startsThinking = false) => {
      const out = { thinking: '', answer: '' };
      const writer = new ReplyWriter(tokenizer.createStreamDecoder(), think, { thinking: (t) => (out.thinking += t), answer: (t) => (out.answer += t) }, startsThinking);
      for (const id of await tokenizer.encode(text)) writer.push(id);
      writer.finish();
      return { ...out, answerIds: tokenizer.decode(writer.answerIds), thought: writer.thought };
    };
    expect(await run('<think>\nSum 🦙 2+2.\n\n</think>\n\nIt is 4.\n')).toEqual({ thinking: 'Sum 🦙 2+2.', answer: 'It is 4.', answerIds: '\n\nIt is 4.\n', thought: true });
    expect(await run('Still thinking\n</think>\n\nDone', true)).toEqual({ thinking: 'Still thinking', answer: 'Done', answerIds: '\n\nDone', thought: true });
    expect(await run('Plain <think>x</think> text\n\n')).toEqual({ thinking: '', answer: 'Plain <think>x</think> text', answerIds: 'Plain <think>x</think> text\n\n', thought: false });
  });
});
