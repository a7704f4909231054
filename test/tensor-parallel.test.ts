// Tensor parallelism (parallel/shard.h): a model split over ranks must be the model. On this
// CPU-only machine the ranks are threads ("cpu" repeated), which checks the split itself: each
// rank's heads, hidden units and vocabulary rows, the sums after the row-parallel products and
// the gathered logits. The CUDA host recipe runs this file with QWEN3_TEST_DEVICES=cuda:0,cuda:1
// (NCCL) and QWEN3_TEST_DEVICE=cuda:0 for the one-device model it is compared with.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchScheduler, Qwen3Model, generateBatchCache, generateTextBasicCache } from '../lib/index.js';
import type { SequenceStream } from '../lib/batch/scheduler.js';
import { resolveRanks } from '../lib/model/load.js';
import { native } from '../lib/native.js';
import { FIXTURES_DIR, loadFixture, relativeMaxError } from './support/fixtures.js';
import { runCli } from './support/run-cli.js';

const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const DEVICES = (process.env.QWEN3_TEST_DEVICES ?? 'cpu,cpu').split(',');
const fx = loadFixture('tiny-gqa4');  // 8 query heads, 2 key/value heads: two ranks of one group each
const PROMPT = [1, 17, 42, 99, 256, 300, 511];

async function ids(stream: SequenceStream): Promise<number[]> {
  const out: number[] = [];
  for await (const t of stream) out.push(t.id);
  return out;
}

describe.each([false, true])('two ranks against one device, float32 (compile %s)', (compile) => {
  let one: Qwen3Model;
  let two: Qwen3Model;
  beforeAll(async () => {
    one = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype: 'float32', compile });
    two = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, devices: DEVICES, dtype: 'float32', compile });
  });
  afterAll(() => {
    one?.dispose();
    two?.dispose();
  });

  it('runs on both devices and holds each block once across them', () => {
    expect(two.devices).toEqual(resolveRanks({ devices: DEVICES }));
    expect(two.device).toBe(two.devices[0]);
    const c = fx.config;
    // Each rank holds the whole embedding table, head and norms, and half of every block's matrices.
    const table = c.vocab_size * c.emb_dim * 4;
    const norms = (c.emb_dim * (2 * c.n_layers + 1) + 2 * c.head_dim * c.n_layers) * 4;
    expect(two.parameterBytes).toBe(one.parameterBytes + table + norms);
  });

  it('logits of every position within 1e-5 of one device, and 60 greedy tokens equal', async () => {
    const prompt = [...PROMPT, ...(await generateTextBasicCache(one, PROMPT, { maxNewTokens: 40, eosTokenId: null }))];
    const a = await one.forward(prompt);
    const b = await two.forward(prompt);
    expect(b.logits!.shape).toEqual(a.logits!.shape);
    expect(relativeMaxError(b.logits!.data, a.logits!.data)).toBeLessThan(1e-5);
    const want = await generateTextBasicCache(one, PROMPT, { maxNewTokens: 60, eosTokenId: null });
    expect(await generateTextBasicCache(two, PROMPT, { maxNewTokens: 60, eosTokenId: null })).toEqual(want);
  });

  it('seeded sampling draws the same tokens (every rank samples the same gathered logits)', async () => {
    const sampling = { temperature: 0.8, topK: 50, topP: 0.9, seed: 99 };
    const want = await generateTextBasicCache(one, PROMPT, { maxNewTokens: 30, eosTokenId: null, ...sampling });
    expect(await generateTextBasicCache(two, PROMPT, { maxNewTokens: 30, eosTokenId: null, ...sampling })).toEqual(want);
  });

  it('a left-padded batch of prompts of different lengths equals one device', async () => {
    const prompts = [PROMPT, [5, 6, 7], [400, 401, 402, 403, 404, 405, 406, 407, 408, 409]];
    const want = await generateBatchCache(one, prompts, { maxNewTokens: 20, eosTokenId: null });
    expect(await generateBatchCache(two, prompts, { maxNewTokens: 20, eosTokenId: null })).toEqual(want);
  });

  it('continuous batching over sequence slots gives each sequence its own generation', async () => {
    const list = [PROMPT, [3, 9, 27, 81], [100, 200, 300, 400, 500, 11, 22, 33, 44], [7]];
    const expected = [];
    for (const p of list) expected.push(await generateTextBasicCache(one, p, { maxNewTokens: 12, eosTokenId: null }));
    const scheduler = new BatchScheduler(two, { maxBatch: 3, prefillChunk: 5 });
    const got = await Promise.all(list.map((p) => ids(scheduler.submit({ promptIds: p, maxTokens: 12 }))));
    expect(got).toEqual(expected);
    await scheduler.close();
  });

});

describe('a step that every rank refuses', () => {
  it('is an error for that call only: the ranks still agree and keep working', async () => {
    const handle = await native().loadModel({ path: fx.modelPath, config: fx.config as never, device: DEVICES[0]!, devices: DEVICES, dtype: 'float32', compile: true });
    const single = await native().loadModel({ path: fx.modelPath, config: fx.config as never, device: DEVICE, dtype: 'float32', compile: true });
    try {
      const step = (ids: number[]) => ({ ids: Int32Array.from(ids), batch: 1, seq: ids.length, logits: 0 as const, temperature: 0, topK: 0, topP: 1, uniforms: null });
      const half = Array.from({ length: 60 }, (_, i) => (i * 7) % 500);
      await handle.prefill(step(half));
      // Past the context only once the 60 cached tokens count: refused by the engine on each rank.
      await expect(handle.prefill(step(half))).rejects.toThrow(/Context length exceeded/);
      expect(handle.cacheLength()).toBe(60);
      const next = await handle.prefill(step(PROMPT));
      const want = await single.prefill(step([...half, ...PROMPT]));
      expect([...next.next]).toEqual([...want.next]);
      expect(handle.info().devices).toEqual(DEVICES);
      expect(handle.info().transport).toBe(DEVICES[0] === 'cpu' ? 'threads' : 'nccl');
    } finally {
      handle.dispose();
      single.dispose();
    }
  });
});

describe('a tied Hugging Face model split in two (the head is a slice of the embedding table)', () => {
  const dir = join(FIXTURES_DIR, 'hf-tied-f32-sharded');
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { prompt: number[]; runs: { float32: { greedy: number[] } } };

  it('float32 logits within 1e-4 of transformers and its 50 greedy tokens', async () => {
    const model = await Qwen3Model.load(dir, { devices: DEVICES, dtype: 'float32', compile: true });
    try {
      const all = [...ref.prompt, ...ref.runs.float32.greedy];
      const out = await model.forward(all);
      const want = new Float32Array(readFileSync(join(dir, 'hf_logits_float32.f32')).buffer.slice(0));
      expect(relativeMaxError(out.logits!.data, want)).toBeLessThan(1e-4);
      expect(await generateTextBasicCache(model, ref.prompt, { maxNewTokens: 50, eosTokenId: null })).toEqual(ref.runs.float32.greedy);
      expect(model.tieWordEmbeddings).toBe(true);
    } finally {
      model.dispose();
    }
  });
});

describe('tensor-parallel options', () => {
  it('refuses a split the model does not divide into, naming the number', async () => {
    // tiny-gqa4 has 2 key/value heads.
    await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, devices: ['cpu', 'cpu', 'cpu', 'cpu'], dtype: 'float32' })).rejects.toThrow(
      'Tensor parallelism over 4 devices needs the number of key/value heads (2) to be a multiple of 4',
    );
    await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu', tensorParallel: 3, dtype: 'float32' })).rejects.toThrow(
      /needs the number of key\/value heads \(2\) to be a multiple of 3/,
    );
  });

  it('tensorParallel N on the CPU means N CPU ranks; 1 means one device', () => {
    expect(resolveRanks({ device: 'cpu', tensorParallel: 2 })).toEqual(['cpu', 'cpu']);
    expect(resolveRanks({ device: 'cpu', tensorParallel: 1 })).toEqual(['cpu']);
    expect(resolveRanks({ devices: ['cpu'] })).toEqual(['cpu']);
  });

  it('refuses contradictory or unusable device lists with a message that names them', () => {
    expect(() => resolveRanks({ device: 'cpu', devices: ['cpu', 'cpu'] })).toThrow('Give device (one device) or devices (tensor parallel), not both');
    expect(() => resolveRanks({ devices: ['cpu', 'cpu'], tensorParallel: 3 })).toThrow(
      'tensorParallel (3) must equal the number of devices (2) when both are given',
    );
    expect(() => resolveRanks({ devices: ['cuda', 'cpu'] })).toThrow(/Expected a CUDA device with its index \("cuda:0", "cuda:1", \.\.\.\) for devices\[0\] but received "cuda"/);
    expect(() => resolveRanks({ devices: ['cpu', 'gpu'] })).toThrow(/for devices\[1\] but received "gpu"/);
  });

  it('checks the options with zod before anything loads', async () => {
    await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, devices: [] as string[] })).rejects.toThrow(/devices/);
    await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, tensorParallel: 0 })).rejects.toThrow(/tensorParallel/);
  });
});

describe('the CLI', () => {
  const generate = (flags: string[]) =>
    runCli(['generate', '--random-weights', '5', '--config', fx.configPath, '--dtype', 'float32', '--prompt-ids', PROMPT.join(','),
      '--max-new-tokens', '15', '--ignore-eos', '--json', ...flags]);

  it('--devices and --tensor-parallel generate what one device generates', async () => {
    const one = await generate(['--device', 'cpu']);
    expect(one.status).toBe(0);
    const want = (JSON.parse(one.stdout) as { ids: number[] }).ids;
    expect(want).toHaveLength(15);
    for (const flags of [['--devices', 'cpu,cpu'], ['--device', 'cpu', '--tensor-parallel', '2']]) {
      const r = await generate(flags);
      expect(r.stderr).toBe('');
      expect((JSON.parse(r.stdout) as { ids: number[] }).ids).toEqual(want);
    }
  });

  it('refuses --device with --devices, and a split that does not divide', async () => {
    const both = await generate(['--device', 'cpu', '--devices', 'cpu,cpu']);
    expect(both.status).not.toBe(0);
    expect(both.stderr).toContain('Use either --device (one device) or --devices (tensor parallelism), not both');
    const three = await generate(['--devices', 'cpu,cpu,cpu']);
    expect(three.status).not.toBe(0);
    expect(three.stderr).toContain('Tensor parallelism over 3 devices needs the number of key/value heads (2) to be a multiple of 3');
  });
});
