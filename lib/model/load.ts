// Qwen3Model.load's options, the config they name, and aborting a load.
import { z } from 'zod';
import { DTYPES, MODEL_SIZES, QUANTIZE_KINDS, type Dtype, type ModelSize, type Quantize, type Qwen3Config, parseConfig, readConfigJson } from '../config.js';
import type { NativeModel } from '../native.js';
import { type DeviceName, resolveDevice } from '../device.js';
import { InvalidOptionError, abortSignal, boolean, describeValue, integer, nonEmptyString, oneOf } from '../validate.js';
import { configFromHuggingFace } from './huggingface.js';
import { MAX_RANKS, type ProcessGroupOptions, processGroupSchema } from './process-group.js';

export interface LoadOptions {
  /**
   * For a checkpoint in the book's layout or random weights: a config object, a path to a config
   * JSON file (the book's keys, or a Hugging Face config.json), or a built-in size ("0.6B",
   * "1.7B", ...). Default "0.6B". A Hugging Face folder brings its own.
   */
  config?: Qwen3Config | string;
  /** "auto" (default: cuda > mps > xpu > cpu), "cpu", "cuda", "cuda:N", "mps", "xpu". */
  device?: string;
  /** Compute dtype; default the config's dtype. */
  dtype?: Dtype;
  /**
   * Optimised execution (docs/performance.md): on the CPU fused weights and kernels instead
   * of the reference's operations; on CUDA, CUDA-graph replay of the decode step. Greedy tokens
   * stay those of the eager path (up to ties in bfloat16 on the CPU).
   */
  compile?: boolean;
  /**
   * Aborts the load: the Promise rejects with an AbortError as soon as the signal fires. Reading
   * the checkpoint cannot be interrupted half-way, so that work goes on in the background and
   * the model it produces is disposed the moment it is ready.
   */
  signal?: AbortSignal;
  /**
   * How long a caller holding the model may run no step while another call waits, before that
   * call goes first (see Qwen3Model.exclusive). Milliseconds, default IDLE_HANDOVER_MS.
   */
  idleHandoverMs?: number;
  /** For a Hugging Face repo id: the branch, tag or commit to download (default "main"). */
  revision?: string;
  /**
   * Weights drawn on the device instead of read from a file, for benchmarks and for shapes whose
   * files do not fit a disk: `Qwen3Model.load({ config, randomWeights: { seed } })`, with no
   * path. Matrices are normal(0, 0.02) as transformers initialises them, norm scales 1. The same
   * seed gives the same weights on the same kind of device (default seed 0).
   * `tieWordEmbeddings` shares one table between the embedding and the head; by default as the
   * config says: a Hugging Face config.json's own key, for a built-in size as the official
   * release does (0.6B, 1.7B and 4B tied), else not tied.
   */
  randomWeights?: RandomWeights;
  /**
   * Tensor parallelism: one share of the model on each of these devices (["cuda:0", "cuda:1"]),
   * every step run on all of them at once through NCCL (docs/scale-out.md). Each CUDA device is
   * named with its index. "cpu" repeated runs the ranks as threads of this process, which checks
   * the split but is no faster. Not with `device`.
   */
  devices?: string[];
  /**
   * Tensor parallelism over the first N devices of `device`'s kind (default "auto"): cuda:0 ..
   * cuda:N-1, or N CPU ranks. 1 (default): one device. The model's key/value heads, feed-forward
   * width and vocabulary must divide by N (Qwen3's 8 key/value heads: up to 8).
   */
  tensorParallel?: number;
  /**
   * The block's matrices and the vocabulary head quantized at load, each row on its own (one
   * float32 scale per output channel), which halves what a batch-1 decode step reads against
   * bfloat16; the embedding table and the activations stay in `dtype`, and the fused block runs
   * whatever `compile` says. docs/performance.md has the cost in accuracy and the speed.
   * - "int8" (CPU): symmetric int8, each product's input quantized per block of 64 on the fly,
   *   multiplied on AVX512-VNNI; `dtype` float32 or bfloat16.
   * - "fp8" (CUDA): E4M3 weight-only, the activations unquantized; batch-1 steps read the FP8
   *   rows in their own kernels, prompts and batched steps widen them a slice at a time. Also
   *   runs on the CPU, without a kernel of its own (slower than bfloat16 there: for checks).
   */
  quantize?: Quantize;
  /**
   * One rank of a model split over processes, as torchrun starts them (docs/scale-out.md): this
   * process holds its share on `device`, and every process of the group loads the same model and
   * makes the same calls in the same order (each gets the same answers). "env" reads torchrun's
   * RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and LOCAL_RANK. A `device` of "cuda" (or "auto"
   * on a CUDA machine) means cuda:localRank. CUDA ranks add through NCCL; CPU ranks through
   * rank 0's store, which is slow (for checks and tiny models). Not with devices or tensorParallel.
   */
  processGroup?: ProcessGroupOptions | 'env';
  /**
   * With processGroup: the calls come from rank 0 alone (a server, a chat) instead of from the
   * same program in every process. Rank 0's model sends each call to the other ranks (over TCP,
   * at masterAddr:forwardPort), and each of them runs `await model.followCalls()` until rank 0
   * disposes its model. Sampling then needs no seed.
   */
  forwardCalls?: boolean;
  /**
   * How long a rank waits for the others, to meet at load and then in each collective, before it
   * fails. Milliseconds, default 600000 (10 minutes).
   */
  collectiveTimeoutMs?: number;
  /**
   * Run a 512-token prompt and a few decode steps at load, so that what a first request would
   * build (library plans, kernels loaded on first use, the compiled decode step's CUDA graph) is
   * built before it comes. Default: on for CUDA devices, off elsewhere.
   */
  warmup?: boolean;
}

export interface RandomWeights {
  seed?: number;
  tieWordEmbeddings?: boolean;
}

/** Default of LoadOptions.idleHandoverMs. */
export const IDLE_HANDOVER_MS = 1000;

/** Default of LoadOptions.collectiveTimeoutMs (the native side's too). */
export const DEFAULT_COLLECTIVE_TIMEOUT_MS = 600_000;

export const loadSchema = z
  .object({
    config: z.union([z.string(), z.object({}).passthrough()], { error: 'Expected config object, JSON file path or size' }).optional(),
    device: nonEmptyString().optional(),
    dtype: oneOf(DTYPES).optional(),
    compile: boolean().optional(),
    signal: abortSignal().optional(),
    idleHandoverMs: integer(0, 2 ** 31 - 1).optional(),
    revision: nonEmptyString().optional(),
    randomWeights: z
      .object({ seed: integer(0, Number.MAX_SAFE_INTEGER).optional(), tieWordEmbeddings: boolean().optional() }, { error: 'Expected object' })
      .strict()
      .optional(),
    devices: z.array(nonEmptyString(), { error: 'Expected array of device names' }).min(1).max(MAX_RANKS).optional(),
    tensorParallel: integer(1, MAX_RANKS).optional(),
    quantize: oneOf(QUANTIZE_KINDS).optional(),
    processGroup: processGroupSchema.optional(),
    forwardCalls: boolean().optional(),
    collectiveTimeoutMs: integer(1, 2 ** 31).optional(),
    warmup: boolean().optional(),
  })
  .strict();


/**
 * The devices a load runs on: one (the `device` option, resolved), or the tensor-parallel ranks'
 * that `devices` or `tensorParallel` name, CUDA devices with their index as NCCL needs them.
 */
export function resolveRanks(opts: { device?: string; devices?: string[]; tensorParallel?: number }): DeviceName[] {
  if (opts.devices) {
    if (opts.device !== undefined) throw new InvalidOptionError('Give device (one device) or devices (tensor parallel), not both', 'devices');
    if (opts.tensorParallel !== undefined && opts.tensorParallel !== opts.devices.length) {
      throw new InvalidOptionError(
        `tensorParallel (${opts.tensorParallel}) must equal the number of devices (${opts.devices.length}) when both are given`,
        'tensorParallel',
      );
    }
    if (opts.devices.length === 1) return [resolveDevice(opts.devices[0], 'devices[0]')];
    const ranks = opts.devices.map((name, i) => rankDevice(name, `devices[${i}]`));
    const kinds = new Set(ranks.map((d) => (d === 'cpu' ? 'cpu' : 'cuda')));
    if (kinds.size > 1) throw new InvalidOptionError(`Expected all CUDA devices or all "cpu" for devices but received ${ranks.join(', ')}`, 'devices');
    const cuda = ranks.filter((d) => d !== 'cpu');
    if (new Set(cuda).size !== cuda.length) throw new InvalidOptionError(`Expected each CUDA device once in devices but received ${ranks.join(', ')}`, 'devices');
    return ranks;
  }
  const device = resolveDevice(opts.device ?? 'auto');
  const n = opts.tensorParallel ?? 1;
  if (n === 1) return [device];
  if (device === 'cpu') return Array.from({ length: n }, () => 'cpu' as const);
  if (!device.startsWith('cuda')) {
    throw new InvalidOptionError(`Tensor parallelism runs on CUDA devices or the CPU, not on ${device}`, 'tensorParallel');
  }
  return Array.from({ length: n }, (_, i) => rankDevice(`cuda:${i}`, 'tensorParallel'));
}

/** One rank's device, checked to exist: "cpu", or CUDA with its index. */
function rankDevice(name: string, option: string): DeviceName {
  if (name === 'cuda') throw new InvalidOptionError(`Expected a CUDA device with its index ("cuda:0", "cuda:1", ...) for ${option} but received "cuda"`, option);
  const device = resolveDevice(name, option);
  if (device !== 'cpu' && !device.startsWith('cuda')) {
    throw new InvalidOptionError(`Tensor parallelism runs on CUDA devices or the CPU, not on ${device} (${option})`, option);
  }
  return device === 'cuda' ? 'cuda:0' : device;
}

/** The built-in sizes whose official releases tie the head to the embedding table. */
const TIED_SIZES: readonly ModelSize[] = ['0.6B', '1.7B', '4B'];

/** A resolved `config` option: the architecture, and whether the source it came from ties the head. */
export interface ResolvedConfig {
  config: Qwen3Config;
  tied: boolean;
}

/**
 * The `config` option as a config. An explicit `dtype` stands in for a config (object or file)
 * that has none. A JSON file may use the book's keys or be a Hugging Face config.json (told
 * apart by its `hidden_size`).
 */
export async function resolveConfig(config: unknown, dtype: Dtype | undefined): Promise<ResolvedConfig> {
  if (config === undefined) return { config: MODEL_SIZES['0.6B'], tied: true };
  if (typeof config === 'string') {
    if (config in MODEL_SIZES) return { config: MODEL_SIZES[config as ModelSize], tied: TIED_SIZES.includes(config as ModelSize) };
    if (config.toLowerCase().endsWith('.json')) return readConfigFile(config, dtype);
    throw new InvalidOptionError(
      `Expected one of ${Object.keys(MODEL_SIZES).join(', ')} or a .json file for config but received ${describeValue(config)}`,
      'config',
    );
  }
  return { config: parseConfig(config, { dtype }), tied: false };
}

async function readConfigFile(path: string, dtype: Dtype | undefined): Promise<ResolvedConfig> {
  const json = await readConfigJson(path);
  if (typeof json === 'object' && json !== null && 'hidden_size' in json) {
    const hf = configFromHuggingFace(json, path);
    return { config: hf.config, tied: hf.tieWordEmbeddings };
  }
  return { config: parseConfig(json, { dtype }), tied: false };
}

export function loadAborted(path: string, signal: AbortSignal): Error {
  const err = new Error(`Loading ${path} was aborted`, { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}

/**
 * Settles with `loading` or, as soon as `signal` fires, with an AbortError. A native load cannot
 * stop half-way, so an abandoned one runs on and its model is disposed when it arrives (or its
 * error dropped): nothing it allocated outlives it, and no rejection goes unhandled.
 */
export function abortableLoad(loading: Promise<NativeModel>, path: string, signal: AbortSignal | undefined): Promise<NativeModel> {
  if (!signal) return loading;
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      reject(loadAborted(path, signal));
      loading.then((handle) => handle.dispose(), () => {});
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    loading.then(
      (handle) => {
        signal.removeEventListener('abort', onAbort);
        resolve(handle);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
