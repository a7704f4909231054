// The CLI under a hostile user: Ctrl-C during a long prompt, a reader that goes away, and
// prompts too long for a command line. Each runs the compiled dist/cli.js in a child process on
// the tiny fixtures.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Qwen3Model, Qwen3Tokenizer, generateTextBasicCache } from '../lib/index.js';
import { PREFILL_CHUNK_SIZE } from '../lib/generate.js';
import { loadFixture } from './support/fixtures.js';

const CLI = join(__dirname, '..', 'dist', 'cli.js');
const HOLD_SECOND_PREFILL = join(__dirname, 'support', 'hold-second-prefill.cjs');
const fx = loadFixture('tiny-gqa4'); // vocab 512, context 96
const big = loadFixture('tiny-bigvocab'); // the real tokenizer's vocabulary, context 256
const cpu = ['--device', 'cpu', '--dtype', 'float32'];
const bigArgs = ['--model', big.modelPath, '--config', big.configPath, ...cpu];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  input?: string;
  /** node --require this file first (a test hook). */
  preload?: string;
  /** The child's stdout: a pipe read into `stdout` (default), or this file descriptor. */
  stdoutFd?: number;
  /** Called with everything written to stderr so far, each time more arrives. */
  onStderr?: (stderr: string, child: ChildProcess) => void;
}

const running = new Set<ChildProcess>();
afterEach(() => {
  // A test that failed half-way must not leave its child behind.
  for (const child of running) child.kill('SIGKILL');
  running.clear();
});

function qwen3(args: string[], opts: RunOptions = {}): Promise<Run> {
  return new Promise((resolve) => {
    const node = opts.preload ? ['--require', opts.preload] : [];
    const child = spawn(process.execPath, [...node, CLI, ...args], { stdio: ['pipe', opts.stdoutFd ?? 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d));
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d;
      opts.onStderr?.(stderr, child);
    });
    child.on('close', (status) => {
      running.delete(child);
      resolve({ status, stdout, stderr });
    });
    child.stdin!.end(opts.input ?? '');
  });
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qwen3-cli-robust-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Ctrl-C during a long prompt', () => {
  // The tiny weights with a longer context (RoPE has no weights): room for a prompt of 3 chunks.
  const promptLength = 2 * PREFILL_CHUNK_SIZE + 476;
  const prompt = Array.from({ length: promptLength }, (_, i) => (i * 37 + 11) % 512);
  let config: string;
  let idsFile: string;
  let args: string[];

  beforeAll(() => {
    config = join(dir, 'long-context.json');
    writeFileSync(config, JSON.stringify({ ...fx.config, context_length: 4096 }));
    idsFile = join(dir, 'long-prompt.ids');
    writeFileSync(idsFile, `${prompt.join(' ')}\n`);
    args = ['generate', '--model', fx.modelPath, '--config', config, ...cpu, '--prompt-ids-file', idsFile, '--max-new-tokens', '20'];
  });

  /** Runs generate with the hold hook and sends one SIGINT when the CLI says it is prefilling. */
  function interrupted(extra: string[]): Promise<Run & { sent: boolean }> {
    let sent = false;
    return qwen3([...args, ...extra], {
      preload: HOLD_SECOND_PREFILL,
      onStderr: (stderr, child) => {
        if (!sent && stderr.includes(`Prefilling ${promptLength} prompt tokens`)) {
          sent = true;
          child.kill('SIGINT');
        }
      },
    }).then((r) => ({ ...r, sent }));
  }

  it('without Ctrl-C the chunked prompt gives the tokens of one prefill call, and exits 0', async () => {
    const r = await qwen3([...args, '--json']);
    expect(r.stderr).toContain(`Prefilling ${promptLength} prompt tokens, ${PREFILL_CHUNK_SIZE} at a time`);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.aborted).toBe(false);
    const model = await Qwen3Model.load(fx.modelPath, { config, device: 'cpu', dtype: 'float32' });
    try {
      expect(out.ids).toEqual(await generateTextBasicCache(model, prompt, { maxNewTokens: 20, eosTokenId: null, prefillChunkSize: promptLength }));
    } finally {
      model.dispose();
    }
  });

  it('--json: a SIGINT between prefill chunks ends it with exit code 130 and "aborted": true', async () => {
    const r = await interrupted(['--json']);
    expect(r.sent).toBe(true);
    expect(r.status).toBe(130);
    const out = JSON.parse(r.stdout);
    expect(out.aborted).toBe(true);
    expect(out.ids).toEqual([]); // stopped before the prompt's last chunk, so nothing generated
  });

  it('--no-stream and streaming: exit code 130 and a line saying it was interrupted', async () => {
    for (const extra of [['--no-stream'], []]) {
      const r = await interrupted(extra);
      expect(r.sent, extra.join(' ')).toBe(true);
      expect(r.status, extra.join(' ')).toBe(130);
      expect(r.stderr).toContain('Interrupted after 0 new tokens');
      expect(r.stdout).toBe('\n');
    }
  });
});

describe('a reader that goes away', () => {
  /** A FIFO whose only reader has closed: every write to it fails with EPIPE, the moment it is made. */
  function readerlessPipe(name: string): number {
    const path = join(dir, name);
    execFileSync('mkfifo', [path]);
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(path, constants.O_WRONLY);
    closeSync(reader);
    return writer;
  }

  async function intoClosedPipe(name: string, args: string[]): Promise<Run> {
    const fd = readerlessPipe(name);
    try {
      return await qwen3(args, { stdoutFd: fd });
    } finally {
      closeSync(fd);
    }
  }

  it('is a normal end: exit code 0, no stack trace, no stats, for every command that prints', async () => {
    const text = join(dir, 'closed-pipe.txt');
    writeFileSync(text, 'Explain large language models. '.repeat(2000));
    const cases: [string, string[]][] = [
      ['tokenize-json', ['tokenize', '--prompt', 'Hello', '--json']],
      ['tokenize', ['tokenize', '--prompt-file', text]],
      ['generate-stream', ['generate', ...bigArgs, '--prompt', 'Explain large language models.', '--max-new-tokens', '40']],
      ['generate-json', ['generate', ...bigArgs, '--prompt', 'Explain large language models.', '--max-new-tokens', '5', '--json']],
      ['info', ['info', '--json']],
    ];
    for (const [name, args] of cases) {
      const r = await intoClosedPipe(name, args);
      expect(r.stderr, name).toBe('');
      expect(r.status, name).toBe(0);
    }
  });
});

describe('prompts from files and standard input', () => {
  const gqaArgs = ['--model', fx.modelPath, '--config', fx.configPath, ...cpu, '--max-new-tokens', '10', '--json'];
  const expected = fx.runs.float32.hf_greedy.slice(0, 10);

  it('--prompt-ids-file reads ids separated by commas, spaces or newlines, from a file or stdin', async () => {
    const file = join(dir, 'prompt.ids');
    writeFileSync(file, `${fx.prompt.slice(0, 3).join(', ')}\n${fx.prompt.slice(3).join(' ')}\n`);
    const fromFile = await qwen3(['generate', ...gqaArgs, '--prompt-ids-file', file]);
    expect(fromFile.stderr).toBe('');
    expect(JSON.parse(fromFile.stdout).ids).toEqual(expected);
    const fromStdin = await qwen3(['generate', ...gqaArgs, '--prompt-ids-file', '-'], { input: fx.prompt.join(',') });
    expect(JSON.parse(fromStdin.stdout).ids).toEqual(expected);
  });

  it('--prompt-file gives what --prompt gives, from a file or stdin, for generate and tokenize', async () => {
    const text = 'Explain large language models.';
    const file = join(dir, 'prompt.txt');
    writeFileSync(file, text);
    const gen = ['generate', ...bigArgs, '--max-new-tokens', '8', '--json'];
    const flag = JSON.parse((await qwen3([...gen, '--prompt', text])).stdout).ids;
    expect(JSON.parse((await qwen3([...gen, '--prompt-file', file])).stdout).ids).toEqual(flag);
    expect(JSON.parse((await qwen3([...gen, '--prompt-file', '-'], { input: text })).stdout).ids).toEqual(flag);
    const tok = JSON.parse((await qwen3(['tokenize', '--prompt-file', '-', '--json'], { input: text })).stdout);
    expect(tok).toEqual({ ids: [840, 20772, 3460, 4128, 4119, 13], text });
  });

  it('takes a prompt far past the 128 KiB a single command-line argument may hold', async () => {
    const text = 'Long inputs cannot be passed on a command line, so they come from files. '.repeat(4000); // ~300 KB
    const file = join(dir, 'long.txt');
    writeFileSync(file, text);
    const r = await qwen3(['tokenize', '--prompt-file', file]);
    expect(r.status).toBe(0);
    const tokenizer = await Qwen3Tokenizer.load();
    expect(r.stdout).toBe(`${(await tokenizer.encode(text)).join(',')}\n`);
    // The ids of that text (over 50,000 of them) go through --prompt-ids-file to the model's own check.
    const ids = join(dir, 'long.ids');
    writeFileSync(ids, r.stdout);
    const gen = await qwen3(['generate', ...bigArgs, '--prompt-ids-file', ids]);
    expect(gen.status).toBe(1);
    expect(gen.stderr).toMatch(/Expected prompt plus maxNewTokens to fit the context_length of 256 but received \d{5} \+ 50/);
  });

  it('a missing, empty or malformed prompt source is named, before any model loads', async () => {
    const empty = join(dir, 'empty.ids');
    writeFileSync(empty, ' \n');
    const bad = join(dir, 'bad.ids');
    writeFileSync(bad, '1, 2, x3');
    const model = ['--model', join(dir, 'no-such-model.pth'), '--config', fx.configPath];
    const cases: [string[], string][] = [
      [['generate', ...model, '--prompt', 'a', '--prompt-file', 'x'], 'qwen3: Give exactly one of --prompt, --prompt-ids, --prompt-file and --prompt-ids-file'],
      [['generate', ...model], 'qwen3: Give exactly one of --prompt, --prompt-ids, --prompt-file and --prompt-ids-file'],
      [['generate', ...model, '--prompt-file', join(dir, 'nope.txt')], `qwen3: Cannot read ${join(dir, 'nope.txt')} for --prompt-file: no such file`],
      [['generate', ...model, '--prompt-ids-file', empty], `qwen3: Expected token ids in ${empty} for --prompt-ids-file but it holds none`],
      [['generate', ...model, '--prompt-ids-file', bad], `qwen3: Expected comma- or space-separated token ids for --prompt-ids-file but received "x3" as id 2 of ${bad}`],
      [['tokenize', '--prompt', 'a', '--prompt-file', 'x'], 'qwen3: Give exactly one of --prompt and --prompt-file'],
      [['tokenize'], 'qwen3: Give exactly one of --prompt and --prompt-file'],
    ];
    for (const [args, message] of cases) {
      const r = await qwen3(args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toBe(`${message}\n`);
    }
  });
});
