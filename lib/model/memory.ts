// How much memory a generation needs at least, from the config alone, so that work which cannot
// fit is refused up front with the numbers instead of being killed by the kernel half-way. The
// figures are lower bounds: they count the weights, the KV cache, one step's logits and the
// activations of one pass, not allocator slack or temporary copies.
import { freemem } from 'node:os';
import { type Dtype, MODEL_SIZES, type Qwen3Config } from '../config.js';
import { native } from '../native.js';

export interface MemoryEstimate {
  weights: number;
  kvCache: number;
  logits: number;
  activations: number;
  total: number;
}

const DTYPE_BYTES: Record<Dtype, number> = { float32: 4, bfloat16: 2, float16: 2 };

/** The KV cache grows in blocks of this many positions (native/kv_cache.cc). */
const KV_BLOCK = 64;

/** Parameters of the model: embedding, output head (none of its own when tied) and every block's weights. */
export function parameterCount(c: Qwen3Config, tied = false): number {
  const attention = c.emb_dim * c.head_dim * (2 * c.n_heads + 2 * c.n_kv_groups) + (c.qk_norm ? 2 * c.head_dim : 0);
  const feedForward = 3 * c.emb_dim * c.hidden_dim;
  return (tied ? 1 : 2) * c.vocab_size * c.emb_dim + c.n_layers * (attention + feedForward + 2 * c.emb_dim) + c.emb_dim;
}

/**
 * Memory for `batch` rows of `tokens` positions in the KV cache, a forward pass over `passTokens`
 * positions per row (the longest single call), and the logits of one position per row.
 */
export function estimateGenerationMemory(c: Qwen3Config, dtype: Dtype, work: { batch: number; tokens: number; passTokens: number }, tied = false): MemoryEstimate {
  const bytes = DTYPE_BYTES[dtype];
  const weights = parameterCount(c, tied) * bytes;
  const positions = Math.ceil(work.tokens / KV_BLOCK) * KV_BLOCK;
  const kvCache = 2 * c.n_layers * work.batch * c.n_kv_groups * c.head_dim * positions * bytes;
  // Logits in the compute dtype and their float32 copy.
  const logits = work.batch * c.vocab_size * (bytes + 4);
  // Per position: the residual stream and its norm, queries/keys/values, the attention output and
  // the three feed-forward products.
  const perPosition = 3 * c.emb_dim + (c.n_heads + 2 * c.n_kv_groups) * c.head_dim + c.n_heads * c.head_dim + 3 * c.hidden_dim;
  const activations = work.batch * work.passTokens * perPosition * bytes;
  return { weights, kvCache, logits, activations, total: weights + kvCache + logits + activations };
}

export function formatGB(bytes: number): string {
  return `${(bytes / 1e9).toFixed(1)} GB`;
}

/** "KV cache 1.2 GB, logits ..., activations ..., weights ..." */
export function describeEstimate(e: MemoryEstimate): string {
  return `KV cache ${formatGB(e.kvCache)}, logits ${formatGB(e.logits)}, activations ${formatGB(e.activations)}, weights ${formatGB(e.weights)}`;
}

/** The context a load must leave room for: a generation of this many tokens (or the whole context, if shorter). */
export const LOAD_CONTEXT_TOKENS = 4096;

/** "Qwen3-8B" for a built-in size's architecture, else "This model". */
function modelName(c: Qwen3Config): string {
  const same = (a: Qwen3Config) => a.emb_dim === c.emb_dim && a.n_layers === c.n_layers && a.hidden_dim === c.hidden_dim && a.n_heads === c.n_heads && a.vocab_size === c.vocab_size;
  const size = Object.entries(MODEL_SIZES).find(([, cfg]) => same(cfg))?.[0];
  return size ? `Qwen3-${size}` : 'This model';
}

/**
 * Refuses, with the numbers, a load whose weights and a generation of LOAD_CONTEXT_TOKENS
 * cannot fit a device's free memory (host RAM for the CPU), instead of failing half-way
 * through the load or being killed. Devices that report no free memory are not checked. With
 * several devices (tensor parallelism) each is checked for its share; CPU ranks share the host.
 */
export function checkMemoryFits(c: Qwen3Config, dtype: Dtype, devices: readonly string[], tied: boolean, world = devices.length): void {
  for (const device of new Set(devices)) {
    const free = device === 'cpu' ? freemem() : native().memoryStats(device)?.freeBytes ?? null;
    const sharing = device === 'cpu' ? world : 1;  // ranks on one host all take its RAM
    const problem = free === null ? null : memoryShortfall(c, dtype, tied, device, free / sharing, world);
    if (problem) throw new Error(problem);
  }
}

/**
 * Why a load cannot fit `free` bytes of `device`, or null when it fits. One rank of `world`
 * holds the whole weights while it loads (it reads them, then keeps its share), then its share
 * of the weights and of the KV cache.
 */
export function memoryShortfall(c: Qwen3Config, dtype: Dtype, tied: boolean, device: string, free: number, world = 1): string | null {
  const tokens = Math.min(c.context_length, LOAD_CONTEXT_TOKENS);
  const need = estimateGenerationMemory(c, dtype, { batch: 1, tokens, passTokens: Math.min(tokens, 512) }, tied);
  const total = world === 1 ? need.total : need.weights * (1 + 1 / world) + (need.kvCache + need.activations) / world + need.logits;
  if (total <= free) return null;
  const share = world === 1 ? '' : ` as one of ${world} tensor-parallel ranks (the whole weights while loading, then its share)`;
  return `${modelName(c)} in ${dtype} needs ${formatGB(total)}${share} (weights ${formatGB(need.weights)}, KV cache for ${tokens} tokens ${formatGB(need.kvCache)}); `
    + `${device} has ${formatGB(free)} free`;
}
