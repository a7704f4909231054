// Hugging Face model folders (what `save_pretrained` writes and the Hub serves): config.json
// mapped to the engine's config, and the safetensors files' headers read into the list of
// tensors the native loader reads by offset. Only Qwen3ForCausalLM is accepted; anything the
// engine does not run is refused by name.
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { DTYPES, type Dtype, type Qwen3Config, parseConfig } from '../config.js';
import type { NativeStoredTensor } from '../native.js';

/** A Hugging Face Qwen3 folder, read: the config, whether the head is tied, and the tensors. */
export interface HuggingFaceModel {
  dir: string;
  config: Qwen3Config;
  tieWordEmbeddings: boolean;
  files: string[];
  tensors: NativeStoredTensor[];
}

/** True when `dir` is a folder holding a config.json (a Hugging Face model folder). */
export async function isHuggingFaceDir(dir: string): Promise<boolean> {
  try {
    return (await stat(dir)).isDirectory() && (await stat(join(dir, 'config.json'))).isFile();
  } catch {
    return false;
  }
}

const TORCH_DTYPES: Record<string, Dtype> = { bfloat16: 'bfloat16', float32: 'float32', float16: 'float16', float: 'float32', half: 'float16' };

const hfConfigSchema = z
  .object({
    architectures: z.array(z.string()).optional(),
    model_type: z.string().optional(),
    vocab_size: z.number(),
    hidden_size: z.number(),
    intermediate_size: z.number(),
    num_hidden_layers: z.number(),
    num_attention_heads: z.number(),
    num_key_value_heads: z.number().optional(),
    head_dim: z.number().optional(),
    max_position_embeddings: z.number(),
    rms_norm_eps: z.number().optional(),
    rope_theta: z.number().optional(),
    rope_scaling: z.unknown().optional(),
    rope_parameters: z.object({ rope_theta: z.number().optional(), rope_type: z.string().optional() }).passthrough().nullable().optional(),
    tie_word_embeddings: z.boolean().optional(),
    torch_dtype: z.string().nullable().optional(),
    dtype: z.string().nullable().optional(),
    hidden_act: z.string().optional(),
    attention_bias: z.boolean().optional(),
    use_sliding_window: z.boolean().optional(),
  })
  .passthrough();

/** config.json (either the Qwen repos' form or the one transformers 5 writes) as the engine's config. */
export function configFromHuggingFace(json: unknown, where: string): { config: Qwen3Config; tieWordEmbeddings: boolean } {
  const parsed = hfConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${where}: expected ${issue.path.join('.') || 'an object'} to be ${issue.message.replace(/^Invalid input: expected /, '')}`);
  }
  const c = parsed.data;
  const arch = c.architectures ?? [];
  if (c.model_type !== undefined && c.model_type !== 'qwen3') {
    throw new Error(`${where}: model_type "${c.model_type}" (${arch.join(', ') || 'no architecture'}) is not a dense Qwen3 model; qwen3-torch runs Qwen3ForCausalLM only`);
  }
  if (arch.length > 0 && !arch.includes('Qwen3ForCausalLM')) {
    throw new Error(`${where}: architecture ${arch.join(', ')} is not supported; qwen3-torch runs Qwen3ForCausalLM only`);
  }
  const ropeType = c.rope_parameters?.rope_type ?? 'default';
  if (ropeType !== 'default' || (c.rope_scaling !== undefined && c.rope_scaling !== null)) {
    throw new Error(`${where}: rope scaling (${ropeType !== 'default' ? ropeType : JSON.stringify(c.rope_scaling)}) is not implemented; only the default RoPE is`);
  }
  if (c.rms_norm_eps !== undefined && c.rms_norm_eps !== 1e-6) throw new Error(`${where}: rms_norm_eps ${c.rms_norm_eps} is not supported; Qwen3 uses 1e-6`);
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu') throw new Error(`${where}: hidden_act "${c.hidden_act}" is not supported; Qwen3 uses silu`);
  if (c.attention_bias) throw new Error(`${where}: attention_bias is not supported; Qwen3 has none`);
  if (c.use_sliding_window) throw new Error(`${where}: sliding-window attention is not supported`);
  const dtypeName = c.dtype ?? c.torch_dtype ?? 'bfloat16';
  const dtype = TORCH_DTYPES[dtypeName];
  if (!dtype) throw new Error(`${where}: dtype "${dtypeName}" is not one of ${DTYPES.join(', ')}`);
  const config = parseConfig({
    vocab_size: c.vocab_size,
    context_length: c.max_position_embeddings,
    emb_dim: c.hidden_size,
    n_heads: c.num_attention_heads,
    n_layers: c.num_hidden_layers,
    hidden_dim: c.intermediate_size,
    head_dim: c.head_dim ?? c.hidden_size / c.num_attention_heads,
    qk_norm: true,
    n_kv_groups: c.num_key_value_heads ?? c.num_attention_heads,
    rope_base: c.rope_parameters?.rope_theta ?? c.rope_theta ?? 1_000_000,
    dtype,
  });
  return { config, tieWordEmbeddings: c.tie_word_embeddings ?? false };
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`Cannot read ${path}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** The largest safetensors header read (the format's own readers cap it at 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;
const SAFETENSORS_DTYPES = ['F32', 'F16', 'BF16'] as const;
const ELEMENT_BYTES = { F32: 4, F16: 2, BF16: 2 } as const;

const tensorEntry = z.object({
  dtype: z.string(),
  shape: z.array(z.number().int().min(0).max(2 ** 31 - 1)).max(8),
  data_offsets: z.tuple([z.number().int().min(0), z.number().int().min(0)]),
});

/** The tensors of one safetensors file, with absolute byte ranges, checked against the file. */
export async function readSafetensorsHeader(path: string, file: number): Promise<NativeStoredTensor[]> {
  const handle = await open(path, 'r').catch((err: Error) => {
    throw new Error(`Cannot open ${path}: ${err.message}`);
  });
  try {
    const size = (await handle.stat()).size;
    const prefix = Buffer.alloc(8);
    if (size < 8 || (await handle.read(prefix, 0, 8, 0)).bytesRead !== 8) throw new Error(`${path} is not a safetensors file (shorter than its 8-byte header length)`);
    const headerBytes = prefix.readBigUInt64LE(0);
    if (headerBytes > BigInt(Math.min(MAX_HEADER_BYTES, size - 8))) {
      throw new Error(`${path} is not a valid safetensors file: its header claims ${headerBytes} bytes, more than the file's ${size - 8} (or the 100 MB limit)`);
    }
    const header = Buffer.alloc(Number(headerBytes));
    await handle.read(header, 0, header.length, 8);
    let json: unknown;
    try {
      json = JSON.parse(header.toString('utf8'));
    } catch (err) {
      throw new Error(`${path} is not a valid safetensors file: its header is not JSON (${(err as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${path} is not a valid safetensors file: its header is not an object`);
    const dataStart = 8 + header.length;
    const tensors: NativeStoredTensor[] = [];
    for (const [name, value] of Object.entries(json)) {
      if (name === '__metadata__') continue;
      const entry = tensorEntry.safeParse(value);
      if (!entry.success) throw new Error(`${path}: tensor "${name}" has a malformed header entry (${entry.error.issues[0]!.path.join('.')}: ${entry.error.issues[0]!.message})`);
      const { dtype, shape, data_offsets: [begin, end] } = entry.data;
      if (!(SAFETENSORS_DTYPES as readonly string[]).includes(dtype)) {
        throw new Error(`${path}: tensor "${name}" has dtype ${dtype}; expected one of ${SAFETENSORS_DTYPES.join(', ')}`);
      }
      const bytes = shape.reduce((n, d) => n * d, ELEMENT_BYTES[dtype as keyof typeof ELEMENT_BYTES]);
      if (end < begin || end - begin !== bytes) throw new Error(`${path}: tensor "${name}" spans bytes ${begin}..${end}, not the ${bytes} its shape and dtype need`);
      if (dataStart + end > size) throw new Error(`${path}: tensor "${name}" ends at byte ${dataStart + end}, past the end of the file (${size} bytes)`);
      tensors.push({ name, file, dtype: dtype as NativeStoredTensor['dtype'], shape, begin: dataStart + begin, end: dataStart + end });
    }
    // Ranges may not overlap: each byte of the data belongs to one tensor at most.
    const sorted = [...tensors].sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]!.begin < sorted[i - 1]!.end) throw new Error(`${path}: tensors "${sorted[i - 1]!.name}" and "${sorted[i]!.name}" overlap`);
    }
    return tensors;
  } finally {
    await handle.close();
  }
}

/** Reads a Hugging Face Qwen3 folder: config.json, and model.safetensors or its index and shards. */
export async function readHuggingFaceModel(dir: string): Promise<HuggingFaceModel> {
  const { config, tieWordEmbeddings } = configFromHuggingFace(await readJson(join(dir, 'config.json')), join(dir, 'config.json'));
  let files: string[];
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (await stat(indexPath).then((s) => s.isFile(), () => false)) {
    const index = z.object({ weight_map: z.record(z.string(), z.string()) }).safeParse(await readJson(indexPath));
    if (!index.success) throw new Error(`${indexPath} has no weight_map of tensor names to files`);
    const shards = [...new Set(Object.values(index.data.weight_map))].sort();
    for (const shard of shards) {
      if (shard.includes('/') || shard.includes('\\') || shard.startsWith('.')) throw new Error(`${indexPath} names a shard outside the folder: "${shard}"`);
    }
    files = shards.map((f) => join(dir, f));
  } else if (await stat(join(dir, 'model.safetensors')).then((s) => s.isFile(), () => false)) {
    files = [join(dir, 'model.safetensors')];
  } else {
    throw new Error(`${dir} has a config.json but no model.safetensors or model.safetensors.index.json`);
  }
  const tensors = (await Promise.all(files.map((f, i) => readSafetensorsHeader(f, i)))).flat();
  return { dir, config, tieWordEmbeddings, files, tensors };
}
