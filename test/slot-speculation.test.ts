// Slot-step speculation (native/model/slot_speculation.h): after a step whose rows are all
// greedy, the engine runs the step that would follow before it is asked for. On by default
// on CUDA only; forced on here (QWEN3_SLOT_SPECULATION=1, read at a model's first slot call) so
// that the CPU checks it: outputs must be those of the requested step whether the speculation is
// used whole, in part or not at all, and whatever it wrote must be undone when unused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchScheduler, Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import type { SequenceStream } from '../lib/batch/scheduler.js';
import { type NativeModel, native } from '../lib/native.js';
import { loadFixture, relativeMaxError } from './support/fixtures.js';
import { type Row, slotRequest } from './support/slot-rows.js';

const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const fx = loadFixture('tiny-gqa4');
const VOCAB = fx.config.vocab_size;

/** Runs `load` with the environment's `settings` (read by a model's first slot call), then restores it. */
function withEnv<T>(settings: Record<string, string>, load: () => Promise<T>): Promise<T> {
  const saved = Object.keys(settings).map((name) => [name, process.env[name]] as const);
  Object.assign(process.env, settings);
  return load().finally(() => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });
}
const withSpeculation = <T>(setting: '0' | '1', load: () => Promise<T>) => withEnv({ QWEN3_SLOT_SPECULATION: setting }, load);

const request = (rows: Row[]) => slotRequest(rows, { topLogprobs: 2 });
const sampled = (u: number): Pick<Row, 'sampling' | 'u'> => ({ sampling: { temperature: 0.9, topK: 0, topP: 1 }, u });

describe.each([false, true])('speculated slot steps against plain ones, float32 (compile %s)', (compile) => {
  let spec: NativeModel;
  let plain: NativeModel;
  beforeAll(async () => {
    const load = () => native().loadModel({ path: fx.modelPath, config: fx.config as never, device: DEVICE, dtype: 'float32', compile });
    spec = await withSpeculation('1', async () => {
      const h = await load();
      await h.copySlot(0, 1, 0); // the first slot call reads the setting
      return h;
    });
    plain = await withSpeculation('0', async () => {
      const h = await load();
      await h.copySlot(0, 1, 0);
      return h;
    });
  });
  afterAll(() => {
    spec?.dispose();
    plain?.dispose();
  });

  /** The same request on both models: the same tokens, lengths and log-probabilities, logits within 1e-5. */
  async function both(rows: Row[]) {
    const a = await spec.slotStep(request(rows));
    const b = await plain.slotStep(request(rows));
    expect([...a.next]).toEqual([...b.next]);
    expect([...a.lengths]).toEqual([...b.lengths]);
    expect([...a.topIds!]).toEqual([...b.topIds!]);
    expect(relativeMaxError(a.logits!, b.logits!)).toBeLessThan(1e-5);
    expect(a.logits!.length).toBe(rows.length * VOCAB);
    return a;
  }

  it('decode steps that follow the speculation, whole and in part, and steps that do not', async () => {
    // Three sequences' prompts, then greedy decode steps fed their own tokens (each speculated whole).
    let out = await both([{ slot: 0, start: 0, ids: [1, 17, 42] }, { slot: 1, start: 0, ids: [5, 6, 7, 8] }, { slot: 2, start: 0, ids: [300, 301] }]);
    let rows: Row[] = [0, 1, 2].map((slot, r) => ({ slot, start: out.lengths[r]!, ids: [out.next[r]!] }));
    for (let i = 0; i < 4; i++) {
      out = await both(rows);
      rows = rows.map((row, r) => ({ slot: row.slot, start: out.lengths[r]!, ids: [out.next[r]!] }));
    }
    // Slot 1 leaves: the speculated step's rows 0 and 2 serve, and slot 1's token is undone.
    const left = rows[1]!;
    out = await both([rows[0]!, rows[2]!]);
    rows = [{ slot: 0, start: out.lengths[0]!, ids: [out.next[0]!] }, { slot: 2, start: out.lengths[1]!, ids: [out.next[1]!] }];
    for (const h of [spec, plain]) {
      await expect(h.slotStep(request([{ slot: 1, start: left.start + 1, ids: [3] }]))).rejects.toThrow(
        `Expected integer between 0 and ${left.start} (the length of slot 1) for starts[0] but received ${left.start + 1}`,
      );
    }
    // The failed request undid the speculation; a step to speculate again.
    out = await both(rows);
    rows = rows.map((row, r) => ({ slot: row.slot, start: out.lengths[r]!, ids: [out.next[r]!] }));
    // Another token than the chosen one (as a sampled row would feed), and a joining prompt: only
    // slot 2's row is served; the other two run as a step of their own.
    out = await both([{ ...rows[0]!, ids: [(rows[0]!.ids[0]! + 1) % VOCAB] }, rows[1]!, { slot: 3, start: 0, ids: [9, 9, 9] }]);
    // A sampled row: the greedy rows are served, the sampled one runs; no speculation after it.
    rows = [0, 2, 3].map((slot, r) => ({ slot, start: out.lengths[r]!, ids: [out.next[r]!], ...(r === 1 ? sampled(0.3) : {}) }));
    out = await both(rows);
    // Back to greedy: speculated again, then a copy of a speculated slot discards the speculation.
    rows = [0, 2, 3].map((slot, r) => ({ slot, start: out.lengths[r]!, ids: [out.next[r]!] }));
    out = await both(rows);
    for (const h of [spec, plain]) await h.copySlot(0, 4, out.lengths[0]!);
    for (const h of [spec, plain]) {
      await expect(h.copySlot(2, 5, out.lengths[1]! + 1)).rejects.toThrow(`(the length of slot 2) for length but received ${out.lengths[1]! + 1}`);
    }
    await both([{ slot: 4, start: out.lengths[0]!, ids: [out.next[0]!] }, { slot: 0, start: out.lengths[0]!, ids: [out.next[0]!] }]);
    // Served: the four decode steps after the prompts whole, then in part the step slot 1 left,
    // the joining step and the sampled one. Speculated in vain: the step before the failed
    // request and the one before the copy. (The one after the last step counts only once a later
    // call ends: the counters are read when a call ends.)
    const used = spec.info().slotSpeculation;
    expect(used.used).toBe(7);
    expect(used.run).toBe(9);
    expect(plain.info().slotSpeculation).toEqual({ run: 0, used: 0 });
  });
});

// The speculated step runs on the engine thread after a call has settled, outside any call: a
// reset that frees the slots must wait for it (it did not, and on CUDA, where speculation is on
// by default, the process could crash). Each round resets the moment a greedy step settles, while
// the step after it is being speculated, then checks that the slots start over cleanly.
describe('resetting the slots while a speculated step runs', () => {
  it('waits for it: 40 resets right after a step, each followed by the same fresh outputs', async () => {
    const h = await withSpeculation('1', async () => {
      const m = await native().loadModel({ path: fx.modelPath, config: fx.config as never, device: DEVICE, dtype: 'float32', compile: true });
      await m.copySlot(0, 1, 0);
      return m;
    });
    try {
      let first: number[] | null = null;
      for (let round = 0; round < 40; round++) {
        let out = await h.slotStep(request([{ slot: 0, start: 0, ids: [1, 17, 42] }, { slot: 3, start: 0, ids: [5, 6] }]));
        const got = [...out.next];
        for (let i = 0; i < 3; i++) {
          out = await h.slotStep(request([{ slot: 0, start: out.lengths[0]!, ids: [out.next[0]!] }, { slot: 3, start: out.lengths[1]!, ids: [out.next[1]!] }]));
          got.push(...out.next);
        }
        h.resetCache(true); // the step after the last one is being speculated now
        first ??= got;
        expect(got).toEqual(first);
        expect(h.info().slotCacheBytes).toBe(0);
      }
    } finally {
      h.dispose();
    }
  });
});

// With prompt chunks as prompt passes (the CPU's default) and as decode rows (CUDA's).
describe.each(['0', '1'])('the scheduler with speculation (QWEN3_PROMPT_ROWS=%s)', (promptRows) => {
  let model: Qwen3Model;
  beforeAll(async () => {
    model = await withEnv({ QWEN3_SLOT_SPECULATION: '1', QWEN3_PROMPT_ROWS: promptRows }, async () => {
      const m = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype: 'float32', compile: true });
      const slot = m.takeSlot();
      await m.slotStep([{ slot, start: 0, ids: [1], sampling: { temperature: 0, topK: 0, topP: 1 } }]);
      m.giveSlot(slot);
      return m;
    });
  });
  afterAll(() => model?.dispose());

  async function ids(stream: SequenceStream): Promise<number[]> {
    const out: number[] = [];
    for await (const t of stream) out.push(t.id);
    return out;
  }

  it('sequences that join, leave and sample each equal their own generation', async () => {
    const prompts = [[1, 17, 42, 99], [5, 6, 7], [400, 401, 402, 403, 404, 405], [9], [250, 251], [33, 34, 35, 36, 37, 38, 39]];
    const lengths = [12, 5, 9, 14, 3, 8];
    const sampled = { temperature: 0.8, topK: 40, topP: 0.9, seed: 77 };
    const expected = [];
    for (const [i, p] of prompts.entries()) {
      expected.push(await generateTextBasicCache(model, p, { maxNewTokens: lengths[i]!, eosTokenId: null, ...(i === 2 ? sampled : {}) }));
    }
    const scheduler = new BatchScheduler(model, { maxBatch: 3, prefillChunk: 4 });
    const got = await Promise.all(prompts.map((p, i) => ids(scheduler.submit({ promptIds: p, maxTokens: lengths[i]!, ...(i === 2 ? sampled : {}) }))));
    expect(got).toEqual(expected);
    await scheduler.close();
    const { run, used } = model.slotSpeculation;
    expect(used).toBeGreaterThan(0);
    expect(run).toBeGreaterThanOrEqual(used);
    expect(model.slotPromptRows > 0).toBe(promptRows === '1');
  });
});
