// `qwen3 chat` when the conversation outgrows the model's context: the oldest turns make room,
// the user is told, and the chat goes on (tiny-bigvocab: the real tokenizer's vocabulary, a
// 256-token context).
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Qwen3Tokenizer } from '../lib/index.js';
import { loadFixture } from './support/fixtures.js';

const CLI = join(__dirname, '..', 'dist', 'cli.js');
const big = loadFixture('tiny-bigvocab');
const bigArgs = ['--model', big.modelPath, '--config', big.configPath, '--device', 'cpu', '--dtype', 'float32'];

function chat(maxNewTokens: number, input: string) {
  const r = spawnSync(process.execPath, [CLI, 'chat', ...bigArgs, '--max-new-tokens', String(maxNewTokens)], { input, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('qwen3 chat past the context', () => {
  it('drops the oldest turns to fit, says so, and goes on to the last message', async () => {
    const tokenizer = await Qwen3Tokenizer.load();
    // Four messages of about 70 tokens each, answers of up to 100: by the fourth message the
    // history alone is past the 256-token context.
    const messages = ['alpha', 'bravo', 'charlie', 'delta'].map((w) => `Tell me about ${w}: ${`${w} `.repeat(60).trim()}`);
    for (const m of messages) expect((await tokenizer.encode(m)).length).toBeGreaterThan(60);
    const r = chat(100, `${messages.join('\n')}\n`);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^(\[dropped the oldest (turn|\d+ turns) of the conversation to fit the context of 256 tokens\]\n)+$/);
    expect(r.stdout.length).toBeGreaterThan(0);
  });

  it('a single message longer than the context is refused and the chat goes on', () => {
    const r = chat(5, `${'word '.repeat(400)}\nhello\n`);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^\[that message takes \d+ tokens with the chat template, more than the context of 256 holds with room for an answer; not sent\]\n$/);
    expect(r.stdout.length).toBeGreaterThan(1); // the answer to "hello"
  });
});
