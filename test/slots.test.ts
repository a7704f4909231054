// Sequence slots (NativeModel.slotStep and copySlot): independent sequences that join and leave a
// running decode batch, each at its own position. Each row must give what its sequence gives
// alone through the batch API on the same model (prefills after cached tokens for its prompt
// chunks, decode steps for its single tokens), fed the same tokens: bit for bit where the pass is
// the same (every row of the reference backend on the CPU, and the compiled CPU's prompt chunks
// over prompt-made content), else within the parity tolerance of test/compile.test.ts (relative
// 1e-5 in float32, 3e-2 in bfloat16), with the same next token except at a near tie. Prompt
// chunks run as prompt passes on the CPU by default, and as rows of the step's decode part (one
// per token) where QWEN3_PROMPT_ROWS=1 forces it here (and by default on CUDA).
// The CUDA host recipe runs this file with QWEN3_TEST_DEVICE=cuda (docs/testing.md).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type NativeModel, type NativeSlotStepRequest, type NativeSlotStepResult, native } from '../lib/native.js';
import { loadFixture, relativeMaxError } from './support/fixtures.js';
import { GREEDY, type Row, type Sampling, slotRequest } from './support/slot-rows.js';

const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const fx = loadFixture('tiny-gqa4');
const VOCAB = fx.config.vocab_size;
type Dtype = 'float32' | 'bfloat16';

const load = (dtype: Dtype, compile: boolean) =>
  native().loadModel({ path: fx.modelPath, config: fx.config as never, device: DEVICE, dtype, compile });

const request = slotRequest;

interface Output {
  next: number;
  logits: Float32Array;
}

/**
 * One sequence alone through the batch API: ops[0] is a prefill on an empty cache; after it, an
 * op of one token is a decode step and a longer one a prefill after the cached tokens. An op of
 * `null` decodes the token the op before chose. Returns each op's tokens, next token and logits.
 */
async function alone(h: NativeModel, ops: (number[] | null)[], sampling = GREEDY, draws: number[] = []) {
  h.resetCache(false);
  const out: (Output & { ids: number[] })[] = [];
  for (const [i, op] of ops.entries()) {
    const ids = op ?? [out.at(-1)!.next];
    const kind = i > 0 && ids.length === 1 ? 'decode' : 'prefill';
    const { temperature, topK, topP } = sampling;
    const r = await h[kind]({ ids: Int32Array.from(ids), batch: 1, seq: ids.length, logits: 1, temperature, topK, topP,
      uniforms: temperature > 0 ? Float64Array.of(draws[i]!) : null });
    out.push({ ids, next: r.next[0]!, logits: r.logits! });
  }
  return out;
}

/** Row r of a step's (rows, vocab) logits. */
const rowLogits = (s: NativeSlotStepResult, r: number) => s.logits!.subarray(r * VOCAB, (r + 1) * VOCAB);

/** The gap between the two largest logits, relative to the largest magnitude. */
function relativeTopGap(logits: Float32Array): number {
  const sorted = Array.from(logits).sort((a, b) => b - a);
  return (sorted[0]! - sorted[1]!) / Math.max(...Array.from(logits, Math.abs));
}

/** log_softmax of logits in float64. */
function logSoftmax(logits: Float32Array): Float64Array {
  const max = Math.max(...logits);
  const lse = max + Math.log(Array.from(logits).reduce((sum, v) => sum + Math.exp(v - max), 0));
  return Float64Array.from(logits, (v) => v - lse);
}

const bitEqual = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** A sequence of the schedule: its slot ops run at steps join, join + 1, ... */
interface Plan {
  slot: number;
  join: number;
  start: number; // the slot's length before the first slot op
  prefix: (number[] | null)[]; // ops whose keys and values the slot already holds (alone() replays them)
  chunks: number[][]; // prompt chunks, then `decodes` single tokens
  decodes: number;
}

const pA = fx.prompt; // 7 tokens
const pB = [5, 6, 7];
const pC = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
const pD = [300, 301, 302, 303, 304];

const CASES = [
  { name: 'eager float32', dtype: 'float32', compile: false, kernels: true },
  { name: 'eager bfloat16', dtype: 'bfloat16', compile: false, kernels: true },
  { name: 'compiled float32', dtype: 'float32', compile: true, kernels: true },
  { name: 'compiled bfloat16', dtype: 'bfloat16', compile: true, kernels: true },
  // QWEN3_SLOT_KERNELS=0: the ATen ragged step (masked SDPA over gathered slots) instead of the CPU loops or the CUDA slot decoder.
  { name: 'compiled float32, ATen ragged step', dtype: 'float32', compile: true, kernels: false },
  { name: 'compiled bfloat16, ATen ragged step', dtype: 'bfloat16', compile: true, kernels: false },
  // QWEN3_PROMPT_ROWS=1: prompt chunks as decode rows, through the CPU loops and through the ATen ragged step.
  { name: 'compiled float32, prompts as rows', dtype: 'float32', compile: true, kernels: true, promptRows: true },
  { name: 'compiled bfloat16, prompts as rows', dtype: 'bfloat16', compile: true, kernels: true, promptRows: true },
  { name: 'compiled float32, prompts as rows of the ATen ragged step', dtype: 'float32', compile: true, kernels: false, promptRows: true },
] as const;

for (const c of CASES) {
  describe(`slot steps, ${c.name} (${DEVICE})`, () => {
    // The reference backend runs each row through its own pass: bit-identical to the batch API on the CPU.
    const allExact = DEVICE === 'cpu' && !c.compile;
    const tol = c.dtype === 'float32' ? 1e-5 : 3e-2;
    // Prompt chunks through the batch API's own prompt pass (not as decode rows): exact on the CPU.
    const promptPass = DEVICE === 'cpu' && !('promptRows' in c);
    let h: NativeModel;
    const saved = { kernels: process.env.QWEN3_SLOT_KERNELS, promptRows: process.env.QWEN3_PROMPT_ROWS };
    const restore = (name: string, value: string | undefined) => {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    };
    beforeAll(async () => {
      // Read by the model's first slot call.
      if (!c.kernels) process.env.QWEN3_SLOT_KERNELS = '0';
      if ('promptRows' in c) process.env.QWEN3_PROMPT_ROWS = '1';
      h = await load(c.dtype, c.compile);
    });
    afterAll(() => {
      h.dispose();
      restore('QWEN3_SLOT_KERNELS', saved.kernels);
      restore('QWEN3_PROMPT_ROWS', saved.promptRows);
    });

    /** A slot row's output against its sequence alone. */
    function expectSame(got: Output, want: Output, exact: boolean, what: string) {
      if (exact) {
        expect(bitEqual(got.logits, want.logits), `${what}: logits bit-identical`).toBe(true);
        expect(got.next, what).toBe(want.next);
        return;
      }
      expect(relativeMaxError(got.logits, want.logits), `${what}: logits`).toBeLessThan(tol);
      // Two logits each off by up to the tolerance can swap places only within twice it.
      if (relativeTopGap(want.logits) > 2 * tol) expect(got.next, what).toBe(want.next);
    }

    it('sequences joining, leaving, rolled back and copied give each what it gives alone', async () => {
      const b1 = (await alone(h, [pB]))[0]!.next; // B's first token, which its rollback keeps
      const plans: Record<string, Plan> = {
        A: { slot: 0, join: 0, start: 0, prefix: [], chunks: [pA], decodes: 8 },
        B: { slot: 2, join: 0, start: 0, prefix: [], chunks: [pB], decodes: 3 }, // leaves after step 3
        C: { slot: 5, join: 1, start: 0, prefix: [], chunks: [pC], decodes: 6 }, // joins a running batch
        D: { slot: 1, join: 2, start: 0, prefix: [], chunks: [pD.slice(0, 3), pD.slice(3)], decodes: 5 }, // a chunked prompt
        // B's slot again from after its first token: forgets B's later tokens (a rollback).
        B2: { slot: 2, join: 5, start: pB.length + 1, prefix: [pB, [b1]], chunks: [[40, 41, 42]], decodes: 3 },
        // A copy of A's prompt (copySlot before step 5), continued with its own tokens.
        E: { slot: 7, join: 5, start: pA.length, prefix: [pA], chunks: [[77, 78]], decodes: 3 },
      };
      const refs: Record<string, Awaited<ReturnType<typeof alone>>> = {};
      for (const [name, p] of Object.entries(plans)) refs[name] = await alone(h, [...p.prefix, ...p.chunks, ...Array(p.decodes).fill(null)]);

      const lastStep = Math.max(...Object.values(plans).map((p) => p.join + p.chunks.length + p.decodes - 1));
      const lengths: Record<string, number> = {};
      for (let step = 0; step <= lastStep; step++) {
        if (step === 5) await h.copySlot(plans.A!.slot, plans.E!.slot, pA.length);
        if (step === 4) {
          // Batch steps between slot steps touch neither the slots nor their own results.
          const again = await alone(h, [pC, null, null]);
          for (let i = 0; i < 3; i++) expect(bitEqual(again[i]!.logits, refs.C![i]!.logits)).toBe(true);
        }
        const active = Object.entries(plans).filter(([, p]) => step >= p.join && step < p.join + p.chunks.length + p.decodes);
        const rows = active.map(([name, p]) => {
          const op = p.prefix.length + step - p.join;
          const start = step === p.join ? p.start : lengths[name]!;
          return { name, plan: p, op, row: { slot: p.slot, start, ids: refs[name]![op]!.ids } };
        });
        const out = await h.slotStep(request(rows.map((r) => r.row)));
        rows.forEach(({ name, op, row }, r) => {
          lengths[name] = row.start + row.ids.length;
          expect(out.lengths[r], `${name} length at step ${step}`).toBe(lengths[name]);
          // Exact where this op and everything the slot holds before it ran the batch API's own
          // pass: every op with the reference backend; prompt chunks over prompt-made content
          // with the compiled CPU (its decode rows of a step run as one batched product).
          const promptsOnly = refs[name]!.slice(0, op + 1).every((x) => x.ids.length > 1);
          const exact = allExact || (promptPass && promptsOnly);
          expectSame({ next: out.next[r]!, logits: rowLogits(out, r) }, refs[name]![op]!, exact, `${name} op ${op} at step ${step}`);
        });
      }
      // Storage for slots 0..7 and the longest sequence, in whole tokens of keys and values.
      const perToken = 2 * fx.config.n_layers * fx.config.n_kv_groups * fx.config.head_dim * (c.dtype === 'float32' ? 4 : 2);
      const bytes = h.info().slotCacheBytes;
      expect(bytes % perToken).toBe(0);
      expect(bytes / perToken).toBeGreaterThanOrEqual(8 * lengths.A!);
      // Every chunk of more than one token so far: A, B, C, D's two, B2 and E.
      if ('promptRows' in c) expect(h.info().slotPromptRows).toBe(7);
      else if (DEVICE === 'cpu') expect(h.info().slotPromptRows).toBe(0);
    });

    it('sampled rows, each with its own settings and draw, choose what they choose alone; logprobs fit the logits', async () => {
      const samplers: Sampling[] = [
        { temperature: 0.8, topK: 5, topP: 1 },
        { temperature: 1.3, topK: 0, topP: 0.9 },
        GREEDY,
      ];
      const prompts = [pA, pB, pC];
      const slots = [3, 0, 6];
      const steps = 7;
      let seed = 12345;
      const draw = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
      const draws = samplers.map(() => Array.from({ length: steps }, draw));
      const refs: Awaited<ReturnType<typeof alone>>[] = [];
      for (const [r, s] of samplers.entries()) refs.push(await alone(h, [prompts[r]!, ...Array(steps - 1).fill(null)], s, draws[r]));
      // A draw near a boundary of the sampling distribution may pick a neighbour when the logits
      // differ by bfloat16 rounding, so sampled choices are compared where the logits are exact or float32.
      const compareSampled = allExact || c.dtype === 'float32';
      const k = 3;
      for (let step = 0; step < steps; step++) {
        const rows = samplers.map((s, r) => ({
          slot: slots[r]!,
          start: step === 0 ? 0 : prompts[r]!.length + step - 1,
          ids: refs[r]![step]!.ids,
          sampling: s,
          u: draws[r]![step],
        }));
        const out = await h.slotStep(request(rows, { topLogprobs: k }));
        for (let r = 0; r < rows.length; r++) {
          const logits = rowLogits(out, r);
          const want = refs[r]![step]!;
          const exact = allExact || (promptPass && step === 0); // step 0: prompt rows
          const sampled = samplers[r] !== GREEDY;
          // The logits, and a greedy row's token (expectSame); a sampled row's token where compared.
          expectSame({ next: sampled ? want.next : out.next[r]!, logits }, want, exact, `row ${r} step ${step}`);
          if (sampled && compareSampled) expect(out.next[r], `row ${r} step ${step}`).toBe(want.next);
          // Logprobs are log_softmax of the returned logits at the chosen token and at the best k, best first.
          const lp = logSoftmax(logits);
          expect(out.logprobs![r]).toBeCloseTo(lp[out.next[r]!]!, 4);
          const best = Array.from(lp).sort((a, b) => b - a).slice(0, k);
          const ids = Array.from(out.topIds!.subarray(r * k, (r + 1) * k));
          expect(new Set(ids).size).toBe(k);
          for (let j = 0; j < k; j++) {
            expect(out.topLogprobs![r * k + j]).toBeCloseTo(best[j]!, 4);
            expect(lp[ids[j]!]).toBeCloseTo(best[j]!, 4);
          }
        }
      }
    });
  });
}

describe(`slot steps: checks, lifecycle and memory (${DEVICE})`, () => {
  let h: NativeModel;
  beforeAll(async () => {
    h = await load('float32', false);
  });
  afterAll(() => h.dispose());

  const prompt = (slot: number, start = 0) => request([{ slot, start, ids: pA }]);

  it('rejects every bad argument with a message that names it', async () => {
    await h.slotStep(prompt(0)); // slot 0 holds 7 tokens
    const one = request([{ slot: 3, start: 0, ids: [1, 2, 3] }]);
    const two = request([
      { slot: 3, start: 0, ids: [1, 2, 3] },
      { slot: 4, start: 0, ids: [4] },
    ]);
    const cases: [unknown, RegExp][] = [
      [undefined, /^Expected object for slot step request but received undefined$/],
      [{ ...one, slots: Int32Array.of(4096) }, /^Expected integer between 0 and 4095 for slots\[0\] but received 4096$/],
      [{ ...one, slots: Int32Array.of(-1) }, /^Expected integer between 0 and 4095 for slots\[0\] but received -1$/],
      [{ ...one, slots: [3] }, /^Expected Int32Array of one slot index per row for slots but received an array$/],
      [{ ...one, slots: new Int32Array(0) }, /^Expected Int32Array of 1 to 4096 slot indices for slots but received a typed array$/],
      [{ ...two, slots: Int32Array.of(4, 4) }, /^Expected each slot at most once per step for slots\[1\] but received 4, already the slot of row 0$/],
      [{ ...one, ids: Int32Array.of(1, 512, 3) }, /^Expected integer between 0 and 511 for ids\[1\] but received 512$/],
      [{ ...two, ids: Int32Array.of(1) }, /^Expected at least one token per row \(2\) for ids but received 1$/],
      [{ ...one, offsets: Int32Array.of(0, 1, 3) }, /^Expected Int32Array of rows \+ 1 \(2\) offsets into ids for offsets but received a typed array$/],
      [{ ...one, offsets: Int32Array.of(1, 3) }, /^Expected 0 for offsets\[0\] but received 1$/],
      [{ ...one, offsets: Int32Array.of(0, 2) }, /^Expected 3 \(the length of ids\) for offsets\[1\] but received 2$/],
      [{ ...two, offsets: Int32Array.of(0, 0, 4) }, /^Expected integer between 1 and 3 for offsets\[1\] but received 0$/],
      [{ ...one, starts: Int32Array.of(-1) }, /^Expected integer between 0 and 95 for starts\[0\] but received -1$/],
      [{ ...one, starts: Int32Array.of(94) }, /^Context length exceeded: row 0 \(slot 3\) would hold 97 tokens, past the model's context_length of 96$/],
      [{ ...one, temperature: Float64Array.of(Number.NaN) }, /^Expected finite number of at least 0 and at most 1e\+06 for temperature\[0\] but received NaN$/],
      [{ ...one, temperature: Float64Array.of(1, 1) }, /^Expected Float64Array of one temperature per row \(1\) for temperature but received a typed array$/],
      [{ ...one, topK: Int32Array.of(-1) }, /^Expected integer between 0 and 2147483647 for topK\[0\] but received -1$/],
      [{ ...one, topP: Float64Array.of(0) }, /^Expected finite number above 0 and at most 1 for topP\[0\] but received 0$/],
      [{ ...one, uniforms: Float64Array.of(1.5) }, /^Expected finite number of at least 0 and at most 1 for uniforms\[0\] but received 1.5$/],
      [{ ...one, uniforms: null }, /^Expected Float64Array of one uniform draw per row \(1\) for uniforms but received null$/],
      [{ ...one, topLogprobs: 21 }, /^Expected integer between -1 and 20 for topLogprobs but received 21$/],
      [{ ...one, logits: 1 }, /^Expected boolean for logits but received 1$/],
    ];
    for (const [bad, message] of cases) expect(() => h.slotStep(bad as NativeSlotStepRequest), String(message)).toThrow(message);
    // What depends on a slot's state is checked on the engine thread: the step rejects, and none
    // of its slots changes (row 0 would have rolled slot 0 back to 3 tokens).
    await expect(h.slotStep(request([{ slot: 0, start: 8, ids: [1] }]))).rejects.toThrow(
      /^Expected integer between 0 and 7 \(the length of slot 0\) for starts\[0\] but received 8$/,
    );
    await expect(h.slotStep(request([{ slot: 0, start: 3, ids: [1] }, { slot: 9, start: 1, ids: [1] }]))).rejects.toThrow(
      /^Expected integer between 0 and 0 \(the length of slot 9\) for starts\[1\] but received 1$/,
    );
    expect(Array.from((await h.slotStep(request([{ slot: 0, start: 7, ids: [1] }]))).lengths)).toEqual([8]);
    // copySlot(from, to, length)
    expect(() => h.copySlot(0, 0, 1)).toThrow(/^Expected a slot other than from \(0\) for to but received 0$/);
    expect(() => h.copySlot(0, 4096, 1)).toThrow(/^Expected integer between 0 and 4095 for to but received 4096$/);
    expect(() => h.copySlot(-1, 1, 1)).toThrow(/^Expected integer between 0 and 4095 for from but received -1$/);
    expect(() => h.copySlot(0, 1, 1.5)).toThrow(/^Expected integer between 0 and 96 for length but received 1.5$/);
    await expect(h.copySlot(0, 1, 9)).rejects.toThrow(/^Expected integer between 0 and 8 \(the length of slot 0\) for length but received 9$/);
    await h.copySlot(0, 1, 8);
    expect(Array.from((await h.slotStep(request([{ slot: 1, start: 8, ids: [2] }]))).lengths)).toEqual([9]);
  });

  it('resetCache(false) leaves the slots; resetCache(true) frees them', async () => {
    await h.slotStep(prompt(2));
    const bytes = h.info().slotCacheBytes;
    expect(bytes).toBeGreaterThan(0);
    h.resetCache(false);
    expect(h.info().slotCacheBytes).toBe(bytes);
    expect(Array.from((await h.slotStep(request([{ slot: 2, start: 7, ids: [1] }]))).lengths)).toEqual([8]);
    h.resetCache(true);
    expect(h.info().slotCacheBytes).toBe(0);
    await expect(h.slotStep(request([{ slot: 2, start: 7, ids: [1] }]))).rejects.toThrow(/for starts\[0\] but received 7$/);
    expect(Array.from((await h.slotStep(prompt(2))).lengths)).toEqual([7]);
  });

  it('slot calls keep the model busy until they settle, like the other steps', async () => {
    const busy = 'Model is busy: cannot reset the KV cache during a step';
    const step = h.slotStep(prompt(0));
    expect(() => h.resetCache(false)).toThrow(busy);
    await step;
    const copy = h.copySlot(0, 1, 7);
    expect(() => h.resetCache(true)).toThrow(busy);
    await copy;
    expect(() => h.resetCache(false)).not.toThrow();
  });

  it('a disposed handle refuses slot calls; one in flight finishes', async () => {
    const other = await load('float32', false);
    const alone0 = (await alone(other, [pA]))[0]!.next;
    const inFlight = other.slotStep(prompt(0));
    other.dispose();
    expect((await inFlight).next[0]).toBe(alone0);
    expect(() => other.slotStep(prompt(0))).toThrow('Model is disposed');
    expect(() => other.copySlot(0, 1, 1)).toThrow('Model is disposed');
  });
});
