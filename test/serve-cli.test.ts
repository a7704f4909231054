// `qwen3 serve` as a real child process: its flags are checked before the model loads, it prints
// the URL it listens on (a free port with --port 0) on one line, requires the API key it was
// given, and on SIGTERM stops taking requests, lets the stream in flight finish, and exits 0.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { loadFixture } from './support/fixtures.js';
import { freePorts } from './support/ports.js';
import { CLI, runCli } from './support/run-cli.js';
import { TOKENIZER_DIR, client } from './support/serve.js';

const big = loadFixture('tiny-bigvocab');
const modelArgs = ['--model', big.modelPath, '--config', big.configPath, '--tokenizer', TOKENIZER_DIR, '--device', 'cpu', '--dtype', 'float32'];

describe('qwen3 serve flags', () => {
  it.each([
    [[], 'qwen3: Expected --model (a .pth, a Hugging Face folder or a Hub repo id) or --random-weights'],
    [['--port', '70000'], 'qwen3: Expected integer between 0 and 65535 for --port but received 70000'],
    [['--port', 'eighty'], 'Expected integer for --port but received "eighty"'],
    [['--max-queue', '-1'], 'qwen3: Expected integer between 0 and 2147483647 for --max-queue but received -1'],
    [['--max-batch', '0'], 'qwen3: Expected integer between 1 and 1024 for --max-batch but received 0'],
    [['--prefix-cache', '5000'], 'qwen3: Expected integer between 0 and 4096 for --prefix-cache but received 5000'],
    [['--api-key', ''], 'qwen3: Expected non-empty string for --api-key but received ""'],
  ])('%j fails with exit 1 and says why', async (flags, message) => {
    const r = await runCli(['serve', ...(flags.length > 0 ? [...modelArgs, ...flags] : [])]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(message);
    expect(r.stdout).toBe('');
  });
});

/** Starts `qwen3 serve` and resolves with its URL once it listens. */
async function serve(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcessWithoutNullStreams; url: string; stderr: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', ...args], { env: { ...process.env, QWEN3_API_KEY: '', ...env } });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      const match = /^Listening on (http:\/\/127\.0\.0\.1:\d+)\n/m.exec(stdout);
      if (match) resolve(match[1]!);
    });
    child.on('exit', (code) => reject(new Error(`qwen3 serve exited with ${code} before listening: ${stderr}`)));
  });
  return { child, url, stderr: () => stderr };
}

describe('qwen3 serve', () => {
  it('serves on a free port with an API key, and drains and exits 0 on SIGTERM', async () => {
    const { child, url, stderr } = await serve([...modelArgs, '--port', '0', '--api-key', 'sekret', '--served-model-name', 'tiny']);
    const exited = once(child, 'exit');
    try {
      const denied = await client(url, 'wrong').models.list().catch((e: unknown) => e);
      expect(denied).toBeInstanceOf(OpenAI.AuthenticationError);
      const api = client(url, 'sekret');
      expect((await api.models.list()).data.map((m) => m.id)).toEqual(['tiny']);
      const reply = await api.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, temperature: 0 });
      expect(reply.choices[0]!.finish_reason).toMatch(/^(stop|length)$/);

      const stream = await api.completions.create({ model: 'tiny', prompt: [1, 2, 3], max_tokens: 60, temperature: 0, stream: true });
      let finish: string | null = null;
      let chunks = 0;
      for await (const chunk of stream) {
        if (chunks++ === 0) child.kill('SIGTERM');
        finish = chunk.choices[0]!.finish_reason ?? finish;
      }
      // Finished in full whether the signal came mid-stream or (on a fast machine) after its last token.
      expect(finish).toMatch(/^(stop|length)$/);
      expect(await exited).toEqual([0, null]);
      expect(stderr()).toContain('SIGTERM: finishing the requests in flight');
      expect(stderr()).toContain('Stopped');
    } finally {
      child.kill('SIGKILL');
    }
  });
});

describe('qwen3 serve --distributed (one rank per process, as torchrun starts them)', () => {
  const completion = (url: string) => client(url).completions.create({ model: 'tiny', prompt: [1, 2, 3], max_tokens: 12, temperature: 0 });

  it('rank 0 serves what one process serves while rank 1 follows its calls; both exit 0 after SIGTERM to rank 0', async () => {
    const alone = await serve([...modelArgs, '--port', '0', '--served-model-name', 'tiny']);
    let want: string;
    try {
      want = (await completion(alone.url)).choices[0]!.text;
    } finally {
      alone.child.kill('SIGTERM');
      await once(alone.child, 'exit');
    }
    const [MASTER_PORT, QWEN3_FORWARD_PORT] = (await freePorts(2)).map(String);
    const env = (rank: number) => ({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT, QWEN3_FORWARD_PORT });
    const args = [...modelArgs, '--port', '0', '--served-model-name', 'tiny', '--distributed'];
    const follower = spawn(process.execPath, [CLI, 'serve', ...args], { env: { ...process.env, QWEN3_API_KEY: '', ...env(1) } });
    let followerOut = '';
    let followerErr = '';
    follower.stdout.on('data', (d: Buffer) => (followerOut += d));
    follower.stderr.on('data', (d: Buffer) => (followerErr += d));
    const followerExit = once(follower, 'exit');
    const lead = await serve(args, env(0));
    const leadExit = once(lead.child, 'exit');
    try {
      expect((await completion(lead.url)).choices[0]!.text).toBe(want);
      // Sampling with no seed: rank 0's draws go to rank 1 with each call.
      const sampled = await client(lead.url).chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0.8 });
      expect(sampled.choices[0]!.finish_reason).toMatch(/^(stop|length)$/);
      expect((await completion(lead.url)).choices[0]!.text).toBe(want);
      lead.child.kill('SIGTERM');
      expect(await leadExit).toEqual([0, null]);
      expect(await followerExit, followerErr).toEqual([0, null]);
      expect(followerOut).toBe('');
    } finally {
      lead.child.kill('SIGKILL');
      follower.kill('SIGKILL');
    }
  });

  it('when rank 1 goes away, /health says so and requests fail naming it, while rank 0 keeps answering and stops cleanly', async () => {
    const [MASTER_PORT, QWEN3_FORWARD_PORT] = (await freePorts(2)).map(String);
    const env = (rank: number) => ({ RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT, QWEN3_FORWARD_PORT });
    const args = [...modelArgs, '--port', '0', '--served-model-name', 'tiny', '--distributed'];
    const follower = spawn(process.execPath, [CLI, 'serve', ...args], { env: { ...process.env, QWEN3_API_KEY: '', ...env(1) } });
    const followerExit = once(follower, 'exit');
    const lead = await serve(args, env(0));
    const leadExit = once(lead.child, 'exit');
    try {
      expect((await completion(lead.url)).choices[0]!.finish_reason).toBe('length');
      follower.kill('SIGKILL');
      await followerExit;
      // Wait for rank 0 to see the connection close (polling for the event, however long it takes).
      let health: { status: string; error?: string };
      while ((health = (await (await fetch(`${lead.url}/health`)).json()) as typeof health).status === 'ok') await new Promise((r) => setTimeout(r, 50));
      expect(health).toEqual({ status: 'failed', error: "Rank 1 stopped following rank 0's calls (its connection closed)" });
      const failed = await completion(lead.url).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(OpenAI.InternalServerError);
      expect((failed as Error).message).toContain("Rank 1 stopped following rank 0's calls");
      lead.child.kill('SIGTERM');
      expect(await leadExit).toEqual([0, null]);
    } finally {
      lead.child.kill('SIGKILL');
      follower.kill('SIGKILL');
    }
  });
});
