// Bad input gives a clear error, the process goes on, and the next call works.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import { InvalidOptionError, Qwen3Model, generateTextBasicCache, resolveDevice } from '../lib/index.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4');
const load = (path: string) => Qwen3Model.load(path, { config: fx.configPath, device: 'cpu', dtype: 'float32' });
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'qwen3-bad-'));
  execFileSync(projectPython(), [join(__dirname, '..', 'scripts', 'python', 'make_bad_checkpoints.py'), fx.modelPath, dir]);
  writeFileSync(join(dir, 'not-a-zip.pth'), 'this is not a checkpoint\n'.repeat(10));
  const bytes = readFileSync(fx.modelPath);
  writeFileSync(join(dir, 'truncated.pth'), bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  writeFileSync(join(dir, 'truncated-tail.pth'), bytes.subarray(0, bytes.length - 100));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function expectGoodLoadStillWorks(): Promise<void> {
  const model = await load(fx.modelPath);
  expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 3, eosTokenId: null })).toEqual(fx.runs.float32.hf_greedy.slice(0, 3));
  model.dispose();
}

describe('checkpoints', () => {
  const cases: [string, RegExp][] = [
    ['missing.pth', /Model file not found: .*missing\.pth/],
    ['not-a-zip.pth', /not a PyTorch checkpoint/],
    ['truncated.pth', /truncated|not a PyTorch checkpoint/],
    ['truncated-tail.pth', /truncated|not a PyTorch checkpoint/],
    ['wrong-shape.pth', /'trf_blocks\.1\.att\.W_key\.weight' has shape \[63, 128\] but the config needs \[64, 128\]/],
    ['missing-key.pth', /missing tensor 'trf_blocks\.0\.ff\.fc2\.weight'/],
    ['extra-key.pth', /unexpected tensor 'trf_blocks\.0\.att\.bias'/],
    ['double.pth', /DoubleStorage|float64|double/i],
  ];
  for (const [file, message] of cases) {
    it(`${file} is rejected with a clear error`, async () => {
      await expect(load(join(dir, file))).rejects.toThrow(message);
      await expectGoodLoadStillWorks();
    });
  }

  it('a config that does not fit the checkpoint names the first mismatching tensor', async () => {
    const cfg = { ...fx.config, emb_dim: 96 };
    await expect(Qwen3Model.load(fx.modelPath, { config: cfg, device: 'cpu' })).rejects.toThrow(/tok_emb\.weight' has shape \[512, 128\] but the config needs \[512, 96\]/);
  });

  it('a config file that is not JSON or misses keys is rejected', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{ not json');
    await expect(Qwen3Model.load(fx.modelPath, { config: bad })).rejects.toThrow(/bad\.json is not valid JSON/);
    const { n_layers: _n, ...partial } = fx.config;
    await expect(Qwen3Model.load(fx.modelPath, { config: partial as never })).rejects.toThrow(
      'Expected integer between 1 and 1024 for config.n_layers but received undefined',
    );
    await expect(Qwen3Model.load(fx.modelPath, { config: { ...fx.config, n_kv_groups: 3 } })).rejects.toThrow(/multiple of n_kv_groups/);
  });

  it('the error carries the stack of the call that started the load', async () => {
    const err = await load(join(dir, 'wrong-shape.pth')).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).stack).toMatch(/errors\.test\.ts/);
  });
});

describe('inputs', () => {
  let model: Qwen3Model;
  beforeAll(async () => {
    model = await load(fx.modelPath);
  });
  afterAll(() => model.dispose());

  it('rejects token ids outside the vocabulary', async () => {
    await expect(model.forward([1, 512])).rejects.toThrow('Expected integer between 0 and 511 for token id at position 1 but received 512');
    await expect(model.forward([-1])).rejects.toThrow(/but received -1/);
    await expect(model.forward([1.5])).rejects.toThrow(/but received 1\.5/);
    await expect(generateTextBasicCache(model, [3, 99999])).rejects.toThrow(/but received 99999/);
  });

  it('rejects an empty prompt', async () => {
    await expect(model.forward([])).rejects.toThrow('Expected at least one token for ids but received an empty prompt');
    await expect(generateTextBasicCache(model, [])).rejects.toThrow(/empty prompt/);
  });

  it('rejects prompt plus new tokens past context_length', async () => {
    await expect(generateTextBasicCache(model, fx.prompt, { maxNewTokens: 90 })).rejects.toThrow(
      'Expected prompt plus maxNewTokens to fit the context_length of 96 but received 7 + 90',
    );
    await expect(model.forward(new Array(97).fill(1))).rejects.toThrow(/at most 96 tokens/);
  });

  it('rejects bad generation options by name', async () => {
    await expect(generateTextBasicCache(model, fx.prompt, { maxNewTokens: 0 })).rejects.toThrow(
      'Expected integer between 1 and 96 for maxNewTokens but received 0',
    );
    await expect(generateTextBasicCache(model, fx.prompt, { maxNewTokens: Number.NaN })).rejects.toThrow(/for maxNewTokens but received NaN/);
    await expect(generateTextBasicCache(model, fx.prompt, { bogus: 1 } as never)).rejects.toThrow('Unknown option bogus');
  });

  it('the model still works after all of that', async () => {
    expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 5, eosTokenId: null })).toEqual(fx.runs.float32.hf_greedy.slice(0, 5));
  });
});

describe('devices', () => {
  it('rejects unknown devices and devices this libtorch lacks', async () => {
    expect(() => resolveDevice('tpu')).toThrow(InvalidOptionError);
    expect(() => resolveDevice('tpu')).toThrow(/Expected one of "auto", "cpu", "cuda", "cuda:N", "mps", "xpu" for device but received "tpu"/);
    await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'gpu' })).rejects.toThrow(/for device but received "gpu"/);
    if (!resolveDevice('auto').startsWith('cuda')) {
      await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cuda' })).rejects.toThrow(/Device "cuda" is not available/);
    }
    if (resolveDevice('auto') !== 'mps') {
      await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'mps' })).rejects.toThrow(/Device "mps" is not available/);
    }
    await expectGoodLoadStillWorks();
  });

  it('a disposed model refuses further use', async () => {
    const model = await load(fx.modelPath);
    model.dispose();
    expect(model.disposed).toBe(true);
    expect(() => model.cacheLength).toThrow('Model is disposed');
    await expect(model.forward([1])).rejects.toThrow('Model is disposed');
  });
});

