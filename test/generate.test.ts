// Generation: streaming, abort, sampling, statistics and queuing on one model.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  Qwen3Model,
  formatStats,
  generateBatchCache,
  generateStats,
  generateTextBasic,
  generateTextBasicCache,
  generateTextBasicStream,
  generateTextBasicStreamCache,
} from '../lib/index.js';
import { type NativeModel, native } from '../lib/native.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4');
const greedy = fx.runs.float32.hf_greedy;
let model: Qwen3Model;

beforeAll(async () => {
  model = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu', dtype: 'float32' });
});
afterAll(() => model.dispose());

async function collect(gen: AsyncIterable<number>): Promise<number[]> {
  const out: number[] = [];
  for await (const id of gen) out.push(id);
  return out;
}

describe('streaming', () => {
  it('streamed ids equal non-streamed ids, with and without the cache', async () => {
    const opts = { maxNewTokens: 30, eosTokenId: null };
    expect(await collect(generateTextBasicStreamCache(model, fx.prompt, opts))).toEqual(greedy.slice(0, 30));
    expect(await collect(generateTextBasicStream(model, fx.prompt, opts))).toEqual(greedy.slice(0, 30));
    expect(await generateTextBasicCache(model, fx.prompt, opts)).toEqual(greedy.slice(0, 30));
    expect(await generateTextBasic(model, fx.prompt, opts)).toEqual(greedy.slice(0, 30));
  });

  it('stops at eosTokenId without returning it, unless ignoreEos', async () => {
    const eos = greedy[6]!;
    const stop = greedy.indexOf(eos);
    expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 30, eosTokenId: eos })).toEqual(greedy.slice(0, stop));
    expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 30, eosTokenId: eos, ignoreEos: true })).toEqual(greedy.slice(0, 30));
  });

  it('breaking out of a stream releases the model for the next call', async () => {
    for await (const id of generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 30, eosTokenId: null })) {
      expect(id).toBe(greedy[0]);
      break;
    }
    expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 5, eosTokenId: null })).toEqual(greedy.slice(0, 5));
  });
});

describe('abort', () => {
  it('an abort during the prefill stops after that step and keeps the model usable', async () => {
    // The abort comes right after the native prefill was handed to the thread pool: a proxy over
    // the engine (whose native methods are read-only) sends it, so it lands mid-step every time.
    const ac = new AbortController();
    let prefills = 0;
    const binding = native();
    const real = binding.loadModel.bind(binding);
    const spy = vi.spyOn(binding, 'loadModel').mockImplementation(async (request) => {
      const handle = await real(request);
      return new Proxy(handle, {
        get: (target, key) => {
          if (key === 'prefill') {
            return (req: Parameters<NativeModel['prefill']>[0]) => {
              const step = target.prefill(req);
              prefills++;
              ac.abort();
              return step;
            };
          }
          const value = Reflect.get(target, key) as unknown;
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
    });
    const aborting = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu', dtype: 'float32' });
    spy.mockRestore();
    try {
      const { ids, stats } = await generateStats(aborting, fx.prompt, { maxNewTokens: 40, eosTokenId: null, signal: ac.signal });
      expect(prefills).toBe(1);
      expect(ids).toEqual(greedy.slice(0, 1)); // the token of the step in flight, and no further step
      expect(stats.aborted).toBe(true);
      expect(await generateTextBasicCache(aborting, fx.prompt, { maxNewTokens: 8, eosTokenId: null })).toEqual(greedy.slice(0, 8));
    } finally {
      aborting.dispose();
    }
  });

  it('an abort during decoding keeps exactly what was generated', async () => {
    const ac = new AbortController();
    const seen: number[] = [];
    const { ids, stats } = await generateStats(model, fx.prompt, {
      maxNewTokens: 40,
      eosTokenId: null,
      signal: ac.signal,
      onToken: (id) => {
        seen.push(id);
        if (seen.length === 5) ac.abort();
      },
    });
    expect(ids).toEqual(greedy.slice(0, 5));
    expect(stats.aborted).toBe(true);
    expect(stats.generatedTokens).toBe(5);
  });

  it('an already aborted signal generates nothing', async () => {
    expect(await generateTextBasicCache(model, fx.prompt, { signal: AbortSignal.abort() })).toEqual([]);
  });
});

describe('sampling', () => {
  const sample = (seed: number, extra: object = {}) =>
    generateTextBasicCache(model, fx.prompt, { maxNewTokens: 25, eosTokenId: null, temperature: 1.5, seed, ...extra });

  it('the same seed gives the same tokens; other seeds give other tokens', async () => {
    const a = await sample(1);
    expect(await sample(1)).toEqual(a);
    const others = await Promise.all([2, 3, 4].map((s) => sample(s)));
    for (const o of others) expect(o).not.toEqual(a);
    expect(a).not.toEqual(greedy.slice(0, 25));
    expect(a.every((id) => Number.isInteger(id) && id >= 0 && id < 512)).toBe(true);
  });

  it('cached and uncached sampling agree for a seed', async () => {
    expect(await generateTextBasic(model, fx.prompt, { maxNewTokens: 15, eosTokenId: null, temperature: 0.8, seed: 9 })).toEqual(
      await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 15, eosTokenId: null, temperature: 0.8, seed: 9 }),
    );
  });

  it('topK 1 and a tiny topP reduce to greedy', async () => {
    expect(await sample(5, { topK: 1 })).toEqual(greedy.slice(0, 25));
    expect(await sample(5, { topP: 1e-9 })).toEqual(greedy.slice(0, 25));
  });

  it('topK restricts choices to the k most likely tokens', async () => {
    // With k = 2, every sampled token must be the first or second choice at its step.
    const ids = await sample(11, { topK: 2, temperature: 5 });
    const seq = [...fx.prompt];
    for (const id of ids) {
      const logits = (await model.forward(seq, { logits: 'last' })).logits!.data;
      const top2 = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!).slice(0, 2);
      expect(top2).toContain(id);
      seq.push(id);
    }
  });

  it('rejects bad sampling options by name', async () => {
    await expect(sample(1, { temperature: -1 })).rejects.toThrow('Expected number between 0 and 100 for temperature but received -1');
    await expect(sample(1, { topK: 1.5 })).rejects.toThrow('Expected integer between 0 and 512 for topK but received 1.5');
    await expect(sample(1, { topP: 0 })).rejects.toThrow('Expected number greater than 0 and at most 1 for topP but received 0');
    await expect(sample(-3)).rejects.toThrow(/for seed but received -3/);
  });
});

describe('stats', () => {
  it('reports time, rates and memory, and prints the book-style lines', async () => {
    const { ids, stats } = await generateStats(model, fx.prompt, { maxNewTokens: 20, eosTokenId: null });
    expect(ids).toEqual(greedy.slice(0, 20));
    expect(stats.generatedTokens).toBe(20);
    expect(stats.seconds).toBeGreaterThan(0);
    expect(stats.prefillSeconds).toBeGreaterThan(0);
    expect(stats.prefillSeconds).toBeLessThan(stats.seconds);
    expect(stats.tokensPerSecond).toBeCloseTo(20 / stats.seconds, 6);
    expect(stats.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(stats.peakMemoryBytes).toBeNull(); // CPU
    expect(stats.device).toBe('cpu');
    const text = formatStats(stats);
    expect(text).toMatch(/^Time: \d+\.\d\d sec\n\d+ tokens\/sec\nPrefill: /);
    expect(formatStats({ ...stats, device: 'cuda', peakMemoryBytes: 1.52e9 })).toMatch(/Max CUDA memory allocated: 1\.52 GB$/);
  });
});

describe('one model, several callers', () => {
  it('concurrent generations are queued and equal running them one after another', async () => {
    const [a, b, c] = await Promise.all([
      generateTextBasicCache(model, fx.prompt, { maxNewTokens: 12, eosTokenId: null }),
      generateTextBasicCache(model, [5, 6, 7], { maxNewTokens: 12, eosTokenId: null }),
      generateTextBasic(model, fx.prompt, { maxNewTokens: 12, eosTokenId: null }),
    ]);
    expect(a).toEqual(greedy.slice(0, 12));
    expect(c).toEqual(greedy.slice(0, 12));
    expect(b).toEqual(await generateTextBasicCache(model, [5, 6, 7], { maxNewTokens: 12, eosTokenId: null }));
  });

  it('two models in one process work independently', async () => {
    const other = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu', dtype: 'float32' });
    try {
      const [a, b] = await Promise.all([
        generateTextBasicCache(model, fx.prompt, { maxNewTokens: 10, eosTokenId: null }),
        generateTextBasicCache(other, fx.prompt, { maxNewTokens: 10, eosTokenId: null }),
      ]);
      expect(a).toEqual(greedy.slice(0, 10));
      expect(b).toEqual(a);
    } finally {
      other.dispose();
    }
  });
});

describe('batched generation', () => {
  it('each row of a batch equals the same prompt generated alone, eager and compiled', async () => {
    const prompts = [fx.prompt, [...fx.prompt].reverse(), fx.prompt.map((id) => (id * 7) % 512)];
    const alone = await Promise.all(prompts.map((p) => generateTextBasicCache(model, p, { maxNewTokens: 20, eosTokenId: null })));
    expect(await generateBatchCache(model, prompts, { maxNewTokens: 20, eosTokenId: null })).toEqual(alone);
    const compiled = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu', dtype: 'float32', compile: true });
    try {
      expect(await generateBatchCache(compiled, prompts, { maxNewTokens: 20, eosTokenId: null })).toEqual(alone);
    } finally {
      compiled.dispose();
    }
  });

  it('rows stop at their own eos; unequal prompt lengths are refused', async () => {
    const eos = greedy[3]!;
    const [row] = await generateBatchCache(model, [fx.prompt], { maxNewTokens: 20, eosTokenId: eos });
    expect(row).toEqual(greedy.slice(0, greedy.indexOf(eos)));
    await expect(generateBatchCache(model, [fx.prompt, []])).rejects.toThrow('Expected at least one token in every prompt for prompts');
  });

  it('left-padded prompts of different lengths each generate what they would alone, eager and compiled', async () => {
    const prompts = [fx.prompt, [5, 6], fx.prompt.slice(2), [400]];
    const alone = await Promise.all(prompts.map((p) => generateTextBasicCache(model, p, { maxNewTokens: 15, eosTokenId: null })));
    expect(await generateBatchCache(model, prompts, { maxNewTokens: 15, eosTokenId: null })).toEqual(alone);
    const compiled = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: process.env.QWEN3_TEST_DEVICE ?? 'cpu', dtype: 'float32', compile: true });
    try {
      expect(await generateBatchCache(compiled, prompts, { maxNewTokens: 15, eosTokenId: null })).toEqual(alone);
      // The padding belongs to that cache only: an unpadded generation afterwards is unaffected.
      expect(await generateTextBasicCache(compiled, fx.prompt, { maxNewTokens: 15, eosTokenId: null })).toEqual(alone[0]);
    } finally {
      compiled.dispose();
    }
    // A step with another batch size than the cache holds is refused, not silently restarted.
    await model.resetCache();
    await model.prefill([fx.prompt]);
    await expect(model.prefill([fx.prompt, fx.prompt])).rejects.toThrow('The KV cache holds 1 row(s), not 2: reset it before a step with another batch size');
    // Padding is only accepted by the step that starts a cache.
    await model.resetCache();
    await model.prefill([fx.prompt]);
    await expect(model.exclusive((s) => s.prefill([[1, 2, 3]], 'none', undefined, [1]))).rejects.toThrow(/starts the KV cache/);
  });
});

describe('decodeSteps: many decode steps in one native call', () => {
  const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
  // Token by token through decode(), for two rows: the reference the multi-step call must equal.
  async function stepwise(m: Qwen3Model, prompts: number[][], steps: number, sampling?: () => Float64Array): Promise<number[][]> {
    return m.exclusive(async (s) => {
      s.resetCache();
      let last = (await s.prefill(prompts)).next;
      const out: number[][] = [];
      for (let i = 0; i < steps; i++) {
        const u = sampling?.();
        last = (await s.decode(last.map((id) => [id]), 'none', u ? { temperature: 0.8, topK: 20, topP: 0.9, uniforms: u } : undefined)).next;
        out.push(last);
      }
      return out;
    });
  }

  for (const compile of [false, true]) {
    it(`equals token-by-token decoding, stops at stopId and keeps the cache exact (${DEVICE}, ${compile ? 'compiled' : 'eager'})`, async () => {
      const m = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype: 'float32', compile });
      try {
        const prompts = [fx.prompt, fx.prompt.map((id) => (id * 7) % 512)];
        // Past 64 steps: on CUDA that is two chains of device-side steps.
        const steps = fx.config.context_length - fx.prompt.length - 1;
        const want = await stepwise(m, prompts, steps);
        await m.resetCache();
        const first = (await m.prefill(prompts)).next;
        const all = await m.decodeSteps(first.map((id) => [id]), { steps });
        expect(all.steps).toEqual(want);
        expect(all.cacheLength).toBe(fx.prompt.length + steps);

        // Row 0 produces `stop` at step 5 and row 1 at step k >= 5 (or never): the call ends at k.
        const stop = want[5]![0]!;
        const k = want.findIndex((ids, i) => i >= 5 && want.slice(0, i + 1).some((r) => r[1] === stop));
        const until = k < 0 ? steps : k + 1;
        await m.resetCache();
        await m.prefill(prompts);
        const stopped = await m.decodeSteps(first.map((id) => [id]), { steps, stopId: stop });
        expect(stopped.steps).toEqual(want.slice(0, until));
        expect(stopped.cacheLength).toBe(fx.prompt.length + until);
        // The cache holds exactly what those steps consumed: decoding on continues the reference.
        if (until < steps) expect((await m.decode(want[until - 1]!.map((id) => [id]))).next).toEqual(want[until]);

        // Sampling: the same draws in the same order give the same tokens.
        const draws = (seed: number) => () => Float64Array.from({ length: 2 }, (_, i) => ((seed++ * 7919 + i * 104729) % 1000) / 1000);
        const sampled = await stepwise(m, prompts, 12, draws(1));
        const uniforms = new Float64Array(24);
        const d = draws(1);
        for (let i = 0; i < 12; i++) uniforms.set(d(), 2 * i);
        const together = await m.exclusive(async (s) => {
          s.resetCache();
          const p = (await s.prefill(prompts)).next;
          return s.decodeSteps(p.map((id) => [id]), 12, { temperature: 0.8, topK: 20, topP: 0.9, uniforms });
        });
        expect(together.steps).toEqual(sampled);
      } finally {
        m.dispose();
      }
    });
  }
});
