// Calls queued on one model: dispose() rejects them at once, and a stream whose consumer stopped
// pulling cannot hold the model forever (the rule is in Qwen3Model.exclusive's doc comment). No
// test waits a wall-clock time: the idle bound is 0 ms, or driven by fake timers.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { IDLE_HANDOVER_MS, Qwen3Model, generateTextBasicCache, generateTextBasicStreamCache } from '../lib/index.js';
import { native } from '../lib/native.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4');
const big = loadFixture('tiny-bigvocab');
const greedy = fx.runs.float32.hf_greedy;
const OTHER = [5, 6, 7, 8];
const load = (f = fx, extra: object = {}) => Qwen3Model.load(f.modelPath, { config: f.configPath, device: 'cpu', dtype: 'float32', ...extra });
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** Tracks whether a promise has settled, and how. */
function watch<T>(p: Promise<T>) {
  const w = { settled: false, error: undefined as Error | undefined, value: undefined as T | undefined };
  p.then((v) => Object.assign(w, { settled: true, value: v }), (e: Error) => Object.assign(w, { settled: true, error: e }));
  return w;
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('dispose() with calls queued behind an unfinished stream', () => {
  it('rejects every queued call with "Model is disposed" at once; the stream too on its next pull', async () => {
    const model = await load();
    const stream = generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 20, eosTokenId: null });
    expect((await stream.next()).value).toBe(greedy[0]);
    // The stream holds the model and its consumer has gone quiet; three calls line up behind it.
    let ran = false;
    const queued = [
      watch(model.decode([1])),
      watch(generateTextBasicCache(model, OTHER, { maxNewTokens: 3, eosTokenId: null })),
      watch(model.exclusive(async () => {
        ran = true;
      })),
    ];
    model.dispose();
    await turn(); // one turn of the event loop: no native work can have finished, nothing timed out
    for (const q of queued) {
      expect(q.settled).toBe(true);
      expect(q.error?.message).toBe('Model is disposed');
    }
    expect(ran).toBe(false);
    await expect(stream.next()).rejects.toThrow('Model is disposed');
    await expect(model.decode([1])).rejects.toThrow('Model is disposed');
  });

  it('with a step of the stream in flight, the queued calls reject before that step comes back', async () => {
    // Native handles are read-only: watch the decode calls through a proxy to know one is in flight.
    const binding = native();
    const real = binding.loadModel.bind(binding);
    let dispatched!: () => void;
    const inFlight = new Promise<void>((resolve) => (dispatched = resolve));
    vi.spyOn(binding, 'loadModel').mockImplementation(async (request) => {
      const handle = await real(request);
      return new Proxy(handle, {
        get: (target, key) => {
          const value = Reflect.get(target, key) as unknown;
          if (typeof value !== 'function') return value;
          return (...args: unknown[]) => {
            const out = (value as (...a: unknown[]) => unknown).apply(target, args);
            if (key === 'decode') dispatched();
            return out;
          };
        },
      });
    });
    const model = await load(big);
    vi.restoreAllMocks();
    const stream = generateTextBasicStreamCache(model, big.prompt, { maxNewTokens: 20, eosTokenId: null });
    await stream.next();
    const order: string[] = [];
    const pulling = stream.next().then((r) => {
      order.push('stream step');
      return r.value;
    });
    await inFlight; // its decode step is on the thread pool
    const queued = model.forward([1, 2, 3]).catch((e: Error) => {
      order.push('queued call');
      throw e;
    });
    model.dispose();
    await expect(queued).rejects.toThrow('Model is disposed');
    expect(await pulling).toBe(big.runs.float32.hf_greedy[1]); // the step in flight finished normally
    expect(order).toEqual(['queued call', 'stream step']);
    await expect(stream.next()).rejects.toThrow('Model is disposed');
  });
});

describe('an abandoned stream', () => {
  it('a call queued behind a stream that was pulled once completes, and the stream then goes on correctly', async () => {
    const model = await load(fx, { idleHandoverMs: 0 });
    try {
      const alone = await generateTextBasicCache(model, OTHER, { maxNewTokens: 6, eosTokenId: null });
      const stream = generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 10, eosTokenId: null });
      const got = [(await stream.next()).value, (await stream.next()).value];
      // Nobody pulls the stream; this call must not wait for it.
      expect(await generateTextBasicCache(model, OTHER, { maxNewTokens: 6, eosTokenId: null })).toEqual(alone);
      expect(await model.forward(fx.prompt, { logits: 'none' })).toMatchObject({ next: [greedy[0]] });
      // The stream's next pull takes a new turn and rebuilds its KV cache, which the call above replaced.
      for await (const id of stream) got.push(id);
      expect(got).toEqual(greedy.slice(0, 10));
    } finally {
      model.dispose();
    }
  });

  it('return() hands the model over at once, whatever the idle bound', async () => {
    const model = await load();
    try {
      const stream = generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 10, eosTokenId: null });
      await stream.next();
      const queued = watch(generateTextBasicCache(model, OTHER, { maxNewTokens: 2, eosTokenId: null }));
      await stream.return(undefined);
      expect((await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 3, eosTokenId: null }))).toEqual(greedy.slice(0, 3));
      expect(queued.settled && queued.error === undefined).toBe(true);
    } finally {
      model.dispose();
    }
  });

  it(`with the default bound, the waiting call goes first exactly ${IDLE_HANDOVER_MS} ms after the stream's last step`, async () => {
    const model = await load();
    try {
      // Faked from before the stream's step, so that the idle clock starts at a known instant.
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
      const stream = generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 10, eosTokenId: null });
      const got = [(await stream.next()).value];
      let ran = false;
      const queued = watch(model.exclusive(async (s) => {
        ran = true;
        s.resetCache();
        return (await s.prefill(OTHER)).next[0];
      }));
      await vi.advanceTimersByTimeAsync(IDLE_HANDOVER_MS - 1);
      expect(ran).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(ran).toBe(true);
      vi.useRealTimers();
      while (!queued.settled) await turn();
      expect(queued.error).toBeUndefined();
      for await (const id of stream) got.push(id);
      expect(got).toEqual(greedy.slice(0, 10));
    } finally {
      vi.useRealTimers();
      model.dispose();
    }
  });

  it('a stream pulled steadily keeps the model: a waiting call starts only after it ends', async () => {
    const model = await load(fx, { idleHandoverMs: 0 });
    try {
      const stream = generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 8, eosTokenId: null });
      const got = [(await stream.next()).value];
      const order: string[] = [];
      const pull = (async () => {
        for await (const id of stream) {
          got.push(id);
          order.push('stream');
        }
      })();
      const queued = model.exclusive(async () => {
        order.push('other');
      });
      await Promise.all([pull, queued]);
      // Pulled without pause, the stream never sits idle between steps, even with a bound of 0.
      expect(order).toEqual([...new Array(7).fill('stream'), 'other']);
      expect(got).toEqual(greedy.slice(0, 8));
    } finally {
      model.dispose();
    }
  });

  it('an exclusive() holder that goes idle mid-batch gets its padded cache back', async () => {
    const model = await load(fx, { idleHandoverMs: 0 });
    try {
      const rows = [[0, 0, ...fx.prompt.slice(2)], fx.prompt];
      const pad = [2, 0];
      const run = async (pause: () => Promise<void>) => model.exclusive(async (s) => {
        s.resetCache();
        let next = (await s.prefill(rows, 'none', undefined, pad)).next;
        const out = [next];
        await pause();
        for (let i = 0; i < 4; i++) {
          next = (await s.decode(next.map((id) => [id]))).next;
          out.push(next);
        }
        expect(s.cacheLength).toBe(fx.prompt.length + 4);
        return out;
      });
      const uninterrupted = await run(async () => {});
      let other: Promise<unknown> | undefined;
      const interrupted = await run(async () => {
        other = generateTextBasicCache(model, OTHER, { maxNewTokens: 4, eosTokenId: null });
        await other; // this holder waits for a call that waits for it: the idle rule breaks the deadlock
      });
      expect(interrupted).toEqual(uninterrupted);
      expect(uninterrupted.map((r) => r[1])).toEqual(greedy.slice(0, 5));
    } finally {
      model.dispose();
    }
  });

  it('dispose() while the stream is parked rejects its next pull', async () => {
    const model = await load(fx, { idleHandoverMs: 0 });
    const stream = generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 10, eosTokenId: null });
    await stream.next();
    await model.forward([1, 2]); // runs because the stream is parked
    model.dispose();
    await expect(stream.next()).rejects.toThrow('Model is disposed');
  });

  it('refuses a bad idleHandoverMs by name', async () => {
    await expect(load(fx, { idleHandoverMs: -1 })).rejects.toThrow('Expected integer between 0 and 2147483647 for idleHandoverMs but received -1');
  });
});
