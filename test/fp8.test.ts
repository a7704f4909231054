// FP8 weights (model/fp8_weights.h): every block matrix and the head quantized per row to E4M3
// at load, the activations left as they are, must be the same quantization done in PyTorch
// (scripts/python/quantized_reference.py): logits of a whole sequence (the widening path) and of
// each decode step (on CUDA the FP8 GEMV and head kernels) within float32's and bfloat16's parity
// tolerances, in float32 the same 40 greedy tokens, batched and compiled generations as one-row
// eager ones. The CUDA host recipe runs this file with QWEN3_TEST_DEVICE=cuda.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchScheduler, Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import type { SequenceStream } from '../lib/batch/scheduler.js';
import { native } from '../lib/native.js';
import { loadFixture, relativeMaxError, rows } from './support/fixtures.js';
import { runCli } from './support/run-cli.js';

const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const fx = loadFixture('tiny-gqa4');
const VOCAB = fx.config.vocab_size;
const PROMPT = [1, 17, 42, 99, 256, 300, 511];
const STEPS = 40;
const python = execFileSync(process.execPath, [join(__dirname, '..', 'scripts', 'dev', 'python.js'), '--which'], { encoding: 'utf8' }).trim();

interface Reference {
  greedy: number[];
  logits: number[];
  shape: [number, number];
}

function reference(dtype: 'float32' | 'bfloat16', sequence?: number[]): Reference {
  const args = [join(__dirname, '..', 'scripts', 'python', 'quantized_reference.py'), '--quantize', 'fp8', '--model', fx.modelPath,
    '--config', fx.configPath, '--dtype', dtype, '--prompt', PROMPT.join(','), '--steps', String(STEPS),
    ...(sequence ? ['--sequence', sequence.join(',')] : [])];
  return JSON.parse(execFileSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 26 })) as Reference;
}

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
    const greedy = reference(dtype).greedy;
    sequence = [...PROMPT, ...greedy];
    ref = { ...reference(dtype, sequence), greedy };
  }, 120_000);
  afterAll(() => model?.dispose());

  it('logits of a whole sequence and of each decode step', async () => {
    const whole = await model.forward(sequence);
    expect(whole.logits!.shape).toEqual([1, sequence.length, VOCAB]);
    expect(relativeMaxError(whole.logits!.data, Float32Array.from(ref.logits))).toBeLessThan(tol);
    // Teacher-forced decode steps after the prompt: one row each (on CUDA, the FP8 GEMVs).
    await model.resetCache();
    await model.prefill(PROMPT);
    const want = Float32Array.from(ref.logits);
    for (let i = PROMPT.length; i < sequence.length - 1; i++) {
      const step = await model.decode([sequence[i]!], { logits: 'last' });
      expect(relativeMaxError(step.logits!.data, rows(want, VOCAB, i, i + 1))).toBeLessThan(tol);
    }
    await model.resetCache();
  });

  it('holds each matrix as FP8 rows with a float32 scale, the embedding table as it was', () => {
    const c = fx.config;
    const size = dtype === 'float32' ? 4 : 2;
    const fp8 = (n: number, k: number) => n * (k + 16);
    const block = fp8((c.n_heads + 2 * c.n_kv_groups) * c.head_dim, c.emb_dim) + fp8(c.emb_dim, c.n_heads * c.head_dim)
      + fp8(2 * c.hidden_dim, c.emb_dim) + fp8(c.emb_dim, c.hidden_dim);
    const norms = (c.emb_dim * (2 * c.n_layers + 1) + 2 * c.head_dim * c.n_layers) * 4;
    expect(model.parameterBytes).toBe(c.vocab_size * c.emb_dim * size + c.n_layers * block + fp8(c.vocab_size, c.emb_dim) + norms);
    expect(model.quantize).toBe('fp8');
  });
});

describe('FP8 weights, float32: generation', () => {
  let eager: Qwen3Model;
  let compiled: Qwen3Model;
  let greedy: number[];
  beforeAll(async () => {
    eager = await load('float32');
    compiled = await load('float32', true);
    greedy = reference('float32').greedy;
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
    const prompts = [PROMPT, [5, 6, 7], [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410], [9]];
    const alone = [];
    for (const p of prompts) alone.push(await generateTextBasicCache(eager, p, { maxNewTokens: 10, eosTokenId: null }));
    for (const model of [eager, compiled]) {
      const scheduler = new BatchScheduler(model, { maxBatch: 4 });
      const ids = async (s: SequenceStream) => {
        const out: number[] = [];
        for await (const t of s) out.push(t.id);
        return out;
      };
      expect(await Promise.all(prompts.map((p) => ids(scheduler.submit({ promptIds: p, maxTokens: 10 }))))).toEqual(alone);
      await scheduler.close();
    }
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
