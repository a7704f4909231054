// The checked request of one native step: token ids flattened and range-checked, sampling
// settings, and native errors re-thrown with the caller's stack.
import type { Qwen3Config } from '../config.js';
import type { NativeStepRequest } from '../native.js';
import { InvalidOptionError, describeValue } from '../validate.js';

/** Token ids: one sequence, or a batch of equally long sequences. */
export type TokenIds = readonly number[] | Int32Array | readonly (readonly number[])[];

export type LogitsMode = 'none' | 'last' | 'all';
const LOGITS_CODE = { none: 0, last: 1, all: 2 } as const;

export interface SamplingOptions {
  temperature: number;
  topK: number;
  topP: number;
  /** One U[0,1) draw per batch row; required when temperature > 0. */
  uniforms?: Float64Array;
}

export const GREEDY: SamplingOptions = { temperature: 0, topK: 0, topP: 1 };

/** The native request for checked ids (batch, seq) and sampling settings. */
export function stepRequest(ids: Int32Array, batch: number, seq: number, logits: LogitsMode, sampling: SamplingOptions): NativeStepRequest {
  return {
    ids,
    batch,
    seq,
    logits: LOGITS_CODE[logits],
    temperature: sampling.temperature,
    topK: sampling.topK,
    topP: sampling.topP,
    uniforms: sampling.uniforms ?? null,
  };
}

/** Re-throws a native rejection with the stack of the JS call that started it. */
export async function withCallerStack<T>(promise: Promise<T>, caller: Error): Promise<T> {
  try {
    return await promise;
  } catch (err) {
    if (err instanceof Error && caller.stack) {
      err.stack = `${err.name}: ${err.message}\n${caller.stack.split('\n').slice(1).join('\n')}`;
    }
    throw err;
  }
}

/** Flattens ids to (batch, seq) and checks vocabulary range and context length. */
export function checkTokenIds(ids: TokenIds, cached: number, config: Readonly<Qwen3Config>): { flat: Int32Array; batch: number; seq: number } {
  const rows: ArrayLike<number>[] =
    ids instanceof Int32Array ? [ids] : Array.isArray(ids) && ids.length > 0 && Array.isArray(ids[0]) ? (ids as number[][]) : [ids as number[]];
  if (!Array.isArray(ids) && !(ids instanceof Int32Array)) {
    throw new InvalidOptionError(`Expected array of token ids for ids but received ${describeValue(ids)}`, 'ids');
  }
  const seq = rows[0]!.length;
  if (seq === 0) throw new InvalidOptionError('Expected at least one token for ids but received an empty prompt', 'ids');
  const flat = new Int32Array(rows.length * seq);
  const vocab = config.vocab_size;
  rows.forEach((row, r) => {
    if (!Array.isArray(row) && !(row instanceof Int32Array)) {
      throw new InvalidOptionError(`Expected array of token ids for ids[${r}] but received ${describeValue(row)}`, `ids[${r}]`);
    }
    if (row.length !== seq) {
      throw new InvalidOptionError(`Expected every row to have ${seq} tokens for ids[${r}] but received ${row.length}`, `ids[${r}]`);
    }
    for (let i = 0; i < seq; i++) {
      const id = row[i];
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocab) {
        throw new InvalidOptionError(`Expected integer between 0 and ${vocab - 1} for token id at position ${i} but received ${describeValue(id)}`, 'ids');
      }
      flat[r * seq + i] = id;
    }
  });
  if (cached + seq > config.context_length) {
    throw new InvalidOptionError(
      `Expected at most ${config.context_length - cached} tokens (context_length ${config.context_length}, ${cached} cached) for ids but received ${seq}`,
      'ids',
    );
  }
  return { flat, batch: rows.length, seq };
}
