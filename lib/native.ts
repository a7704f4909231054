// The one typed contract for the native addon (native/binding/addon.cc), and where it is loaded from.
// Everything here is raw: callers go through the validated classes in model.ts and device.ts.
import { resolve } from 'node:path';
import { type BuiltAgainst, type LoadReport, loadAddon } from './addon/index.js';
import type { Quantize, Qwen3Config } from './config.js';

/** What the addon's buildInfo() says about the libtorch it was compiled against. */
export type NativeBuildInfo = BuiltAgainst;

export interface NativeDevices {
  cudaCount: number;
  cudaNames: string[];
  mps: boolean;
  xpuCount: number;
}

export interface NativeMemoryStats {
  currentBytes: number;
  /** null where the device tracks no peak (MPS). */
  peakBytes: number | null;
  /** What new allocations could still get (CUDA: free plus cached but unused); null where unknown. */
  freeBytes: number | null;
  totalBytes: number | null;
}

/** Which logits a step returns: 0 none, 1 the last position's, 2 every position's. */
export type NativeLogitsMode = 0 | 1 | 2;

export interface NativeStepRequest {
  ids: Int32Array; // (batch, seq) row-major
  batch: number;
  seq: number;
  logits: NativeLogitsMode;
  temperature: number; // 0: greedy
  topK: number; // 0: off
  topP: number; // 1: off
  uniforms: Float64Array | null; // one U[0,1) draw per row (per row and step for decodeSteps) when sampling
  pad?: Int32Array | null; // left-padding count per row, on the step that starts a cache
  steps?: number; // decodeSteps: how many steps
  stopId?: number; // decodeSteps: finish once every row has produced this token (-1: never)
}

export interface NativeStepResult {
  next: Int32Array; // (batch,); (steps run, batch) from decodeSteps
  logits: Float32Array | null;
  logitsShape: number[];
  cacheLength: number;
}

/**
 * One step over sequence slots: each row continues its own slot at its own position. Rows with
 * one new token are decode rows, rows with more are prompt chunks.
 */
export interface NativeSlotStepRequest {
  slots: Int32Array; // (rows,) slot index of each row; a slot at most once per step
  starts: Int32Array; // (rows,) position where the row's new tokens go; the slot first forgets everything from there on (0 <= start <= slot length)
  offsets: Int32Array; // (rows + 1,) row r's new tokens are ids[offsets[r] .. offsets[r+1]), at least one each
  ids: Int32Array; // every row's new tokens, concatenated
  temperature: Float64Array; // (rows,) 0: greedy
  topK: Int32Array; // (rows,) 0: off
  topP: Float64Array; // (rows,) 1: off
  uniforms: Float64Array; // (rows,) one U[0,1) draw per row (unused by greedy rows)
  topLogprobs: number; // -1: no logprobs; 0..20: each row's chosen-token logprob plus that many most likely alternatives
  logits: boolean; // also return each row's last-position logits (float32), for tests
}

export interface NativeSlotStepResult {
  next: Int32Array; // (rows,) token chosen after each row's last new token
  logprobs: Float32Array | null; // (rows,) log-softmax of the model's logits (temperature 1, before top-k/top-p) at the chosen token
  topIds: Int32Array | null; // (rows, topLogprobs) most likely tokens, best first
  topLogprobs: Float32Array | null; // (rows, topLogprobs)
  logits: Float32Array | null; // (rows, vocab)
  lengths: Int32Array; // (rows,) each row's slot length after the step
}

/** The most slots a model addresses (indices 0 .. MAX_SLOTS - 1); storage grows only up to the highest index used. */
export const MAX_SLOTS = 4096;

/** The architecture fields the native engine reads (the dtype is passed separately). */
export type NativeModelConfig = Omit<Qwen3Config, 'dtype'> & {
  /** The vocabulary head is the embedding table (Hugging Face's tie_word_embeddings). */
  tie_word_embeddings?: boolean;
};

/** One tensor of a safetensors file as its header places it: absolute byte range [begin, end). */
export interface NativeStoredTensor {
  name: string;
  file: number;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  begin: number;
  end: number;
}

export interface NativeLoadRequest {
  /** A .pth checkpoint, or the Hugging Face model folder (named in messages). */
  path: string;
  config: NativeModelConfig;
  device: string;
  dtype: string;
  compile: boolean;
  /** Hugging Face safetensors files and every tensor in them; absent for a .pth. */
  safetensors?: { files: string[]; tensors: NativeStoredTensor[] } | null;
  /**
   * Weights drawn on the device from this seed (normal(0, 0.02), norm scales 1) instead of read
   * from a file; `path` then only names them in messages. Not with `safetensors`.
   */
  randomWeights?: { seed: number } | null;
  /**
   * Tensor parallelism: one rank per device, in rank order, at least two (all "cuda:N" with
   * distinct N, or "cpu" repeated for ranks that are threads); `device` must then be devices[0].
   */
  devices?: string[] | null;
  /**
   * One rank per process instead (parallel/process_group.h): this process's rank of worldSize
   * (2 to 64), meeting the others through a c10d TCPStore that rank 0 hosts at
   * masterAddr:masterPort. Not with `devices`.
   */
  processGroup?: { rank: number; worldSize: number; masterAddr: string; masterPort: number } | null;
  /** How long a rank waits for the others, to meet and in each collective, before it fails (default 600000 ms). */
  collectiveTimeoutMs?: number;
  /** Block matrices and head quantized per row at load: "int8" (CPU), "fp8" (CUDA or CPU). */
  quantize?: Quantize | null;
}

export interface NativeModel {
  /** Runs `seq` tokens per row after the KV cache's content (a prefill when it is empty). */
  prefill(request: NativeStepRequest): Promise<NativeStepResult>;
  /** One token per row after the KV cache. */
  decode(request: NativeStepRequest): Promise<NativeStepResult>;
  /** The whole sequence from position 0 without the cache. */
  forward(request: NativeStepRequest): Promise<NativeStepResult>;
  /** Up to `steps` decode steps in one call, each fed the token the one before chose (no logits). */
  decodeSteps(request: NativeStepRequest): Promise<NativeStepResult>;
  /**
   * One step over sequence slots (see NativeSlotStepRequest), independent of the batch steps' KV
   * cache. A step that fails leaves each of its slots at its start.
   */
  slotStep(request: NativeSlotStepRequest): Promise<NativeSlotStepResult>;
  /** Slot `to` gets the first `length` tokens of slot `from` (a shared prompt prefix); its length becomes `length`. */
  copySlot(from: number, to: number, length: number): Promise<void>;
  /** Empties the batch steps' KV cache; `release` also frees it and the slots' storage (every slot then empty). */
  resetCache(release: boolean): void;
  cacheLength(): number;
  /**
   * slotCacheBytes: bytes allocated for the slots' keys and values, (slots with storage) x
   * (positions per slot) x 2 x n_layers x n_kv_groups x head_dim x (bytes per element of the dtype).
   */
  info(): {
    device: string;
    /** The tensor-parallel ranks' devices (empty on one device). */
    devices: string[];
    /** How the ranks combine their results: "nccl", "threads", or "" on one device. */
    transport: string;
    dtype: string;
    parameterBytes: number;
    cacheCapacity: number;
    slotCacheBytes: number;
    compiled: boolean;
    compileSeconds: number;
    graphCaptures: number;
    /**
     * Slot steps run ahead of being asked for (greedy decode rows fed their own tokens), and how
     * many of them served the request that followed, whole or in part.
     */
    slotSpeculation: { run: number; used: number };
    /**
     * Prompt chunks that ran inside a slot step's decode rows, one row per token (by default where
     * the CUDA ragged step runs; QWEN3_PROMPT_ROWS=1 or 0 forces it).
     */
    slotPromptRows: number;
    /** One rank per process: this process's rank and the group's size; else null. */
    processGroup: { rank: number; worldSize: number } | null;
  };
  dispose(): void;
}

export interface NativeBinding {
  loadModel(request: NativeLoadRequest): Promise<NativeModel>;
  buildInfo(): NativeBuildInfo;
  devices(): NativeDevices;
  setTensorCores(enabled: boolean): void;
  tensorCoresEnabled(): boolean;
  memoryStats(device: string): NativeMemoryStats | null;
  resetPeakMemory(device: string): void;
  /** Copy bandwidth of the device in bytes/s (read + write), on the thread pool. */
  measureBandwidth(device: string, bytes: number): Promise<number>;
}

/** Package root: one level above lib/ (sources under vitest) or dist/ (compiled). */
export const packageRoot = resolve(__dirname, '..');

let binding: NativeBinding | undefined;
let report: LoadReport | undefined;
let loadError: Error | undefined;

/** Which binary was loaded, why, and the libtorch it runs on (see addon/choose.ts). */
export function nativeLoadReport(): LoadReport | undefined {
  return report;
}

/**
 * Loads the addon once: the binary made for the libtorch found (addon/choose.ts), checked in a child
 * process first. Throws an error that lists what was found and how to fix it.
 */
export function native(): NativeBinding {
  if (binding) return binding;
  if (loadError) throw loadError;
  try {
    ({ binding, report } = loadAddon<NativeBinding>({ root: packageRoot }));
  } catch (err) {
    loadError = err as Error;
    throw err;
  }
  return binding;
}
