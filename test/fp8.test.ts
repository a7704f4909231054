// FP8 weights (model/fp8_weights.h): every block matrix and the head quantized per row to E4M3
// at load, the activations left as they are, must be the same quantization done in PyTorch
// (scripts/python/quantized_reference.py): logits of a whole sequence (the widening path; on CUDA
// in bfloat16 the batch product kernel, for prompts of up to 64 tokens) and of each decode step
// (on CUDA the FP8 GEMV and head kernels) within float32's and bfloat16's parity
// tolerances, in float32 the same 40 greedy tokens, batched and compiled generations as one-row
// eager ones. The CUDA host recipe runs this file with QWEN3_TEST_DEVICE=cuda.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import { native } from '../lib/native.js';
import { loadFixture, relativeMaxError } from './support/fixtures.js';
import {
  PROMPT, type Reference, STEPS, expectBatchedAsAlone, expectReferenceLogits, packedParameterBytes, quantizedReference, referenceSequence,
} from './support/quantized.js';
import { runCli } from './support/run-cli.js';

const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const fx = loadFixture('tiny-gqa4');

const load = (dtype: 'float32' | 'bfloat16', compile = false) =>
  Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype, compile, quantize: 'fp8' });

describe.each([
  { dtype: 'float32' as const, tol: 1e-4 },
  { dtype: 'bfloat16' as const, tol: 3e-2 },
])('FP8 weights, $dtype, against the same quantization in PyTorch', ({ dtype, tol }) => {
  let model: Qwen3Model;
  let ref: Reference;
  let sequence: number[];
  beforeAll(async () => {
    model = await load(dtype);
    ({ sequence, ref } = referenceSequence(fx, 'fp8', dtype));
  }, 120_000);
  afterAll(() => model?.dispose());

  it('logits of a whole sequence and of each decode step (on CUDA, the FP8 GEMVs)', async () => {
    await expectReferenceLogits(model, sequence, ref, tol);
  });

  it('holds each matrix as FP8 rows with a float32 scale, the embedding table as it was', () => {
    expect(model.parameterBytes).toBe(packedParameterBytes(fx, dtype, (n, k) => n * (k + 16)));
    expect(model.quantize).toBe('fp8');
  });
});

describe('FP8 weights over a vocabulary of 151,936 rows (quantized and multiplied a slice of 16,384 rows at a time)', () => {
  it('float32 logits of a prompt and the greedy tokens equal PyTorch', async () => {
    const big = loadFixture('tiny-bigvocab');
    const ref = quantizedReference(big, 'fp8', 'float32');
    const model = await Qwen3Model.load(big.modelPath, { config: big.configPath, device: DEVICE, dtype: 'float32', quantize: 'fp8' });
    try {
      const out = await model.forward(PROMPT);
      expect(relativeMaxError(out.logits!.data, Float32Array.from(ref.logits))).toBeLessThan(1e-4);
      expect(await generateTextBasicCache(model, PROMPT, { maxNewTokens: 10, eosTokenId: null })).toEqual(ref.greedy.slice(0, 10));
    } finally {
      model.dispose();
    }
  }, 120_000);
});

describe('FP8 weights, float32: generation', () => {
  let eager: Qwen3Model;
  let compiled: Qwen3Model;
  let greedy: number[];
  beforeAll(async () => {
    eager = await load('float32');
    compiled = await load('float32', true);
    greedy = quantizedReference(fx, 'fp8', 'float32').greedy;
  }, 120_000);
  afterAll(() => {
    eager?.dispose();
    compiled?.dispose();
  });

  it('greedy tokens equal PyTorch for 40 steps, eager and compiled', async () => {
    const opts = { maxNewTokens: STEPS, eosTokenId: null };
    expect(await generateTextBasicCache(eager, PROMPT, opts)).toEqual(greedy);
    expect(await generateTextBasicCache(compiled, PROMPT, opts)).toEqual(greedy);
  });

  it('batched sequences (the widening path on every device) are their own generations', async () => {
    await expectBatchedAsAlone(eager);
    await expectBatchedAsAlone(compiled, eager);
  });
});

describe('FP8 options', () => {
  it('refuses devices it does not run on, and widths it cannot pack, by name', async () => {
    const loadNative = (extra: Record<string, unknown>) =>
      native().loadModel({ path: fx.modelPath, config: fx.config as never, device: 'cpu', dtype: 'float32', compile: false, ...extra } as never);
    await expect(loadNative({ device: 'mps', quantize: 'fp8' })).rejects.toThrow(
      'FP8 weights run on CUDA (and on the CPU, without a kernel of their own), not on mps');
    // A head width that is not a multiple of 16 cannot be packed in 16-byte rows.
    const odd = { ...fx.config, emb_dim: 72, n_heads: 4, n_kv_groups: 2, head_dim: 18 };
    await expect(Qwen3Model.load({ config: odd, randomWeights: { seed: 1 }, dtype: 'float32', quantize: 'fp8' })).rejects.toThrow(
      "FP8 weights need every product's input width to be a multiple of 16, but one is 72");
  });

  it('qwen3 generate --quantize fp8 generates what the API generates', async () => {
    const r = await runCli(['generate', '--random-weights', '3', '--config', fx.configPath, '--dtype', 'float32', '--quantize', 'fp8',
      '--device', DEVICE, '--prompt-ids', PROMPT.join(','), '--max-new-tokens', '12', '--ignore-eos', '--json']);
    expect(r.stderr).toBe('');
    const model = await Qwen3Model.load({ config: fx.configPath, randomWeights: { seed: 3 }, device: DEVICE, dtype: 'float32', quantize: 'fp8' });
    try {
      expect((JSON.parse(r.stdout) as { ids: number[] }).ids).toEqual(await generateTextBasicCache(model, PROMPT, { maxNewTokens: 12, eosTokenId: null }));
    } finally {
      model.dispose();
    }
  });
});
