// Generation edge cases: a long prompt is prefilled in chunks (same tokens as one call, and an
// abort lands between chunks), and generateBatchCache honours an aborted signal and refuses a
// batch too large to hold instead of overflowing the call stack.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidOptionError, Qwen3Model, type Qwen3Config, generateBatchCache, generateStats, generateTextBasicCache } from '../lib/index.js';
import { MAX_BATCH_SIZE, PREFILL_CHUNK_SIZE } from '../lib/generate.js';
import { type NativeModel, native } from '../lib/native.js';
import { loadFixture } from './support/fixtures.js';

const fx = loadFixture('tiny-gqa4'); // vocab 512, context 96
const greedy = fx.runs.float32.hf_greedy;
// The prompt and the first 40 greedy tokens: a 47-token prompt whose continuation is known.
const longPrompt = [...fx.prompt, ...greedy.slice(0, 40)];
const continuation = greedy.slice(40, 60);

/** What the native engine was asked to prefill: tokens per row of each call, in order. */
interface PrefillLog {
  seqs: number[];
  /** Runs after each prefill call has returned, before generation goes on. */
  after?: (call: number) => void;
}

/**
 * Loads the fixture with every native prefill call recorded, by wrapping the handle the addon
 * returns: the deterministic hook that shows where a prompt was cut and lets a test act between
 * two chunks.
 */
async function loadLogged(log: PrefillLog, compile = false, config: Qwen3Config | string = fx.configPath): Promise<Qwen3Model> {
  const binding = native();
  const loadModel = binding.loadModel;
  binding.loadModel = async (request) => {
    const handle: NativeModel = await loadModel.call(binding, request);
    const prefill: NativeModel['prefill'] = async (r) => {
      const out = await handle.prefill(r);
      log.seqs.push(r.seq);
      log.after?.(log.seqs.length);
      return out;
    };
    // The addon's methods are read-only and need the real object as `this`: a proxy that binds.
    return new Proxy(handle, {
      get: (target, key) => {
        if (key === 'prefill') return prefill;
        const value: unknown = Reflect.get(target, key);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  try {
    return await Qwen3Model.load(fx.modelPath, { config, device: 'cpu', dtype: 'float32', compile });
  } finally {
    binding.loadModel = loadModel;
  }
}

const log: PrefillLog = { seqs: [] };
let model: Qwen3Model;

beforeAll(async () => {
  model = await loadLogged(log);
});
afterAll(() => model.dispose());

describe('chunked prefill', () => {
  it('gives the greedy tokens of one prefill call, cut where asked', async () => {
    for (const prefillChunkSize of [1, 5, 8, 46, 47, 96]) {
      log.seqs = [];
      const ids = await generateTextBasicCache(model, longPrompt, { maxNewTokens: 20, eosTokenId: null, prefillChunkSize });
      expect(ids, `chunk ${prefillChunkSize}`).toEqual(continuation);
      const chunks = Array.from({ length: Math.ceil(47 / prefillChunkSize) }, (_, i) => Math.min(prefillChunkSize, 47 - i * prefillChunkSize));
      expect(log.seqs, `chunk ${prefillChunkSize}`).toEqual(chunks);
    }
  });

  it('a prompt longer than PREFILL_CHUNK_SIZE is cut into chunks of that size by default', async () => {
    // The same weights with a longer context (RoPE has no weights, so only the config changes).
    const config = { ...fx.config, context_length: 2048 };
    const longLog: PrefillLog = { seqs: [] };
    const long = await loadLogged(longLog, false, config);
    try {
      const prompt = Array.from({ length: 1200 }, (_, i) => longPrompt[i % longPrompt.length]!);
      const chunked = await generateTextBasicCache(long, prompt, { maxNewTokens: 5, eosTokenId: null });
      expect(longLog.seqs).toEqual([PREFILL_CHUNK_SIZE, PREFILL_CHUNK_SIZE, 1200 - 2 * PREFILL_CHUNK_SIZE]);
      longLog.seqs = [];
      expect(await generateTextBasicCache(long, prompt, { maxNewTokens: 5, eosTokenId: null, prefillChunkSize: 1200 })).toEqual(chunked);
      expect(longLog.seqs).toEqual([1200]);
    } finally {
      long.dispose();
    }
  });

  it('a seeded sample does not depend on the chunking', async () => {
    const opts = { maxNewTokens: 20, eosTokenId: null, temperature: 1.3, topK: 40, seed: 21 };
    const whole = await generateTextBasicCache(model, longPrompt, opts);
    expect(await generateTextBasicCache(model, longPrompt, { ...opts, prefillChunkSize: 6 })).toEqual(whole);
  });

  it('the compiled model gives the same tokens chunked', async () => {
    const compiledLog: PrefillLog = { seqs: [] };
    const compiled = await loadLogged(compiledLog, true);
    try {
      expect(await generateTextBasicCache(compiled, longPrompt, { maxNewTokens: 20, eosTokenId: null, prefillChunkSize: 10 })).toEqual(continuation);
      expect(compiledLog.seqs).toEqual([10, 10, 10, 10, 7]);
    } finally {
      compiled.dispose();
    }
  });

  it('an abort between two chunks stops before the next one and generates nothing', async () => {
    const ac = new AbortController();
    log.seqs = [];
    log.after = (call) => call === 1 && ac.abort();
    try {
      const { ids, stats } = await generateStats(model, longPrompt, { maxNewTokens: 20, eosTokenId: null, prefillChunkSize: 8, signal: ac.signal });
      expect(log.seqs).toEqual([8]);
      expect(ids).toEqual([]);
      expect(stats.aborted).toBe(true);
      expect(stats.generatedTokens).toBe(0);
    } finally {
      log.after = undefined;
    }
    // The half-filled cache is not reused: the next generation starts afresh.
    expect(await generateTextBasicCache(model, longPrompt, { maxNewTokens: 20, eosTokenId: null, prefillChunkSize: 8 })).toEqual(continuation);
  });

  it('batches are cut too, with all left padding and a real token per row in the first chunk', async () => {
    const prompts = [longPrompt, longPrompt.slice(40), longPrompt.slice(30)]; // 47, 7 and 17 tokens: padding 0, 40, 30
    const whole = await generateBatchCache(model, prompts, { maxNewTokens: 12, eosTokenId: null });
    expect(whole[0]).toEqual(continuation.slice(0, 12));
    for (const p of prompts.slice(1)) {
      expect(whole[prompts.indexOf(p)]).toEqual(await generateTextBasicCache(model, p, { maxNewTokens: 12, eosTokenId: null }));
    }
    log.seqs = [];
    expect(await generateBatchCache(model, prompts, { maxNewTokens: 12, eosTokenId: null, prefillChunkSize: 4 })).toEqual(whole);
    // The longest padding is 40, so the first chunk holds 41 tokens; the remaining 6 go 4 at a time.
    expect(log.seqs).toEqual([41, 4, 2]);
    const shortAlone = await generateTextBasicCache(model, longPrompt.slice(20), { maxNewTokens: 12, eosTokenId: null });
    log.seqs = [];
    const batch = await generateBatchCache(model, [longPrompt, longPrompt.slice(20)], { maxNewTokens: 12, eosTokenId: null, prefillChunkSize: 16 });
    expect(batch).toEqual([continuation.slice(0, 12), shortAlone]);
    expect(log.seqs).toEqual([21, 16, 10]);
  });

  it('a batch aborted between chunks returns one empty row per prompt', async () => {
    const ac = new AbortController();
    log.seqs = [];
    log.after = (call) => call === 1 && ac.abort();
    try {
      expect(await generateBatchCache(model, [longPrompt, longPrompt], { maxNewTokens: 10, eosTokenId: null, prefillChunkSize: 8, signal: ac.signal })).toEqual([[], []]);
      expect(log.seqs).toEqual([8]);
    } finally {
      log.after = undefined;
    }
  });

  it('refuses a chunk size outside 1 to context_length', async () => {
    await expect(generateTextBasicCache(model, fx.prompt, { prefillChunkSize: 0 })).rejects.toThrow('Expected integer between 1 and 96 for prefillChunkSize but received 0');
    await expect(generateBatchCache(model, [fx.prompt], { prefillChunkSize: 1.5 })).rejects.toThrow('Expected integer between 1 and 96 for prefillChunkSize but received 1.5');
  });
});

describe('generateBatchCache edges', () => {
  it('an already aborted signal runs nothing and returns one empty row per prompt', async () => {
    log.seqs = [];
    expect(await generateBatchCache(model, [fx.prompt, [5, 6]], { maxNewTokens: 10, signal: AbortSignal.abort() })).toEqual([[], []]);
    expect(log.seqs).toEqual([]);
  });

  it('a batch past the limit is refused by name, not with a stack overflow', async () => {
    const prompts = Array.from({ length: 150_000 }, () => [1, 2]);
    const err = await generateBatchCache(model, prompts, { maxNewTokens: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionError);
    expect((err as Error).message).toBe(`Expected at most ${MAX_BATCH_SIZE} prompts for prompts but received array of length 150000`);
  });

  it('a batch at the limit gets past validation without overflowing the stack', async () => {
    // Every check runs over all rows; the only failure left is the deliberately bad last row.
    const prompts = Array.from({ length: MAX_BATCH_SIZE }, () => [1, 2]);
    prompts[MAX_BATCH_SIZE - 1] = [];
    await expect(generateBatchCache(model, prompts, { maxNewTokens: 1 })).rejects.toThrow('Expected at least one token in every prompt for prompts');
  });
});
