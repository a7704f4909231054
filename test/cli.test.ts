// The qwen3 command line, end to end, as a user runs it (compiled dist/cli.js).
import { spawn } from 'node:child_process';
import { createReadStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { type Server, createServer } from 'node:http';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qwen3Tokenizer, defaultTokenizerFilePath } from '../lib/index.js';
import { loadFixture } from './support/fixtures.js';

const CLI = join(__dirname, '..', 'dist', 'cli.js');

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI without blocking this process (the download tests serve files from it). */
function qwen3(args: string[], opts: { env?: Record<string, string>; input?: string; onStdout?: (s: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      opts.onStdout?.(stdout, child);
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

const fx = loadFixture('tiny-gqa4');
const modelArgs = ['--model', fx.modelPath, '--config', fx.configPath, '--device', 'cpu', '--dtype', 'float32'];
// Text prompts need a model whose vocabulary covers the real tokenizer's ids.
const big = loadFixture('tiny-bigvocab');
const bigArgs = ['--model', big.modelPath, '--config', big.configPath, '--device', 'cpu', '--dtype', 'float32'];

describe('qwen3 info', () => {
  it('--json reports the libtorch the addon was built against and the devices', async () => {
    const r = await qwen3(['info', '--json']);
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.libtorch.version).toMatch(/^2\.\d+\.\d+/);
    expect(info.libtorch.root).toBeTruthy();
    expect(info.devices).toContain('cpu');
    expect(info.addon.path).toMatch(/qwen3_torch\.node$/);
  });

  it('prints a readable summary', async () => {
    const r = await qwen3(['info']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/libtorch: 2\.\d+/);
    expect(r.stdout).toMatch(/devices: .*cpu/);
  });
});

describe('qwen3 tokenize', () => {
  it('--json prints ids and the decoded text', async () => {
    const r = await qwen3(['tokenize', '--prompt', 'Explain large language models.', '--json']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ ids: [840, 20772, 3460, 4128, 4119, 13], text: 'Explain large language models.' });
  });

  it('--chat wraps the prompt in the chat template', async () => {
    const r = await qwen3(['tokenize', '--prompt', 'Hi', '--chat', '--json']);
    const { text } = JSON.parse(r.stdout);
    expect(text).toBe('<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
  });
});

describe('qwen3 generate', () => {
  const base = ['generate', ...modelArgs, '--prompt-ids', fx.prompt.join(','), '--json'];

  it('prints the greedy ids Hugging Face produces, their text and stats', async () => {
    const r = await qwen3([...base, '--max-new-tokens', '20']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.ids).toEqual(fx.runs.float32.hf_greedy.slice(0, 20));
    const tokenizer = await Qwen3Tokenizer.load();
    expect(out.text).toBe(tokenizer.decode(out.ids));
    expect(out.stats.device).toBe('cpu');
    for (const key of ['seconds', 'tokensPerSecond', 'prefillSeconds', 'decodeTokensPerSecond']) expect(out.stats[key]).toBeGreaterThan(0);
    expect(out.stats.peakMemoryBytes).toBeNull();
  });

  it('--no-cache gives the same ids; sampling flags are reproducible by seed', async () => {
    const r = await qwen3([...base, '--max-new-tokens', '12', '--no-cache']);
    expect(JSON.parse(r.stdout).ids).toEqual(fx.runs.float32.hf_greedy_nocache.slice(0, 12));
    const sampled = ['--max-new-tokens', '12', '--temperature', '1.2', '--top-k', '50', '--top-p', '0.95', '--seed', '7'];
    const s1 = JSON.parse((await qwen3([...base, ...sampled])).stdout).ids;
    const s2 = JSON.parse((await qwen3([...base, ...sampled])).stdout).ids;
    expect(s1).toEqual(s2);
    expect(s1).not.toEqual(fx.runs.float32.hf_greedy.slice(0, 12));
  });

  it('stops at --eos-token-id unless --ignore-eos', async () => {
    const greedy = fx.runs.float32.hf_greedy;
    const eos = greedy[4]!;
    const stopped = JSON.parse((await qwen3([...base, '--max-new-tokens', '20', '--eos-token-id', String(eos)])).stdout);
    expect(stopped.ids).toEqual(greedy.slice(0, greedy.indexOf(eos)));
    const ignored = JSON.parse((await qwen3([...base, '--max-new-tokens', '20', '--eos-token-id', String(eos), '--ignore-eos'])).stdout);
    expect(ignored.ids).toHaveLength(20);
  });

  it('streams text from a text prompt to stdout and prints stats to stderr', async () => {
    const r = await qwen3(['generate', ...bigArgs, '--prompt', 'Explain large language models.', '--max-new-tokens', '15']);
    expect(r.status).toBe(0);
    const tokenizer = await Qwen3Tokenizer.load();
    const prompt = await tokenizer.encode('Explain large language models.');
    const json = JSON.parse((await qwen3(['generate', ...bigArgs, '--prompt-ids', prompt.join(','), '--max-new-tokens', '15', '--json'])).stdout);
    expect(r.stdout).toBe(`${json.text}\n`);
    expect(r.stderr).toMatch(/Time: \d+\.\d\d sec\n\d+ tokens\/sec/);
  });

  it('fails with a clear message and a non-zero exit code on bad input', async () => {
    const cases: [string[], RegExp][] = [
      [['generate', '--model', 'nope.pth', '--size', '0.6B', '--prompt-ids', '1,2'], /Model file not found: nope\.pth/],
      [[...base, '--max-new-tokens', '0'], /Expected integer between 1 and 96 for maxNewTokens but received 0/],
      [[...base, '--max-new-tokens', 'ten'], /Expected integer for --max-new-tokens but received "ten"/],
      [[...base, '--temperature', 'hot'], /Expected number for --temperature but received "hot"/],
      [[...base, '--top-p', '2'], /for topP but received 2/],
      [['generate', ...modelArgs, '--prompt-ids', '1,x'], /comma-separated token ids/],
      [['generate', ...modelArgs, '--prompt-ids', '1,512'], /between 0 and 511 for token id/],
      [['generate', ...modelArgs], /Give exactly one of --prompt, --prompt-ids, --prompt-file and --prompt-ids-file/],
      [[...base, '--device', 'tpu'], /for device but received "tpu"/],
      [['generate', '--model', fx.modelPath, '--size', '7B', '--prompt-ids', '1'], /Allowed choices are 0\.6B/],
      [['tokenize', '--prompt', 'x', '--tokenizer', 'missing.json'], /missing\.json/],
    ];
    const runs = await Promise.all(cases.map(([args]) => qwen3(args)));
    runs.forEach((r, i) => {
      expect(r.status, cases[i]![0].join(' ')).toBe(1);
      expect(r.stderr).toMatch(cases[i]![1]);
    });
  });
});

describe('downloads and chat against a local server', () => {
  let server: Server;
  let url: string;
  let home: string;
  const requests: string[] = [];
  // The server plays Hugging Face: the tiny checkpoint stands in for the 0.6B weights.
  const files: Record<string, string> = {
    'qwen3-0.6B-base.pth': fx.modelPath,
    'qwen3-0.6B-reasoning.pth': big.modelPath,
    'tokenizer-base.json': defaultTokenizerFilePath(),
    'tokenizer-reasoning.json': defaultTokenizerFilePath(),
  };

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'qwen3-home-'));
    server = createServer((req, res) => {
      const name = decodeURIComponent((req.url ?? '').split('/').pop() ?? '');
      requests.push(`${req.method} ${name}`);
      const path = files[name];
      if (!path) return res.writeHead(404).end();
      res.writeHead(200, { 'Content-Length': statSync(path).size });
      if (req.method === 'HEAD') return res.end();
      createReadStream(path).pipe(res);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.close();
    rmSync(home, { recursive: true, force: true });
  });
  const env = () => ({ QWEN3_HOME: home, QWEN3_BASE_URL: url });

  it('qwen3 download fetches the weights and tokenizer into QWEN3_HOME, then is up to date', async () => {
    const r = await qwen3(['download', '--kind', 'base'], { env: env() });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual([join(home, 'qwen3-0.6B-base.pth'), join(home, 'tokenizer-base.json')]);
    expect(statSync(join(home, 'qwen3-0.6B-base.pth')).size).toBe(statSync(fx.modelPath).size);
    requests.length = 0;
    expect((await qwen3(['download', '--kind', 'base'], { env: env() })).status).toBe(0);
    expect(requests.filter((r) => r.startsWith('GET'))).toEqual([]);
    const only = await qwen3(['download', '--kind', 'reasoning', '--tokenizer-only', '--out-dir', join(home, 'tok')], { env: env() });
    expect(only.status).toBe(0);
    expect(readdirSync(join(home, 'tok'))).toEqual(['tokenizer-reasoning.json']);
  });

  it('generate without --model uses the downloaded base model', async () => {
    const r = await qwen3(['generate', '--config', fx.configPath, '--dtype', 'float32', '--device', 'cpu', '--prompt-ids', fx.prompt.join(','), '--max-new-tokens', '10', '--json'], { env: env() });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).ids).toEqual(fx.runs.float32.hf_greedy.slice(0, 10));
  });

  it('download reports an unreachable server clearly', async () => {
    const r = await qwen3(['download', '--kind', 'reasoning'], { env: { QWEN3_HOME: join(home, 'x'), QWEN3_BASE_URL: 'http://127.0.0.1:9' } });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Could not reach 127\.0\.0\.1:9 to download/);
  });

  it('chat keeps the history across turns and answers each line', async () => {
    const args = ['chat', '--config', big.configPath, '--dtype', 'float32', '--device', 'cpu', '--max-new-tokens', '8'];
    const r = await qwen3(args, { env: env(), input: 'Hello there\nWhat did I just say?\n' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const answers = r.stdout.split('\n').filter((l) => l.length > 0);
    expect(answers.length).toBeGreaterThanOrEqual(2);
  });

  it('Ctrl-C stops an answer, not the chat', async () => {
    const args = ['chat', '--config', big.configPath, '--dtype', 'float32', '--device', 'cpu', '--max-new-tokens', '30'];
    // The chat signals itself as its first answer starts (support/interrupt-first-answer.cjs).
    const hook = join(__dirname, 'support', 'interrupt-first-answer.cjs');
    const r = await qwen3(args, { env: { ...env(), NODE_OPTIONS: `--require ${hook}` }, input: 'first question\nsecond question\n' });
    expect(r.status).toBe(0);
    // The first answer ends early, marked; the second is answered in full after it.
    const [first, second, ...more] = r.stdout.split(' [stopped]\n');
    expect(first!.length).toBeGreaterThan(0);
    expect(more).toEqual([]);
    expect(second!.trim().length).toBeGreaterThan(0);
  });
});
