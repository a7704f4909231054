// Hugging Face model folders: transformers' own save_pretrained output loads with logits and
// greedy tokens equal to transformers', and corrupt folders, configs and safetensors files are
// refused by name without harming the process.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configFromHuggingFace, readHuggingFaceModel } from '../lib/model/huggingface.js';
import { InvalidOptionError, QWEN_CONFIG_06_B, QWEN_CONFIG_32_B, Qwen3Model, generateTextBasicCache } from '../lib/index.js';
import { memoryShortfall } from '../lib/model/memory.js';
import { native } from '../lib/native.js';

const FIXTURES = join(__dirname, '.fixtures');
// The CUDA host recipe runs this file with QWEN3_TEST_DEVICE=cuda.
const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const NAMES = ['hf-untied-f32', 'hf-tied-f32-sharded', 'hf-tied-bf16-sharded'] as const;
const step = { temperature: 0, topK: 0, topP: 1, uniforms: null };

interface HfReference {
  prompt: number[];
  steps: number;
  tied: boolean;
  runs: Record<'float32' | 'bfloat16', { greedy: number[]; logits_shape: number[] }>;
}
const reference = (name: string): HfReference => JSON.parse(readFileSync(join(FIXTURES, name, 'reference.json'), 'utf8')) as HfReference;

async function loadDir(dir: string, compile = false, dtype = 'float32') {
  const hf = await readHuggingFaceModel(dir);
  const { dtype: _stored, ...config } = hf.config;
  return native().loadModel({ path: dir, config: { ...config, tie_word_embeddings: hf.tieWordEmbeddings }, device: DEVICE, dtype, compile,
                              safetensors: { files: hf.files, tensors: hf.tensors } });
}

describe.each(NAMES)('%s (saved by transformers)', (name) => {
  const dir = join(FIXTURES, name);
  const ref = reference(name);

  it.each([false, true])('float32 logits within 1e-4 of transformers and 50 greedy tokens equal (compile %s)', async (compile) => {
    const model = await loadDir(dir, compile);
    try {
      const ids = Int32Array.from([...ref.prompt, ...ref.runs.float32.greedy]);
      const out = await model.forward({ ids, batch: 1, seq: ids.length, logits: 2, ...step });
      const want = new Float32Array(readFileSync(join(dir, 'hf_logits_float32.f32')).buffer.slice(0));
      expect(out.logits!.length).toBe(want.length);
      let err = 0;
      let scale = 0;
      want.forEach((w, i) => {
        err = Math.max(err, Math.abs(w - out.logits![i]!));
        scale = Math.max(scale, Math.abs(w));
      });
      expect(err / scale).toBeLessThan(1e-4);
      let s = await model.prefill({ ids: Int32Array.from(ref.prompt), batch: 1, seq: ref.prompt.length, logits: 0, ...step });
      const tokens = [s.next[0]!];
      while (tokens.length < ref.steps) {
        s = await model.decode({ ids: Int32Array.from([tokens.at(-1)!]), batch: 1, seq: 1, logits: 0, ...step });
        tokens.push(s.next[0]!);
      }
      expect(tokens).toEqual(ref.runs.float32.greedy);
      expect(ref.steps).toBeGreaterThanOrEqual(50);
    } finally {
      model.dispose();
    }
  });

  it('a tied head is one tensor: the parameters count the embedding table once', async () => {
    const model = await loadDir(dir);
    try {
      const hf = await readHuggingFaceModel(dir);
      const stored = hf.tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
      const c = hf.config;
      const norms = c.emb_dim * (2 * c.n_layers + 1) + 2 * c.head_dim * c.n_layers;  // float32 on the device either way
      expect(model.info().parameterBytes).toBe((stored - norms) * 4 + norms * 4);
      expect(hf.tieWordEmbeddings).toBe(ref.tied);
      expect(hf.tensors.some((t) => t.name === 'lm_head.weight')).toBe(!ref.tied);
    } finally {
      model.dispose();
    }
  });
});

describe('corrupt folders and files are refused by name', () => {
  let work: string;
  const good = join(FIXTURES, 'hf-untied-f32');
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'qwen3-hf-bad-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  // A copy of the good folder whose model.safetensors is replaced by `edit` of its bytes.
  function variant(label: string, edit: (bytes: Buffer) => Buffer): string {
    const dir = join(work, label);
    mkdirSync(dir);
    cpSync(join(good, 'config.json'), join(dir, 'config.json'));
    writeFileSync(join(dir, 'model.safetensors'), edit(readFileSync(join(good, 'model.safetensors'))));
    return dir;
  }
  // The file rebuilt with a header changed by `change`; data offsets count from the data's start.
  function withHeader(change: (header: Record<string, any>) => void): (bytes: Buffer) => Buffer {
    return (bytes) => {
      const n = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, any>;
      change(header);
      const text = Buffer.from(JSON.stringify(header));
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(text.length), 0);
      return Buffer.concat([length, text, bytes.subarray(8 + n)]);
    };
  }
  const firstWeight = 'model.layers.0.self_attn.q_proj.weight';

  it.each([
    ['header length past the file', (b: Buffer) => { const c = Buffer.from(b); c.writeBigUInt64LE(BigInt(b.length), 0); return c; }, /header claims \d+ bytes, more than the file's/],
    ['shorter than 8 bytes', () => Buffer.from([1, 2, 3]), /not a safetensors file/],
    ['header that is not JSON', (b: Buffer) => { const c = Buffer.from(b); c.write('{{{{', 8); return c; }, /header is not JSON/],
    ['unknown dtype', withHeader((h) => { h[firstWeight].dtype = 'F64'; }), /has dtype F64; expected one of F32, F16, BF16/],
    ['huge shape', withHeader((h) => { h[firstWeight].shape = [2 ** 31 - 1, 2 ** 31 - 1]; }), /spans bytes .* not the \d+ its shape and dtype need/],
    ['offsets past the end of the file', withHeader((h) => { const [a, e] = h[firstWeight].data_offsets; h[firstWeight].data_offsets = [a + 1e9, e + 1e9]; }), /past the end of the file/],
    ['overlapping tensors', withHeader((h) => { const names = Object.keys(h).filter((k) => k !== '__metadata__'); h[names[1]!].data_offsets = h[names[0]!].data_offsets; }), /overlap/],
    ['a negative offset', withHeader((h) => { h[firstWeight].data_offsets = [-4, 4]; }), /malformed header entry/],
  ])('%s', async (label, edit, message) => {
    const dir = variant(label.replace(/\W+/g, '-'), edit);
    await expect(loadDir(dir)).rejects.toThrow(message);
  });

  it('a missing or mis-shaped tensor is named by the native loader', async () => {
    const hf = await readHuggingFaceModel(good);
    const { dtype: _d, ...config } = hf.config;
    const request = (tensors: typeof hf.tensors) => native().loadModel({ path: good, config, device: 'cpu', dtype: 'float32', compile: false, safetensors: { files: hf.files, tensors } });
    await expect(request(hf.tensors.filter((t) => t.name !== 'model.norm.weight'))).rejects.toThrow("Safetensors checkpoint is missing tensor 'model.norm.weight'");
    await expect(request(hf.tensors.map((t) => (t.name === firstWeight ? { ...t, shape: [128, 128] } : t)))).rejects.toThrow(/spans \d+ bytes, not the \d+ its shape and dtype need/);
    await expect(request(hf.tensors.map((t) => (t.name === firstWeight ? { ...t, shape: [128, 256] } : t)))).rejects.toThrow(
      "Safetensors checkpoint tensor 'model.layers.0.self_attn.q_proj.weight' has shape [128, 256] but the config needs [256, 128]");
    await expect(request(hf.tensors.map((t) => (t.name === firstWeight ? { ...t, begin: t.begin + 1e12, end: t.end + 1e12 } : t)))).rejects.toThrow(/ends at byte \d+, past the end of/);
    await expect(request(hf.tensors.map((t) => (t.name === firstWeight ? { ...t, dtype: 'I8' as never } : t)))).rejects.toThrow(/has dtype I8: expected F32, F16 or BF16/);
    await expect(request([...hf.tensors, { ...hf.tensors[0]!, name: 'model.layers.0.extra.weight' }])).rejects.toThrow(/unexpected tensor 'model\.layers\.0\.extra\.weight'/);
  });

  it('a shard outside the folder, a missing weights file and a missing config are refused', async () => {
    const sharded = join(work, 'sharded');
    cpSync(join(FIXTURES, 'hf-tied-f32-sharded'), sharded, { recursive: true });
    const indexPath = join(sharded, 'model.safetensors.index.json');
    const index = JSON.parse(readFileSync(indexPath, 'utf8')) as { weight_map: Record<string, string> };
    index.weight_map['model.norm.weight'] = '../../etc/passwd';
    writeFileSync(indexPath, JSON.stringify(index));
    await expect(readHuggingFaceModel(sharded)).rejects.toThrow('names a shard outside the folder: "../../etc/passwd"');
    const empty = join(work, 'no-weights');
    cpSync(good, empty, { recursive: true });
    rmSync(join(empty, 'model.safetensors'));
    await expect(readHuggingFaceModel(empty)).rejects.toThrow('has a config.json but no model.safetensors or model.safetensors.index.json');
    await expect(readHuggingFaceModel(join(work, 'nothing-here'))).rejects.toThrow(/Cannot read .*config\.json/);
  });
});

describe('config.json', () => {
  const base = JSON.parse(readFileSync(join(FIXTURES, 'hf-untied-f32', 'config.json'), 'utf8')) as Record<string, unknown>;
  it('maps both forms: rope_parameters/dtype (transformers 5) and top-level rope_theta/torch_dtype (the Qwen repos)', () => {
    const modern = configFromHuggingFace(base, 'config.json').config;
    const { rope_parameters: _r, dtype: _d, ...rest } = base;
    const legacy = configFromHuggingFace({ ...rest, rope_theta: 1e6, torch_dtype: 'float32', rope_scaling: null }, 'config.json').config;
    expect(legacy).toEqual(modern);
    expect(modern).toMatchObject({ emb_dim: 128, hidden_dim: 256, n_layers: 2, n_heads: 8, n_kv_groups: 2, head_dim: 32, context_length: 96, rope_base: 1e6, dtype: 'float32', qk_norm: true });
  });
  it.each([
    ['a MoE model', { architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe' }, /qwen3_moe.*Qwen3MoeForCausalLM.*runs Qwen3ForCausalLM only/],
    ['another architecture', { architectures: ['LlamaForCausalLM'], model_type: undefined }, /architecture LlamaForCausalLM is not supported/],
    ['rope scaling', { rope_parameters: { rope_type: 'yarn', rope_theta: 1e6, factor: 4 } }, /rope scaling \(yarn\) is not implemented/],
    ['legacy rope scaling', { rope_scaling: { type: 'linear', factor: 2 } }, /rope scaling .*linear.* is not implemented/],
    ['another norm epsilon', { rms_norm_eps: 1e-5 }, /rms_norm_eps 0\.00001 is not supported/],
    ['an unknown dtype', { dtype: 'float8' }, /dtype "float8" is not one of/],
    ['a missing size', { hidden_size: undefined }, /hidden_size/],
  ])('refuses %s', (_label, change, message) => {
    expect(() => configFromHuggingFace({ ...base, ...change }, 'config.json')).toThrow(message);
  });
});

describe('Qwen3Model.load with a folder, and the CLI', () => {
  const dir = join(FIXTURES, 'hf-tied-bf16-sharded');
  const ref = reference('hf-tied-bf16-sharded');

  it('loads with the folder\'s own config and generates transformers\' greedy tokens; bfloat16 logits within the bf16 tolerance', async () => {
    const model = await Qwen3Model.load(dir, { device: DEVICE, dtype: 'float32' });
    try {
      expect(model.config).toMatchObject({ emb_dim: 128, n_layers: 2, dtype: 'bfloat16' });
      expect(await generateTextBasicCache(model, ref.prompt, { maxNewTokens: ref.steps, eosTokenId: null })).toEqual(ref.runs.float32.greedy);
    } finally {
      model.dispose();
    }
    const bf16 = await Qwen3Model.load(dir, { device: DEVICE });
    try {
      expect(bf16.dtype).toBe('bfloat16');
      const ids = [...ref.prompt, ...ref.runs.bfloat16.greedy];
      const out = await bf16.forward([ids], { logits: 'all' });
      const want = new Float32Array(readFileSync(join(dir, 'hf_logits_bfloat16.f32')).buffer.slice(0));
      let err = 0;
      let scale = 0;
      want.forEach((w, i) => {
        err = Math.max(err, Math.abs(w - out.logits!.data[i]!));
        scale = Math.max(scale, Math.abs(w));
      });
      expect(err / scale).toBeLessThan(3e-2);
    } finally {
      bf16.dispose();
    }
  });

  it('qwen3 generate takes the folder\'s sampling settings (generation_config.json) when the flags set none', () => {
    const sampled = mkdtempSync(join(tmpdir(), 'qwen3-hf-sampled-'));
    try {
      cpSync(dir, sampled, { recursive: true });
      writeFileSync(join(sampled, 'generation_config.json'), JSON.stringify({ do_sample: true, temperature: 0.7, top_k: 20, top_p: 0.9 }));
      const run = (folder: string, ...flags: string[]) => {
        const r = spawnSync(process.execPath, [join(__dirname, '..', 'dist', 'cli.js'), 'generate', '--model', folder, '--device', 'cpu', '--dtype', 'float32',
          '--prompt-ids', ref.prompt.join(','), '--max-new-tokens', '20', '--ignore-eos', '--seed', '7', '--json', ...flags], { encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
        return (JSON.parse(r.stdout) as { ids: number[] }).ids;
      };
      const fromFolder = run(sampled);
      expect(fromFolder).toEqual(run(dir, '--temperature', '0.7', '--top-k', '20', '--top-p', '0.9'));
      expect(fromFolder).not.toEqual(ref.runs.float32.greedy.slice(0, 20));
      expect(run(sampled, '--temperature', '0')).toEqual(ref.runs.float32.greedy.slice(0, 20));
    } finally {
      rmSync(sampled, { recursive: true, force: true });
    }
  });

  it('refuses a config option for a folder, which brings its own', async () => {
    await expect(Qwen3Model.load(dir, { config: '0.6B', device: 'cpu' })).rejects.toThrow(InvalidOptionError);
    await expect(Qwen3Model.load(dir, { config: '0.6B', device: 'cpu' })).rejects.toThrow('brings its own config.json');
  });

  it('qwen3 generate --model FOLDER gives the same tokens', () => {
    const r = spawnSync(process.execPath, [join(__dirname, '..', 'dist', 'cli.js'), 'generate', '--model', dir, '--device', DEVICE, '--dtype', 'float32',
      '--prompt-ids', ref.prompt.join(','), '--max-new-tokens', '20', '--ignore-eos', '--json'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { ids: number[] }).ids).toEqual(ref.runs.float32.greedy.slice(0, 20));
  });
});

describe('memory', () => {
  it('a model that cannot fit is refused with the numbers', () => {
    expect(memoryShortfall(QWEN_CONFIG_32_B, 'bfloat16', false, 'cuda:0', 40.2e9)).toMatch(
      /^Qwen3-32B in bfloat16 needs 6\d\.\d GB \(weights 65\.\d GB, KV cache for 4096 tokens 1\.1 GB\); cuda:0 has 40\.2 GB free$/);
    expect(memoryShortfall(QWEN_CONFIG_32_B, 'bfloat16', false, 'cuda:0', 100e9)).toBeNull();
    // Tied heads count the embedding table once.
    const untied = memoryShortfall(QWEN_CONFIG_06_B, 'float32', false, 'cpu', 1e6)!;
    const tied = memoryShortfall(QWEN_CONFIG_06_B, 'float32', true, 'cpu', 1e6)!;
    const weights = (m: string) => Number(/weights ([\d.]+) GB/.exec(m)![1]);
    expect(weights(untied) - weights(tied)).toBeCloseTo((151936 * 1024 * 4) / 1e9, 1);
  });
});

describe('mutated safetensors files', () => {
  // Seeded, so a failing case can be replayed by its index.
  function rng(seed: number) {
    let a = seed >>> 0;
    return (n: number) => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), a | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
    };
  }
  const CASES = 300;
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'qwen3-hf-fuzz-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it(`${CASES} mutations (header bytes, header length, truncation, data bytes) end in a clean error or a model that runs`, async () => {
    const good = join(FIXTURES, 'hf-untied-f32');
    const original = readFileSync(join(good, 'model.safetensors'));
    const headerEnd = 8 + Number(original.readBigUInt64LE(0));
    const counts = { loaded: 0, rejected: 0 };
    const messages = new Set<string>();
    for (let i = 0; i < CASES; i++) {
      const pick = rng(20261130 * 1000 + i);
      const bytes = Buffer.from(original);
      let data = bytes;
      switch (pick(4)) {
        case 0: // bytes of the JSON header
          for (let n = 1 + pick(4); n > 0; n--) bytes[8 + pick(headerEnd - 8)] = pick(256);
          break;
        case 1: // the header's length field
          bytes.writeBigUInt64LE(BigInt([0, 1, headerEnd - 9, headerEnd - 7, 2 ** 40, pick(2 ** 30)][pick(6)]!), 0);
          break;
        case 2: // a truncated file
          data = bytes.subarray(0, pick(bytes.length));
          break;
        default: // the tensor data (the file stays valid)
          for (let n = 1 + pick(8); n > 0; n--) bytes[headerEnd + pick(bytes.length - headerEnd)] = pick(256);
      }
      const dir = join(work, `case-${i}`);
      mkdirSync(dir);
      cpSync(join(good, 'config.json'), join(dir, 'config.json'));
      writeFileSync(join(dir, 'model.safetensors'), data);
      try {
        const model = await loadDir(dir);
        await model.forward({ ids: Int32Array.from([1, 2, 3]), batch: 1, seq: 3, logits: 1, ...step });
        model.dispose();
        counts.loaded++;
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        expect((err as Error).message.length).toBeGreaterThan(10);
        messages.add((err as Error).message.replace(/\d+/g, 'N').replace(/\/[^ ]*\//g, '/'));
        counts.rejected++;
      }
      rmSync(dir, { recursive: true, force: true });
    }
    expect(counts.loaded + counts.rejected).toBe(CASES);
    expect(counts.loaded).toBeGreaterThan(CASES / 10);
    expect(counts.rejected).toBeGreaterThan(CASES / 3);
    expect(messages.size).toBeGreaterThan(5);
  }, 120_000);
});
