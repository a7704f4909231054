// Random weights made on the device (Qwen3Model.load({ config, randomWeights }), the CLI's
// --random-weights): seeded and repeatable, distributed as transformers initialises a model,
// tied heads kept as one table, generating like any model, and bad configs refused by name.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidOptionError, QWEN_CONFIG_32_B, Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import { resolveConfig } from '../lib/model/load.js';
import { native } from '../lib/native.js';
import { FIXTURES_DIR, loadFixture } from './support/fixtures.js';
import { runCli } from './support/run-cli.js';

// The CUDA host recipe runs this file with QWEN3_TEST_DEVICE=cuda.
const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const fx = loadFixture('tiny-gqa4');
const TINY = { ...fx.config, dtype: 'float32' as const };
const IDS = [[3, 141, 59, 265, 358, 97]];

const random = (seed: number, options: Record<string, unknown> = {}) =>
  Qwen3Model.load({ config: TINY, randomWeights: { seed }, device: DEVICE, ...options });

async function logitsOf(model: Qwen3Model): Promise<Float32Array> {
  try {
    return (await model.forward(IDS, { logits: 'all' })).logits!.data;
  } finally {
    model.dispose();
  }
}

const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('random weights', () => {
  it.each(['float32', 'bfloat16'] as const)('one seed gives identical logits, another seed different ones (%s)', async (dtype) => {
    const a = await logitsOf(await random(11, { dtype }));
    const b = await logitsOf(await random(11, { dtype }));
    const c = await logitsOf(await random(12, { dtype }));
    expect(a.length).toBe(IDS[0]!.length * TINY.vocab_size);
    expect(sameBits(a, b)).toBe(true);
    expect(sameBits(a, c)).toBe(false);
    expect(a.every(Number.isFinite)).toBe(true);
  });

  it('matrices are normal(0, 0.02) and norm scales 1: an untied head gives logits of standard deviation 0.02 * sqrt(emb_dim)', async () => {
    // The final RMSNorm (scale 1) leaves each position's hidden state with a mean square of 1,
    // so each logit is a sum of emb_dim products with independent normal(0, 0.02) head weights.
    const logits = await logitsOf(await random(5));
    const mean = logits.reduce((s, x) => s + x, 0) / logits.length;
    const std = Math.sqrt(logits.reduce((s, x) => s + (x - mean) ** 2, 0) / logits.length);
    expect(std / (0.02 * Math.sqrt(TINY.emb_dim))).toBeGreaterThan(0.9);
    expect(std / (0.02 * Math.sqrt(TINY.emb_dim))).toBeLessThan(1.1);
    expect(Math.abs(mean)).toBeLessThan(0.05);
  });

  it('runs a generation, the same tokens for the same seed, compiled or not', async () => {
    const tokens: number[][] = [];
    for (const compile of [false, false, true]) {
      const model = await random(21, { compile });
      try {
        tokens.push(await generateTextBasicCache(model, IDS[0]!, { maxNewTokens: 20, eosTokenId: null }));
      } finally {
        model.dispose();
      }
    }
    expect(tokens[0]).toHaveLength(20);
    expect(tokens[0]!.every((id) => id >= 0 && id < TINY.vocab_size)).toBe(true);
    expect(tokens[1]).toEqual(tokens[0]);
    expect(tokens[2]).toEqual(tokens[0]);
  });

  it('a tied head is the embedding table, counted once; a Hugging Face config.json says whether it is tied', async () => {
    const hfConfig = join(FIXTURES_DIR, 'hf-tied-bf16-sharded', 'config.json');
    expect(JSON.parse(readFileSync(hfConfig, 'utf8')).tie_word_embeddings).toBe(true);
    const tied = await Qwen3Model.load({ config: hfConfig, randomWeights: {}, device: DEVICE, dtype: 'float32' });
    const untied = await Qwen3Model.load({ config: hfConfig, randomWeights: { tieWordEmbeddings: false }, device: DEVICE, dtype: 'float32' });
    try {
      expect(tied.tieWordEmbeddings).toBe(true);
      expect(untied.tieWordEmbeddings).toBe(false);
      expect(tied.path).toBe('random weights (seed 0)');
      expect(untied.parameterBytes - tied.parameterBytes).toBe(tied.config.vocab_size * tied.config.emb_dim * 4);
    } finally {
      tied.dispose();
      untied.dispose();
    }
  });

  it('a built-in size ties as its official release does; a config object only when asked', async () => {
    expect((await resolveConfig('0.6B', undefined)).tied).toBe(true);
    expect((await resolveConfig('4B', undefined)).tied).toBe(true);
    expect((await resolveConfig('8B', undefined)).tied).toBe(false);
    expect((await resolveConfig(TINY, undefined)).tied).toBe(false);
    const model = await Qwen3Model.load({ config: TINY, randomWeights: { tieWordEmbeddings: true }, device: DEVICE });
    try {
      expect(model.tieWordEmbeddings).toBe(true);
    } finally {
      model.dispose();
    }
  });
});

describe('random weights: bad input', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'qwen3-random-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a bad config is refused by name before anything is made', async () => {
    const { n_layers: _n, ...partial } = TINY;
    await expect(Qwen3Model.load({ config: partial as never, randomWeights: {} })).rejects.toThrow(
      'Expected integer between 1 and 1024 for config.n_layers but received undefined');
    await expect(Qwen3Model.load({ config: { ...TINY, n_kv_groups: 3 }, randomWeights: {} })).rejects.toThrow(/n_heads to be a multiple of n_kv_groups/);
    await expect(Qwen3Model.load({ config: '3B', randomWeights: {} })).rejects.toThrow(/Expected one of 0\.6B, 1\.7B, 4B, 8B, 14B, 32B or a \.json file for config but received "3B"/);
    await expect(Qwen3Model.load({ config: join(dir, 'missing.json'), randomWeights: {} })).rejects.toThrow(/Cannot read config file .*missing\.json/);
    const moe = join(dir, 'moe.json');
    const hf = JSON.parse(readFileSync(join(FIXTURES_DIR, 'hf-untied-f32', 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(moe, JSON.stringify({ ...hf, architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe' }));
    await expect(Qwen3Model.load({ config: moe, randomWeights: {} })).rejects.toThrow(/moe\.json: model_type "qwen3_moe" .* runs Qwen3ForCausalLM only/);
    const notJson = join(dir, 'bad.json');
    writeFileSync(notJson, '{ nope');
    await expect(Qwen3Model.load({ config: notJson, randomWeights: {} })).rejects.toThrow(/bad\.json is not valid JSON/);
  });

  it('bad options are refused by name', async () => {
    const cases: [unknown, RegExp][] = [
      [{ config: TINY, randomWeights: { seed: -1 } }, /^Expected integer between 0 and 9007199254740991 for randomWeights\.seed but received -1$/],
      [{ config: TINY, randomWeights: { seed: 1.5 } }, /for randomWeights\.seed but received 1\.5$/],
      [{ config: TINY, randomWeights: { bogus: 1 } }, /^Unknown option randomWeights\.bogus$/],
      [{ config: TINY, randomWeights: 7 }, /^Expected object for randomWeights but received 7$/],
      [{ config: TINY }, /options with randomWeights/],
      [{ config: TINY, randomWeights: {}, revision: 'main' }, /revision goes with a Hub repo id/],
    ];
    for (const [options, message] of cases) {
      const err = await Qwen3Model.load(options as never).catch((e: unknown) => e);
      expect(err, JSON.stringify(options)).toBeInstanceOf(InvalidOptionError);
      expect((err as Error).message).toMatch(message);
    }
    await expect(Qwen3Model.load(fx.modelPath, { config: TINY, randomWeights: {} })).rejects.toThrow(/Random weights read no file: leave the path out/);
    await expect((Qwen3Model.load as (...a: unknown[]) => Promise<unknown>)({ randomWeights: {} }, {})).rejects.toThrow(/not two objects/);
  });

  it('the memory check still applies: weights that cannot fit are refused with the numbers', async () => {
    const huge = { ...QWEN_CONFIG_32_B, n_layers: 1024 }; // about 1 TB in bfloat16
    await expect(Qwen3Model.load({ config: huge, randomWeights: {}, device: 'cpu' })).rejects.toThrow(
      /^This model in bfloat16 needs [\d.]+ GB \(weights [\d.]+ GB, KV cache for 4096 tokens [\d.]+ GB\); cpu has [\d.]+ GB free$/);
  });

  it('the binding checks the request itself', async () => {
    const { dtype: _d, ...config } = TINY;
    const request = { path: 'random', config, device: 'cpu', dtype: 'float32', compile: false };
    expect(() => native().loadModel({ ...request, randomWeights: { seed: -1 } })).toThrow(
      'Expected integer between 0 and 9007199254740991 for randomWeights.seed but received -1');
    expect(() => native().loadModel({ ...request, randomWeights: 3 as never })).toThrow('Expected object for randomWeights but received 3');
    expect(() => native().loadModel({ ...request, randomWeights: { seed: 1 }, safetensors: { files: ['x'], tensors: [] } })).toThrow(
      'Expected either safetensors or randomWeights in a load request, not both');
    const model = await native().loadModel({ ...request, randomWeights: { seed: 1 } });
    expect(model.info().parameterBytes).toBeGreaterThan(0);
    model.dispose();
  });
});

describe('qwen3 generate --random-weights', () => {
  const generate = async (...flags: string[]) => {
    const r = await runCli(['generate', '--config', fx.configPath, '--dtype', 'float32', '--device', DEVICE, '--prompt-ids', IDS[0]!.join(','),
      '--max-new-tokens', '12', '--ignore-eos', '--json', ...flags]);
    return r;
  };

  it('generates what the API generates for the same seed, and another seed changes it', async () => {
    const model = await random(9);
    let want: number[];
    try {
      want = await generateTextBasicCache(model, IDS[0]!, { maxNewTokens: 12, eosTokenId: null });
    } finally {
      model.dispose();
    }
    const same = await generate('--random-weights', '9');
    expect(same.status, same.stderr).toBe(0);
    expect((JSON.parse(same.stdout) as { ids: number[] }).ids).toEqual(want);
    const other = await generate('--random-weights', '10');
    expect(other.status, other.stderr).toBe(0);
    expect((JSON.parse(other.stdout) as { ids: number[] }).ids).not.toEqual(want);
  });

  it('refuses a model path or a bad seed alongside it', async () => {
    const withModel = await generate('--random-weights', '--model', fx.modelPath);
    expect(withModel.status).toBe(1);
    expect(withModel.stderr).toContain('--random-weights makes the weights on the device: leave out --model');
    const badSeed = await generate('--random-weights', 'x');
    expect(badSeed.status).toBe(1);
    expect(badSeed.stderr).toContain('Expected integer for --random-weights but received "x"');
  });
});
