// The compile step (fused weights, SDPA, last-position head; CUDA graphs on a GPU) must not
// change outputs: greedy tokens equal the eager path's on every parity fixture.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qwen3Model, generateTextBasic, generateTextBasicCache } from '../lib/index.js';
import { loadFixture, relativeMaxError, rows } from './support/fixtures.js';

const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';

// bfloat16 runs of tiny-bigvocab have an exact top-2 tie on their greedy path (make_fixtures
// reports gap 0), so any change of summation order may pick the other token: compared in
// float32 only. The other fixtures keep a 0.125 gap in bfloat16.
const CASES = [
  ['tiny-bigvocab', 'float32'],
  ['tiny-gqa4', 'float32'],
  ['tiny-gqa4', 'bfloat16'],
  ['tiny-f16', 'float32'],
  ['tiny-f16', 'bfloat16'],
] as const;

function firstMaxIndex(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

for (const [name, dtype] of CASES) {
  describe(`${name} ${dtype} compiled`, () => {
    const fx = loadFixture(name);
    const run = fx.runs[dtype];
    let model: Qwen3Model;
    beforeAll(async () => {
      model = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype, compile: true });
    });
    afterAll(() => model.dispose());

    it('greedy tokens with and without the cache equal the eager path', async () => {
      const opts = { maxNewTokens: fx.steps, eosTokenId: null };
      expect(model.compiled).toBe(true);
      expect(await generateTextBasicCache(model, fx.prompt, opts)).toEqual(run.ref_greedy_cache);
      expect(await generateTextBasic(model, fx.prompt, opts)).toEqual(run.ref_greedy_nocache);
      expect(model.compileSeconds).toBeGreaterThan(0);
    });

    it('decode-step logits stay within the parity tolerance of the reference at every step', async () => {
      // The one-token path (on the CPU: the AVX512-BF16 GEMV where the CPU has it, the decode
      // attention loop; on CUDA: the fused decode kernels), fed the reference's own tokens.
      const sequence = [...fx.prompt, ...run.hf_greedy];
      const vocab = fx.config.vocab_size;
      const ref = fx.refLogits(dtype);
      const tol = dtype === 'float32' ? 1e-5 : 3e-2;
      await model.resetCache();
      let step = await model.prefill(fx.prompt, { logits: 'last' });
      for (let pos = fx.prompt.length - 1; pos < sequence.length - 1; pos++) {
        expect(relativeMaxError(step.logits!.data, rows(ref, vocab, pos, pos + 1))).toBeLessThan(tol);
        // The greedy token is the first maximum of those logits (on CUDA it comes from the head's own kernel).
        expect(step.next[0]).toBe(firstMaxIndex(step.logits!.data));
        step = await model.decode([sequence[pos + 1]!], { logits: 'last' });
      }
    });

    it('logits stay within the parity tolerance of Hugging Face', async () => {
      const sequence = [...fx.prompt, ...run.hf_greedy];
      const out = await model.forward(sequence);
      expect(relativeMaxError(out.logits!.data, fx.hfLogits(dtype))).toBeLessThan(dtype === 'float32' ? 1e-4 : 3e-2);
      // A prefill returns the last position's logits by default, computed from that row alone.
      await model.resetCache();
      const pre = await model.prefill(sequence, { logits: 'last' });
      const vocab = fx.config.vocab_size;
      expect(pre.logits!.shape).toEqual([1, 1, vocab]);
      const last = rows(out.logits!.data, vocab, sequence.length - 1, sequence.length);
      expect(relativeMaxError(pre.logits!.data, last)).toBeLessThan(dtype === 'float32' ? 1e-5 : 3e-2);
    });
  });
}

describe('compiled model and the KV cache', () => {
  it('continues after a cached prefix (chunked prefill) like one long prefill', async () => {
    const fx = loadFixture('tiny-gqa4');
    const model = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype: 'float32', compile: true });
    try {
      const seq = [...fx.prompt, ...fx.runs.float32.hf_greedy.slice(0, 20)];
      const whole = await model.prefill(seq, { logits: 'all' });
      await model.resetCache();
      await model.prefill(seq.slice(0, 11));
      const tail = await model.prefill(seq.slice(11), { logits: 'all' });
      const vocab = fx.config.vocab_size;
      expect(relativeMaxError(tail.logits!.data, rows(whole.logits!.data, vocab, 11, seq.length))).toBeLessThan(1e-5);
      expect(tail.next).toEqual(whole.next);
    } finally {
      model.dispose();
    }
  });
});

// LoadOptions.warmup (lib/model/warmup.ts): a prompt and decode steps at load (by default on CUDA
// only; asked for here). The model must come out as a fresh one: an empty cache, the same tokens.
describe.each([false, true])('warm-up at load (compile %s)', (compile) => {
  it('leaves an empty cache (buffers kept when compiled) and changes no token', async () => {
    const fx = loadFixture('tiny-bigvocab');  // context_length 256: room for the warm-up's prompt and steps
    const opts = { config: fx.configPath, device: DEVICE, dtype: 'float32', compile } as const;
    const warm = await Qwen3Model.load(fx.modelPath, { ...opts, warmup: true });
    const cold = await Qwen3Model.load(fx.modelPath, { ...opts, warmup: false });
    try {
      expect(warm.cacheLength).toBe(0);
      expect(cold.cacheCapacity).toBe(0);
      // Compiled, the warm-up's buffers stay for the first request; eager, they are freed.
      if (compile) expect(warm.cacheCapacity).toBeGreaterThanOrEqual(fx.config.context_length - 17);
      else expect(warm.cacheCapacity).toBe(0);
      const gen = { maxNewTokens: fx.steps, eosTokenId: null };
      expect(await generateTextBasicCache(warm, fx.prompt, gen)).toEqual(await generateTextBasicCache(cold, fx.prompt, gen));
    } finally {
      warm.dispose();
      cold.dispose();
    }
  });
});
