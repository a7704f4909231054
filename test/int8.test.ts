// Int8 weights (native/cpu/int8_weights.h): the model with every block matrix and the head
// quantized per row, and each product's input per block of 64, must be the same quantization
// done in PyTorch (scripts/python/quantized_reference.py): logits within the bfloat16 parity tolerance
// of it for a whole sequence (the float32 path) and for each decode step (the VNNI kernel), in
// float32 the same 40 greedy tokens, and batched steps as one-row ones. Not closer: rounding the
// inputs to int8 is a step function, so where the two passes' inputs differ in the last bit (the
// fused RMSNorm against PyTorch's) a value can land on the other side of a rounding boundary.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import { native } from '../lib/native.js';
import { loadFixture } from './support/fixtures.js';
import {
  PROMPT, type Reference, STEPS, expectBatchedAsAlone, expectReferenceLogits, packedParameterBytes, quantizedReference, referenceSequence,
} from './support/quantized.js';
import { runCli } from './support/run-cli.js';

const fx = loadFixture('tiny-gqa4');

describe.each([
  { dtype: 'float32' as const, tol: 3e-2 },
  { dtype: 'bfloat16' as const, tol: 5e-2 },
])('int8 weights, $dtype, against the same quantization in PyTorch', ({ dtype, tol }) => {
  let model: Qwen3Model;
  let ref: Reference;
  let sequence: number[];
  beforeAll(async () => {
    model = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, dtype, quantize: 'int8' });
    ({ sequence, ref } = referenceSequence(fx, 'int8', dtype));
  }, 120_000);
  afterAll(() => model?.dispose());

  it('logits of a whole sequence (the widened path) and of each decode step (the int8 kernel)', async () => {
    await expectReferenceLogits(model, sequence, ref, tol);
  });

  it('holds each matrix as int8 rows with a float32 scale, the embedding table as it was', () => {
    expect(model.parameterBytes).toBe(packedParameterBytes(fx, dtype, (n, k) => n * (k + 4)));
    expect(model.quantize).toBe('int8');
  });
});

describe('int8 weights, float32: generation', () => {
  let model: Qwen3Model;
  let greedy: number[];
  beforeAll(async () => {
    model = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, dtype: 'float32', quantize: 'int8' });
    greedy = quantizedReference(fx, 'int8', 'float32').greedy;
  }, 120_000);
  afterAll(() => model?.dispose());

  it('greedy tokens equal PyTorch for 40 steps, and batched sequences their own generations', async () => {
    expect(await generateTextBasicCache(model, PROMPT, { maxNewTokens: STEPS, eosTokenId: null })).toEqual(greedy);
    await expectBatchedAsAlone(model);
  });
});

describe('int8 options', () => {
  it('refuses devices, dtypes and kinds it does not run, by name', async () => {
    const load = (extra: Record<string, unknown>) =>
      native().loadModel({ path: fx.modelPath, config: fx.config as never, device: 'cpu', dtype: 'float32', compile: false, ...extra } as never);
    await expect(load({ device: 'cuda', quantize: 'int8' })).rejects.toThrow('int8 weights run on the CPU, not on cuda (use FP8 weights on CUDA)');
    await expect(load({ dtype: 'float16', quantize: 'int8' })).rejects.toThrow('int8 weights compute in float32 or bfloat16, not float16');
    expect(() => load({ quantize: 'int4' })).toThrow(/Expected "int8", "fp8" or null for quantize but received "int4"/);
    await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, quantize: 'fp4' as never })).rejects.toThrow(/quantize/);
  });

  it('qwen3 generate --quantize int8 generates what the API generates', async () => {
    const r = await runCli(['generate', '--random-weights', '3', '--config', fx.configPath, '--dtype', 'float32', '--quantize', 'int8',
      '--prompt-ids', PROMPT.join(','), '--max-new-tokens', '12', '--ignore-eos', '--json']);
    expect(r.stderr).toBe('');
    const model = await Qwen3Model.load({ config: fx.configPath, randomWeights: { seed: 3 }, dtype: 'float32', quantize: 'int8' });
    try {
      expect((JSON.parse(r.stdout) as { ids: number[] }).ids).toEqual(await generateTextBasicCache(model, PROMPT, { maxNewTokens: 12, eosTokenId: null }));
    } finally {
      model.dispose();
    }
  });
});
