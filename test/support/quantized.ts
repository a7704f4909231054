// What the int8 and FP8 test files share: the same quantization done in PyTorch
// (scripts/python/quantized_reference.py) for the tiny-gqa4 fixture, the logits a quantized model
// must match against it, and the packed size its parameters must have.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'vitest';
import { BatchScheduler, type Quantize, type Qwen3Model, generateTextBasicCache } from '../../lib/index.js';
import type { SequenceStream } from '../../lib/batch/scheduler.js';
import { type Fixture, relativeMaxError, rows } from './fixtures.js';

export const PROMPT = [1, 17, 42, 99, 256, 300, 511];
export const STEPS = 40;
const python = execFileSync(process.execPath, [join(__dirname, '..', '..', 'scripts', 'dev', 'python.js'), '--which'], { encoding: 'utf8' }).trim();

export interface Reference {
  greedy: number[];
  logits: number[];
  shape: [number, number];
}

/** The reference's greedy tokens after PROMPT, and its logits at every position of `sequence` (default: PROMPT). */
export function quantizedReference(fx: Fixture, kind: Quantize, dtype: 'float32' | 'bfloat16', sequence?: number[]): Reference {
  const args = [join(__dirname, '..', '..', 'scripts', 'python', 'quantized_reference.py'), '--quantize', kind, '--model', fx.modelPath,
    '--config', fx.configPath, '--dtype', dtype, '--prompt', PROMPT.join(','), '--steps', String(STEPS),
    ...(sequence ? ['--sequence', sequence.join(',')] : [])];
  return JSON.parse(execFileSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 26 })) as Reference;
}

/** The reference's greedy sequence (PROMPT and its tokens) with the logits over it. */
export function referenceSequence(fx: Fixture, kind: Quantize, dtype: 'float32' | 'bfloat16'): { sequence: number[]; ref: Reference } {
  const greedy = quantizedReference(fx, kind, dtype).greedy;
  const sequence = [...PROMPT, ...greedy];
  return { sequence, ref: { ...quantizedReference(fx, kind, dtype, sequence), greedy } };
}

/** The model's logits of the whole sequence, then of each teacher-forced decode step after PROMPT, within tol of the reference's. */
export async function expectReferenceLogits(model: Qwen3Model, sequence: number[], ref: Reference, tol: number): Promise<void> {
  const vocab = ref.shape[1];
  const whole = await model.forward(sequence);
  expect(whole.logits!.shape).toEqual([1, sequence.length, vocab]);
  expect(relativeMaxError(whole.logits!.data, Float32Array.from(ref.logits))).toBeLessThan(tol);
  await model.resetCache();
  await model.prefill(PROMPT);
  const want = Float32Array.from(ref.logits);
  for (let i = PROMPT.length; i < sequence.length - 1; i++) {
    const step = await model.decode([sequence[i]!], { logits: 'last' });
    expect(relativeMaxError(step.logits!.data, rows(want, vocab, i, i + 1))).toBeLessThan(tol);
  }
  await model.resetCache();
}

/** Four sequences sharing the steps of a BatchScheduler over `model` generate what `alone` generates for each by itself. */
export async function expectBatchedAsAlone(model: Qwen3Model, alone: Qwen3Model = model): Promise<void> {
  const prompts = [PROMPT, [5, 6, 7], [400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410], [9]];
  const want = [];
  for (const p of prompts) want.push(await generateTextBasicCache(alone, p, { maxNewTokens: 10, eosTokenId: null }));
  const scheduler = new BatchScheduler(model, { maxBatch: 4 });
  const ids = async (s: SequenceStream) => {
    const out: number[] = [];
    for await (const t of s) out.push(t.id);
    return out;
  };
  try {
    expect(await Promise.all(prompts.map((p) => ids(scheduler.submit({ promptIds: p, maxTokens: 10 }))))).toEqual(want);
  } finally {
    await scheduler.close();
  }
}

/**
 * Parameter bytes of the fixture quantized with `rowBytes(n, k)` bytes per packed matrix of n rows
 * of k inputs: the embedding table in the compute dtype, the head a packed copy, float32 norms.
 */
export function packedParameterBytes(fx: Fixture, dtype: 'float32' | 'bfloat16', rowBytes: (n: number, k: number) => number): number {
  const c = fx.config;
  const block = rowBytes((c.n_heads + 2 * c.n_kv_groups) * c.head_dim, c.emb_dim) + rowBytes(c.emb_dim, c.n_heads * c.head_dim)
    + rowBytes(2 * c.hidden_dim, c.emb_dim) + rowBytes(c.emb_dim, c.hidden_dim);
  const norms = (c.emb_dim * (2 * c.n_layers + 1) + 2 * c.head_dim * c.n_layers) * 4;
  return c.vocab_size * c.emb_dim * (dtype === 'float32' ? 4 : 2) + c.n_layers * block + rowBytes(c.vocab_size, c.emb_dim) + norms;
}
