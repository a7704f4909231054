// Sequence slots: the KV cache rows that continuous batching and chat sessions run on. Each
// slot holds one sequence at its own length; a slot step appends new tokens to some slots and
// returns the token chosen after each (see native/model/engine.h). Here: the checked request,
// the unpacked result, and which slots are taken.
import type { Qwen3Config } from '../config.js';
import { z } from 'zod';
import { MAX_SLOTS, type NativeModel, type NativeSlotStepRequest, type NativeSlotStepResult } from '../native.js';
import { InvalidOptionError, boolean, describeValue, integer, parseOptions } from '../validate.js';
import { withCallerStack } from './request.js';

/** The most alternatives a step reports per row (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;

export interface SlotSampling {
  /** 0: greedy. */
  temperature: number;
  topK: number;
  topP: number;
  /** The U[0,1) draw that picks a sampled token; needed when temperature > 0. */
  uniform?: number;
}

export interface SlotRow {
  slot: number;
  /** Where the new tokens go: the slot keeps its first `start` tokens and forgets the rest. */
  start: number;
  /** The new tokens (one for a decode row, more for a prompt chunk). */
  ids: readonly number[];
  sampling: SlotSampling;
}

export interface SlotStepOptions {
  /** null: no log-probabilities; 0..20: the chosen token's plus that many alternatives. */
  topLogprobs?: number | null;
  /** Also return each row's last logits (float32, vocab); for tests. */
  logits?: boolean;
}

export interface TokenLogprob {
  id: number;
  logprob: number;
}

export interface SlotRowOutput {
  /** The token chosen after the row's last new token. */
  next: number;
  /** The slot's length after the step. */
  length: number;
  /** log-softmax of the model's logits at `next` (when asked for). */
  logprob?: number;
  /** The most likely tokens, best first (when asked for). */
  top?: TokenLogprob[];
  logits?: Float32Array;
}

/** Flattens and checks rows into the native request; `lengths` are the slots' current lengths. */
export function slotStepRequest(rows: readonly SlotRow[], options: SlotStepOptions, lengths: ReadonlyMap<number, number>, config: Readonly<Qwen3Config>): NativeSlotStepRequest {
  if (!Array.isArray(rows) || rows.length === 0) throw new InvalidOptionError(`Expected a non-empty array of slot rows for rows but received ${describeValue(rows)}`, 'rows');
  const n = rows.length;
  const offsets = new Int32Array(n + 1);
  let total = 0;
  rows.forEach((row, r) => {
    const ids = row?.ids;
    if (!Array.isArray(ids) || ids.length === 0) throw new InvalidOptionError(`Expected at least one token id for rows[${r}].ids but received ${describeValue(ids)}`, `rows[${r}].ids`);
    total += ids.length;
    offsets[r + 1] = total;
  });
  const request: NativeSlotStepRequest = {
    slots: new Int32Array(n),
    starts: new Int32Array(n),
    offsets,
    ids: new Int32Array(total),
    temperature: new Float64Array(n),
    topK: new Int32Array(n),
    topP: new Float64Array(n),
    uniforms: new Float64Array(n),
    topLogprobs: options.topLogprobs ?? -1,
    logits: options.logits ?? false,
  };
  const seen = new Set<number>();
  rows.forEach((row, r) => {
    const at = `rows[${r}]`;
    const slot = row.slot;
    if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_SLOTS) throw new InvalidOptionError(`Expected integer between 0 and ${MAX_SLOTS - 1} for ${at}.slot but received ${describeValue(slot)}`, `${at}.slot`);
    if (seen.has(slot)) throw new InvalidOptionError(`Expected each slot at most once per step but slot ${slot} appears twice (${at})`, `${at}.slot`);
    seen.add(slot);
    const held = lengths.get(slot) ?? 0;
    if (!Number.isInteger(row.start) || row.start < 0 || row.start > held) throw new InvalidOptionError(`Expected integer between 0 and ${held} for ${at}.start but received ${describeValue(row.start)}`, `${at}.start`);
    if (row.start + row.ids.length > config.context_length) {
      throw new InvalidOptionError(`Expected ${at} to fit the context_length of ${config.context_length} but it would hold ${row.start} + ${row.ids.length} tokens`, `${at}.ids`);
    }
    row.ids.forEach((id: number, i: number) => {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocab_size) {
        throw new InvalidOptionError(`Expected integer between 0 and ${config.vocab_size - 1} for ${at}.ids[${i}] but received ${describeValue(id)}`, `${at}.ids`);
      }
    });
    request.ids.set(row.ids, offsets[r]!);
    request.slots[r] = slot;
    request.starts[r] = row.start;
    const s = row.sampling;
    request.temperature[r] = s.temperature;
    request.topK[r] = s.topK;
    request.topP[r] = s.topP;
    if (s.temperature > 0 && s.uniform === undefined) throw new InvalidOptionError(`Expected a uniform draw for ${at}.sampling when temperature > 0`, `${at}.sampling.uniform`);
    request.uniforms[r] = s.uniform ?? 0;
  });
  return request;
}

/** One output per row from the native result. */
export function slotStepOutputs(result: NativeSlotStepResult, rows: number, vocab: number): SlotRowOutput[] {
  const k = result.topIds ? result.topIds.length / rows : 0;
  return Array.from({ length: rows }, (_, r) => {
    const out: SlotRowOutput = { next: result.next[r]!, length: result.lengths[r]! };
    if (result.logprobs) out.logprob = result.logprobs[r]!;
    if (result.topIds && result.topLogprobs) {
      out.top = Array.from({ length: k }, (_, i) => ({ id: result.topIds![r * k + i]!, logprob: result.topLogprobs![r * k + i]! }));
    }
    if (result.logits) out.logits = result.logits.subarray(r * vocab, (r + 1) * vocab);
    return out;
  });
}

/**
 * Which slots are taken, and how long each one's sequence is as far as JS knows (the native
 * side checks again). Whoever takes a slot (a chat session, the batch scheduler) owns its
 * content until it gives it back.
 */
export class SlotPool {
  readonly #lengths = new Map<number, number>();
  readonly #free: number[] = [];
  #next = 0;

  /** A free slot, its content forgotten. */
  take(): number {
    const slot = this.#free.pop() ?? this.#next++;
    if (slot >= MAX_SLOTS) {
      this.#next = MAX_SLOTS;
      throw new RangeError(`All ${MAX_SLOTS} sequence slots are taken: close chat sessions or schedulers that are no longer used`);
    }
    this.#lengths.set(slot, 0);
    return slot;
  }

  give(slot: number): void {
    if (!this.#lengths.delete(slot)) return;
    this.#free.push(slot);
  }

  get lengths(): ReadonlyMap<number, number> {
    return this.#lengths;
  }

  /** Records a slot's length after a step; a slot given back meanwhile stays given back. */
  setLength(slot: number, length: number): void {
    if (this.#lengths.has(slot)) this.#lengths.set(slot, length);
  }

  /** Every slot's content is gone (the native slot cache was released). */
  clearLengths(): void {
    for (const slot of this.#lengths.keys()) this.#lengths.set(slot, 0);
  }

  get taken(): number {
    return this.#lengths.size;
  }
}

// Built once: a zod schema costs ~0.1 ms to build, which every step of a batch would pay.
const slotOptionsSchema = z.object({ topLogprobs: integer(0, MAX_TOP_LOGPROBS).nullable().optional(), logits: boolean().optional() }).strict();

/** Checks and runs one slot step on taken slots, and records the slots' new lengths. */
export async function runSlotStep(handle: NativeModel, pool: SlotPool, config: Readonly<Qwen3Config>, rows: readonly SlotRow[], options: SlotStepOptions): Promise<SlotRowOutput[]> {
  const caller = new Error();
  for (const [r, row] of (Array.isArray(rows) ? rows : []).entries()) {
    if (!pool.lengths.has(row?.slot)) throw new InvalidOptionError(`Expected a slot taken with takeSlot() for rows[${r}].slot but received ${describeValue(row?.slot)}`, `rows[${r}].slot`);
  }
  const o = parseOptions(slotOptionsSchema, options);
  const request = slotStepRequest(rows, o, pool.lengths, config);
  const result = await withCallerStack(handle.slotStep(request), caller);
  const out = slotStepOutputs(result, rows.length, config.vocab_size);
  rows.forEach((row, r) => pool.setLength(row.slot, out[r]!.length));
  return out;
}

/** Slot `to` gets the first `length` tokens of slot `from`; both must be taken. */
export async function runCopySlot(handle: NativeModel, pool: SlotPool, from: number, to: number, length: number): Promise<void> {
  const caller = new Error();
  const held = pool.lengths.get(from);
  if (held === undefined) throw new InvalidOptionError(`Expected a slot taken with takeSlot() for from but received ${describeValue(from)}`, 'from');
  if (!pool.lengths.has(to) || to === from) throw new InvalidOptionError(`Expected another slot taken with takeSlot() for to but received ${describeValue(to)}`, 'to');
  parseOptions(z.object({ length: integer(0, held) }), { length });
  await withCallerStack(handle.copySlot(from, to, length), caller);
  pool.setLength(to, length);
}
