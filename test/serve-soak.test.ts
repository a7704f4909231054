// A soak of the server: 1,000 short requests (a two-layer model with a 512-token vocabulary, a
// few tokens each) of random prompt lengths, lengths, streaming and logprobs, eight at a time,
// about a quarter of them abandoned by their client at a random step of their generation. All of
// it is drawn from a seeded RNG, so every run sends the same requests in the same order.
// Asserted: every request ended, either complete (finish_reason, and [DONE] for a stream) or
// aborted by its client; nothing is left queued or running; the server still answers correctly;
// and its resident memory (and its JavaScript heap) after the run exceed what they were after a
// warm-up by less than RSS_MARGIN (and HEAP_MARGIN): see there.
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Qwen3Model, Qwen3Tokenizer, generateTextBasicCache } from '../lib/index.js';
import { type RunningServer, startServer } from '../lib/serve/server.js';
import type { Completer, CompletionRequest, FinishReason, StepHook } from '../lib/serve/completer.js';
import { BatchCompleter } from '../lib/serve/batch.js';
import { parseEvents } from './support/serve.js';

const DIR = join(__dirname, '.fixtures', 'hf-untied-f32');
const REQUESTS = 1000;
const WARM_UP = 100;
const CONCURRENCY = 8;
/**
 * What the process's resident memory may grow by over the 1,000 requests after the warm-up. A
 * request's state (its channel, tokens, chunks, reply and socket; the KV cache is reset for the
 * next one) is garbage once it ends, so nothing has to stay. Without any leak, RSS still moves by
 * up to about 30 MiB either way from one sample to the next here: glibc's per-thread arenas of
 * libtorch's workers and V8's heap grow and shrink in large steps. 64 MiB stays clear of that and
 * still fails a leak of 64 KiB per request, such as a kept response or a socket with its buffers.
 */
const RSS_MARGIN = 64 * 1024 * 1024;
/**
 * The finer check for a leak on the JavaScript side: the V8 heap after a full collection, which
 * settles within a MiB after the warm-up and then stays flat over thousands of requests. 4 MiB
 * fails a leak of 4 KiB per request (a kept token list, listener or closure with its context).
 */
const HEAP_MARGIN = 4 * 1024 * 1024;

/** Wraps a completer to count the completions it started and those that ended, by reason. */
class Tracking implements Completer {
  started = 0;
  readonly ended: Record<FinishReason | 'failed', number> = { stop: 0, length: 0, abort: 0, failed: 0 };
  #waiting: (() => void)[] = [];
  constructor(readonly inner: Completer) {}

  get endedCount(): number {
    return Object.values(this.ended).reduce((a, b) => a + b, 0);
  }

  complete(request: CompletionRequest) {
    const completion = this.inner.complete(request);
    this.started++;
    completion.finish
      .then((o) => this.ended[o.reason]++, () => this.ended.failed++)
      .finally(() => {
        if (this.endedCount === this.started) for (const resolve of this.#waiting.splice(0)) resolve();
      });
    return completion;
  }

  /** Resolves once every completion started so far has ended. */
  idle(): Promise<void> {
    return this.endedCount === this.started ? Promise.resolve() : new Promise((resolve) => this.#waiting.push(resolve));
  }

  stats() {
    return this.inner.stats();
  }

  close(how: 'drain' | 'abort') {
    return this.inner.close(how);
  }
}

let model: Qwen3Model;
let server: RunningServer;
let tracking: Tracking;
/** Client aborts, by request marker: fired when the server reaches the given step of that request. */
const abortAt = new Map<string, { step: number; controller: AbortController }>();

beforeAll(async () => {
  model = await Qwen3Model.load(DIR, { device: 'cpu' });
  const tokenizer = await Qwen3Tokenizer.load({ modelDir: DIR });
  const hook: StepHook = (rows) => {
    for (const { request, generated } of rows) {
      const key = `${request.promptIds[0]},${request.promptIds[1]}`;
      const plan = abortAt.get(key);
      if (plan && plan.step === generated) {
        abortAt.delete(key);
        plan.controller.abort();
      }
    }
  };
  tracking = new Tracking(new BatchCompleter(model, { beforeStep: hook }));
  server = await startServer({ model, tokenizer, port: 0, completer: tracking });
});
afterAll(async () => {
  await server?.close();
  model?.dispose();
});

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Outcome = 'completed' | 'aborted' | `failed: ${string}`;

/** Request `i` of a run drawn from `random`; the first two prompt ids are unique to it (the marker). */
async function send(i: number, random: () => number): Promise<Outcome> {
  const int = (n: number) => Math.floor(random() * n);
  const prompt = [i % 256, 256 + (i >> 8), ...Array.from({ length: int(15) }, () => int(512))];
  const maxTokens = 1 + int(6);
  const stream = random() < 0.5;
  const body = { prompt, max_tokens: maxTokens, temperature: random() < 0.5 ? 0 : 0.8, seed: i, stream, ...(random() < 0.2 ? { logprobs: 3 } : {}) };
  const controller = new AbortController();
  if (random() < 0.25) abortAt.set(`${prompt[0]},${prompt[1]}`, { step: int(maxTokens), controller });
  try {
    const response = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    const text = await response.text();
    if (response.status !== 200) return `failed: ${response.status} ${text}`;
    const last = stream ? parseEvents(text) : { events: [JSON.parse(text)], done: true };
    const finish = (last.events.at(-1) as { choices: { finish_reason: string | null }[] }).choices[0]?.finish_reason;
    return last.done && (finish === 'stop' || finish === 'length') ? 'completed' : `failed: ${text.slice(-200)}`;
  } catch (err) {
    return controller.signal.aborted ? 'aborted' : `failed: ${(err as Error).message}`;
  } finally {
    abortAt.delete(`${prompt[0]},${prompt[1]}`);
  }
}

async function run(count: number, offset: number, seed: number): Promise<Outcome[]> {
  const random = mulberry32(seed);
  // Drawn up front, in order, so that the requests do not depend on which worker sends them.
  const draws = Array.from({ length: count }, () => {
    const values = Array.from({ length: 24 }, random);
    let k = 0;
    return () => values[k++ % values.length]!;
  });
  const outcomes: Outcome[] = new Array(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) {
        const i = next++;
        outcomes[i] = await send(offset + i, draws[i]!);
      }
    }),
  );
  return outcomes;
}

const gc: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();
function settledMemory(): { rss: number; heap: number } {
  gc();
  gc();
  const { rss, heapUsed } = process.memoryUsage();
  return { rss, heap: heapUsed };
}

it(`ends every one of ${REQUESTS} requests with random lengths and client aborts, without leaking`, async () => {
  const warm = await run(WARM_UP, REQUESTS, 1);
  expect(warm.filter((o) => o.startsWith('failed'))).toEqual([]);
  await tracking.idle();
  const before = settledMemory();

  const outcomes = await run(REQUESTS, 0, 2);
  const counts = { completed: 0, aborted: 0 };
  for (const o of outcomes) if (o === 'completed' || o === 'aborted') counts[o]++;
  expect(outcomes.filter((o) => o.startsWith('failed'))).toEqual([]);
  expect(counts.completed + counts.aborted).toBe(REQUESTS);
  expect(counts.aborted).toBeGreaterThan(0);
  // Every completion the server started ends (a client's abort reaches the model loop after the client has moved on).
  await tracking.idle();
  expect(tracking.ended.failed).toBe(0);
  expect(tracking.started).toBe(WARM_UP + REQUESTS);
  expect(server.completer.stats()).toMatchObject({ queued: 0, running: 0 });

  const after = settledMemory();
  expect(after.rss - before.rss).toBeLessThan(RSS_MARGIN);
  expect(after.heap - before.heap).toBeLessThan(HEAP_MARGIN);

  const health = await fetch(`${server.url}/health`);
  expect(health.status).toBe(200);
  const prompt = [5, 6, 7, 8];
  // The folder's end token (<|im_end|>) lies past this model's vocabulary, so nothing stops early.
  const expected = await generateTextBasicCache(model, prompt, { maxNewTokens: 5, eosTokenId: null });
  const r = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 5, temperature: 0, return_token_ids: true }) });
  expect((await r.json()).choices[0].token_ids).toEqual(expected);
}, 300_000);
