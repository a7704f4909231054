// Reads the parity fixtures written by scripts/python/make_fixtures.py.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Qwen3Config } from '../../lib/index.js';

export const FIXTURES_DIR = join(__dirname, '..', '.fixtures');

export interface DtypeRun {
  hf_greedy: number[];
  hf_greedy_nocache: number[];
  ref_greedy_cache: number[];
  ref_greedy_nocache: number[];
  logits_file: string;
  ref_logits_file: string;
  logits_shape: [number, number];
}

export interface Fixture {
  name: string;
  dir: string;
  modelPath: string;
  configPath: string;
  config: Qwen3Config;
  prompt: number[];
  steps: number;
  runs: Record<'float32' | 'bfloat16', DtypeRun>;
  /** Hugging Face logits (positions, vocab) over prompt + hf_greedy for a dtype. */
  hfLogits(dtype: 'float32' | 'bfloat16'): Float32Array;
  /** Reference-implementation logits over the same sequence. */
  refLogits(dtype: 'float32' | 'bfloat16'): Float32Array;
}

function readF32(path: string): Float32Array {
  const buf = readFileSync(path);
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

export function loadFixture(name: string): Fixture {
  const dir = join(FIXTURES_DIR, name);
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Qwen3Config;
  return {
    name,
    dir,
    modelPath: join(dir, 'model.pth'),
    configPath: join(dir, 'config.json'),
    config,
    prompt: ref.prompt,
    steps: ref.steps,
    runs: ref.runs,
    hfLogits: (d) => readF32(join(dir, ref.runs[d].logits_file)),
    refLogits: (d) => readF32(join(dir, ref.runs[d].ref_logits_file)),
  };
}

/** max |a - b| / max |b|: the relative error measure used throughout the parity tests. */
export function relativeMaxError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(a)) return Number.POSITIVE_INFINITY;
    maxDiff = Math.max(maxDiff, Math.abs(a - e));
    maxRef = Math.max(maxRef, Math.abs(e));
  }
  return maxDiff / maxRef;
}

/** Rows [from, to) of a (positions, vocab) matrix. */
export function rows(m: Float32Array, vocab: number, from: number, to: number): Float32Array {
  return m.subarray(from * vocab, to * vocab);
}
