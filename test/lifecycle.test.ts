// Lifecycle under pressure: aborting a load, disposing a model mid-generation, exiting the
// process (or terminating a worker thread) while native work is in flight, getters and raw
// native calls racing a step, and memory coming back after dispose().
//
// Queued concurrent generations, two models in one process and aborts during the prefill and
// during decoding are tested in test/generate.test.ts ("one model, several callers", "abort").
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { InvalidOptionError, Qwen3Model, generateStats, generateTextBasicCache, generateTextBasicStreamCache } from '../lib/index.js';
import { type NativeModel, native } from '../lib/native.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4');
const big = loadFixture('tiny-bigvocab'); // 78 MB of float32 weights: slow enough steps, visible memory
const greedy = fx.runs.float32.hf_greedy;
const DIST = join(__dirname, '..', 'dist', 'index.js');
const load = (f = fx, extra: object = {}) => Qwen3Model.load(f.modelPath, { config: f.configPath, device: 'cpu', dtype: 'float32', ...extra });
const rssMiB = () => process.memoryUsage().rss / 2 ** 20;

afterEach(() => vi.restoreAllMocks());

describe('abort during load', () => {
  it('an aborted signal rejects at once with an AbortError, before any native work', async () => {
    const spy = vi.spyOn(native(), 'loadModel');
    const err = await load(fx, { signal: AbortSignal.abort('shutting down') }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('AbortError');
    expect(err.message).toBe(`Loading ${fx.modelPath} was aborted`);
    expect(err.cause).toBe('shutting down');
    expect(spy).not.toHaveBeenCalled();
  });

  it('an abort while the native load runs rejects at once; the model is disposed when it arrives', async () => {
    const binding = native();
    const real = binding.loadModel.bind(binding);
    let arrived: Promise<NativeModel> | undefined;
    let disposeCalls = 0;
    const ac = new AbortController();
    vi.spyOn(binding, 'loadModel').mockImplementation((request) => {
      // Native methods are read-only: count dispose() calls through a proxy instead.
      arrived = real(request).then((handle) => new Proxy(handle, {
        get: (target, key) => {
          const value = Reflect.get(target, key) as unknown;
          if (key === 'dispose') disposeCalls++;
          return typeof value === 'function' ? value.bind(target) : value;
        },
      }));
      queueMicrotask(() => ac.abort()); // the native load has just started on the thread pool
      return arrived;
    });
    const pending = load(big, { signal: ac.signal });
    const err = await pending.catch((e: Error) => e);
    expect(err.name).toBe('AbortError');
    expect(disposeCalls).toBe(0); // rejected before the native load finished...
    const handle = await arrived!;
    await new Promise((resolve) => setImmediate(resolve));
    expect(disposeCalls).toBe(1); // ...and its engine was freed as soon as it did
    expect(() => handle.cacheLength()).toThrow('Model is disposed');
  });

  it('an abort after the load finished changes nothing; an abort of a failing load still says AbortError', async () => {
    const ac = new AbortController();
    const model = await load(fx, { signal: ac.signal });
    ac.abort();
    expect(await generateTextBasicCache(model, fx.prompt, { maxNewTokens: 4, eosTokenId: null })).toEqual(greedy.slice(0, 4));
    model.dispose();

    const unhandled = vi.fn();
    process.on('unhandledRejection', unhandled);
    try {
      const binding = native();
      const real = binding.loadModel.bind(binding);
      const failing = new AbortController();
      let loading: Promise<unknown> | undefined;
      vi.spyOn(binding, 'loadModel').mockImplementation((request) => {
        loading = real(request);
        queueMicrotask(() => failing.abort());
        return loading as Promise<NativeModel>;
      });
      // emb_dim 96 does not fit the checkpoint: the native load fails after the abort.
      const pending = Qwen3Model.load(fx.modelPath, { config: { ...fx.config, emb_dim: 96 }, device: 'cpu', signal: failing.signal });
      await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
      await expect(loading).rejects.toThrow(/but the config needs/);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      process.off('unhandledRejection', unhandled);
    }
  });

  it('rejects a signal that is not an AbortSignal', async () => {
    await expect(load(fx, { signal: 'stop' })).rejects.toThrow(InvalidOptionError);
    await expect(load(fx, { signal: { aborted: true } })).rejects.toThrow('Expected AbortSignal for signal but received object {aborted}');
  });

  it('20 aborted loads of a 78 MB model leave no model behind in memory', async () => {
    const binding = native();
    const real = binding.loadModel.bind(binding);
    const loads: Promise<unknown>[] = [];
    let ac = new AbortController();
    vi.spyOn(binding, 'loadModel').mockImplementation((request) => {
      const loading = real(request);
      loads.push(loading);
      const current = ac;
      queueMicrotask(() => current.abort()); // abort each load once its native part runs
      return loading;
    });
    const before = rssMiB();
    for (let i = 0; i < 20; i++) {
      ac = new AbortController();
      await expect(load(big, { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    }
    await Promise.allSettled(loads); // every abandoned load has finished on the thread pool...
    await new Promise((resolve) => setImmediate(resolve)); // ...and its model has been disposed
    expect(loads).toHaveLength(20);
    expect(rssMiB() - before).toBeLessThan(200); // 20 leaked models would be over 1,500 MiB
  });
});

describe('dispose() during a generation', () => {
  it('the generation rejects with "Model is disposed" after the step in flight; queued callers too', async () => {
    const model = await load();
    const seen: number[] = [];
    const running = generateStats(model, fx.prompt, {
      maxNewTokens: 40,
      eosTokenId: null,
      onToken: (id) => {
        seen.push(id);
        if (seen.length === 3) model.dispose();
      },
    });
    const queued = generateTextBasicCache(model, fx.prompt, { maxNewTokens: 5, eosTokenId: null });
    await expect(running).rejects.toThrow('Model is disposed');
    await expect(queued).rejects.toThrow('Model is disposed');
    expect(seen).toEqual(greedy.slice(0, 3));
    expect(model.disposed).toBe(true);
    expect(() => model.dispose()).not.toThrow(); // twice is fine
  });

  it('disposing while a native step runs: the step finishes, then the stream ends with the error', async () => {
    const model = await load(big);
    const got: number[] = [];
    const stream = generateTextBasicStreamCache(model, big.prompt, { maxNewTokens: 50, eosTokenId: null });
    const consume = (async () => {
      for await (const id of stream) {
        got.push(id);
        if (got.length === 2) setImmediate(() => model.dispose()); // the next step is on the pool by then
      }
    })();
    await expect(consume).rejects.toThrow('Model is disposed');
    expect(got.length).toBeGreaterThanOrEqual(2);
    expect(got.length).toBeLessThanOrEqual(4);
    expect(got).toEqual(big.runs.float32.hf_greedy.slice(0, got.length));
  });

  it('the raw handle keeps its engine for a step in flight and refuses everything after', async () => {
    const handle = await native().loadModel({ path: fx.modelPath, config: fx.config as never, device: 'cpu', dtype: 'float32', compile: false });
    const request = { ids: Int32Array.from(fx.prompt), batch: 1, seq: fx.prompt.length, logits: 0 as const, temperature: 0, topK: 0, topP: 1, uniforms: null };
    const step = handle.prefill(request);
    handle.dispose();
    expect((await step).next[0]).toBe(greedy[0]);
    expect(() => handle.prefill(request)).toThrow('Model is disposed');
    expect(() => handle.info()).toThrow('Model is disposed');
  });
});

describe('one model, racing callers', () => {
  let model: Qwen3Model;
  beforeAll(async () => {
    model = await load();
  });
  afterAll(() => model.dispose());

  it('a stream holds the model: a second stream waits, then gives what it gives alone', async () => {
    const other = [5, 6, 7, 8];
    const alone = await generateTextBasicCache(model, other, { maxNewTokens: 8, eosTokenId: null });
    const a = generateTextBasicStreamCache(model, fx.prompt, { maxNewTokens: 8, eosTokenId: null });
    const b = generateTextBasicStreamCache(model, other, { maxNewTokens: 8, eosTokenId: null });
    const fromA = [(await a.next()).value, (await a.next()).value];
    let bStarted = false;
    const firstOfB = b.next().then((r) => {
      bStarted = true;
      return r.value;
    });
    for await (const id of a) {
      fromA.push(id);
      await new Promise((resolve) => setImmediate(resolve)); // give B every chance to cut in
      expect(bStarted).toBe(false);
    }
    expect(fromA).toEqual(greedy.slice(0, 8));
    const fromB = [await firstOfB];
    for await (const id of b) fromB.push(id);
    expect(fromB).toEqual(alone);
  });

  it('getters answer while a step runs, without waiting for it or crashing', async () => {
    const running = generateTextBasicCache(model, fx.prompt, { maxNewTokens: 30, eosTokenId: null });
    const lengths: number[] = [];
    while (lengths.length < 50) {
      lengths.push(model.cacheLength);
      expect(model.cacheCapacity).toBeGreaterThanOrEqual(model.cacheLength);
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await running).toEqual(greedy.slice(0, 30));
    expect(lengths.every((n) => Number.isInteger(n) && n >= 0 && n <= fx.prompt.length + 30)).toBe(true);
  });

  it('raw native steps sent together are serialised by the engine; a reset before their Promises settle is refused', async () => {
    const handle = await native().loadModel({ path: fx.modelPath, config: fx.config as never, device: 'cpu', dtype: 'float32', compile: false });
    try {
      const request = { ids: Int32Array.from(fx.prompt), batch: 1, seq: fx.prompt.length, logits: 2 as const, temperature: 0, topK: 0, topP: 1, uniforms: null };
      const steps = [handle.forward(request), handle.forward(request), handle.forward(request)];
      expect(() => handle.resetCache(false)).toThrow('Model is busy: cannot reset the KV cache during a step');
      const [x, y, z] = await Promise.all(steps);
      expect(Buffer.from(y!.logits!.buffer).equals(Buffer.from(x!.logits!.buffer))).toBe(true);
      expect(Buffer.from(z!.logits!.buffer).equals(Buffer.from(x!.logits!.buffer))).toBe(true);
      // Busy lasts from the call until the Promise settles, whatever the engine thread has done
      // meanwhile: once every step is awaited, a reset goes through.
      expect(() => handle.resetCache(false)).not.toThrow();
      expect(handle.cacheLength()).toBe(0);
    } finally {
      handle.dispose();
    }
  });
});

describe('memory comes back', () => {
  it('30 load/dispose cycles of a 78 MB model do not grow the process', async () => {
    const warm = await load(big);
    warm.dispose();
    const before = rssMiB();
    for (let i = 0; i < 30; i++) (await load(big)).dispose();
    expect(rssMiB() - before).toBeLessThan(200); // 30 leaked models would be 2,300 MiB
  });
});

/** Runs `code` in a fresh Node process with DIST and fixture paths defined. */
function child(code: string, timeout = 60_000) {
  const prelude = `const lib = require(${JSON.stringify(DIST)}); const big = ${JSON.stringify({ model: big.modelPath, config: big.configPath })};
const loadBig = () => lib.Qwen3Model.load(big.model, { config: big.config, device: 'cpu', dtype: 'float32' });
const longPrompt = Array.from({ length: 256 }, (_, i) => (i * 7919) % 151936);\n`;
  const r = spawnSync(process.execPath, ['-e', prelude + code], { encoding: 'utf8', timeout });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

const CRASH = /Aborted|Segmentation fault|terminate called|core dumped|FATAL ERROR|Assertion/;

describe('exit while native work is in flight', { timeout: 60_000 }, () => {
  it('process.exit() during a forward pass exits with its code, no crash', () => {
    // A 256-token forward over a 151,936-word vocabulary takes well over the 50 ms it is given.
    const r = child(`loadBig().then((m) => { m.forward(longPrompt); setTimeout(() => { console.log('exit'); process.exit(7); }, 50); });`);
    expect(r.stderr).not.toMatch(CRASH);
    expect([r.status, r.signal, r.stdout.trim()]).toEqual([7, null, 'exit']);
  });

  it('process.exit() during a load and during a generation', () => {
    const duringLoad = child(`loadBig(); setImmediate(() => process.exit(5));`);
    expect(duringLoad.stderr).not.toMatch(CRASH);
    expect([duringLoad.status, duringLoad.signal]).toEqual([5, null]);
    const duringGeneration = child(`loadBig().then((m) => {
      lib.generateTextBasicCache(m, [1, 2, 3], { maxNewTokens: 200, eosTokenId: null });
      setTimeout(() => process.exit(0), 100);
    });`);
    expect(duringGeneration.stderr).not.toMatch(CRASH);
    expect([duringGeneration.status, duringGeneration.signal]).toEqual([0, null]);
  });

  it('an uncaught exception while a step runs ends the process the usual way', () => {
    const r = child(`loadBig().then((m) => { m.forward(longPrompt); setTimeout(() => { throw new Error('boom'); }, 50); });`);
    expect(r.stderr).toContain('Error: boom');
    expect(r.stderr).not.toMatch(CRASH);
    expect([r.status, r.signal]).toEqual([1, null]);
  });

  // A worker thread's environment is torn down while its steps run on the shared thread pool;
  // Node finishes them first and then completes them with JavaScript disabled. The worker never
  // ends on its own (the interval), so it is alive whenever it is terminated, however fast it ran.
  const inWorker = (body: string) => `const { Worker } = require('node:worker_threads');
const w = new Worker(\`const lib = require(\${JSON.stringify(${JSON.stringify(DIST)})});
  const { parentPort } = require('node:worker_threads');
  setInterval(() => {}, 1000);
  lib.Qwen3Model.load(${JSON.stringify(big.modelPath)}, { config: ${JSON.stringify(big.configPath)}, device: 'cpu', dtype: 'float32' }).then((m) => {
    parentPort.postMessage('loaded');
    m.forward(Array.from({ length: 256 }, (_, i) => i));
    lib.generateTextBasicCache(m, [1, 2, 3], { maxNewTokens: 200, eosTokenId: null }).catch(() => {});
    setTimeout(() => { if (process.env.WORKER_EXITS) process.exit(3); }, 50);
  });\`, { eval: true, env: process.env });
w.on('error', (e) => console.log('worker error', e.message));
${body}`;

  it('worker.terminate() mid-generation: the process lives on, and the main thread still generates', () => {
    const r = child(inWorker(`w.on('message', () => setTimeout(async () => {
      console.log('terminated with', await w.terminate());
      const m = await loadBig();
      console.log('main ids', (await lib.generateTextBasicCache(m, [1, 2, 3], { maxNewTokens: 3, eosTokenId: null })).length);
    }, 50));`));
    expect(r.stderr).not.toMatch(CRASH);
    expect(r.stdout).toBe('terminated with 1\nmain ids 3\n');
    expect([r.status, r.signal]).toEqual([0, null]);
  });

  it('process.exit() inside a worker mid-generation, and process.exit() in main while a worker generates', () => {
    const workerExits = spawnSync(process.execPath, ['-e', inWorker(`w.on('exit', (code) => console.log('worker exit', code));`)], {
      encoding: 'utf8',
      env: { ...process.env, WORKER_EXITS: '1' },
      timeout: 60_000,
    });
    expect(workerExits.stderr).not.toMatch(CRASH);
    expect([workerExits.status, workerExits.stdout]).toEqual([0, 'worker exit 3\n']);
    const mainExits = child(inWorker(`w.on('message', () => setTimeout(() => process.exit(4), 50));`));
    expect(mainExits.stderr).not.toMatch(CRASH);
    expect([mainExits.status, mainExits.signal]).toEqual([4, null]);
  });
});
