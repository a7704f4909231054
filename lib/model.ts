// Qwen3Model: the public handle on a loaded model. Validates every argument, serialises use of
// the native engine (one step at a time per model) and gives native errors the caller's stack.
import { z } from 'zod';
import { DTYPES, MODEL_SIZES, type Dtype, type ModelSize, type Qwen3Config, loadConfigFile, parseConfig } from './config.js';
import { type DeviceName, type MemoryStats, memoryStats, resetPeakMemory, resolveDevice } from './device.js';
import { resolveModelSource } from './model-path.js';
import { formatModelSummary } from './summary.js';
import { type NativeModel, type NativeStepRequest, type NativeStepResult, native } from './native.js';
import { InvalidOptionError, abortSignal, boolean, describeValue, integer, nonEmptyString, oneOf, parseOptions } from './validate.js';

export interface LoadOptions {
  /** A config object, a path to a config JSON file, or a built-in size ("0.6B", "1.7B", ...). Default "0.6B". */
  config?: Qwen3Config | string;
  /** "auto" (default: cuda > mps > xpu > cpu), "cpu", "cuda", "cuda:N", "mps", "xpu". */
  device?: string;
  /** Compute dtype; default the config's dtype. */
  dtype?: Dtype;
  /**
   * Optimised execution (see the README's table): on the CPU fused weights and kernels instead
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
}

const loadSchema = z
  .object({
    config: z.union([z.string(), z.object({}).passthrough()], { error: 'Expected config object, JSON file path or size' }).optional(),
    device: nonEmptyString().optional(),
    dtype: oneOf(DTYPES).optional(),
    compile: boolean().optional(),
    signal: abortSignal().optional(),
  })
  .strict();

/** Token ids: one sequence, or a batch of equally long sequences. */
export type TokenIds = readonly number[] | Int32Array | readonly (readonly number[])[];

export type LogitsMode = 'none' | 'last' | 'all';
const LOGITS_CODE = { none: 0, last: 1, all: 2 } as const;

export interface Logits {
  /** float32, row-major with `shape` (batch, positions, vocab). */
  data: Float32Array;
  shape: [number, number, number];
}

export interface StepOutput {
  /** The chosen next token per row (greedy unless sampling was asked for). */
  next: number[];
  logits: Logits | null;
  cacheLength: number;
}

export interface StepsOutput {
  /** The tokens chosen, one array of rows per step run: (steps run, batch). */
  steps: number[][];
  cacheLength: number;
}

export interface SamplingOptions {
  temperature: number;
  topK: number;
  topP: number;
  /** One U[0,1) draw per batch row; required when temperature > 0. */
  uniforms?: Float64Array;
}

const GREEDY: SamplingOptions = { temperature: 0, topK: 0, topP: 1 };

/** An explicit `dtype` stands in for a config (object or file) that has none. */
async function resolveConfig(config: unknown, dtype: Dtype | undefined): Promise<Qwen3Config> {
  if (config === undefined) return MODEL_SIZES['0.6B'];
  if (typeof config === 'string') {
    if (config in MODEL_SIZES) return MODEL_SIZES[config as ModelSize];
    if (config.toLowerCase().endsWith('.json')) return loadConfigFile(config, { dtype });
    throw new InvalidOptionError(
      `Expected one of ${Object.keys(MODEL_SIZES).join(', ')} or a .json file for config but received ${describeValue(config)}`,
      'config',
    );
  }
  return parseConfig(config, { dtype });
}

/** The native request for checked ids (batch, seq) and sampling settings. */
function stepRequest(ids: Int32Array, batch: number, seq: number, logits: LogitsMode, sampling: SamplingOptions): NativeStepRequest {
  return {
    ids,
    batch,
    seq,
    logits: LOGITS_CODE[logits],
    temperature: sampling.temperature,
    topK: sampling.topK,
    topP: sampling.topP,
    uniforms: sampling.uniforms ?? null,
  };
}

/** Re-throws a native rejection with the stack of the JS call that started it. */
async function withCallerStack<T>(promise: Promise<T>, caller: Error): Promise<T> {
  try {
    return await promise;
  } catch (err) {
    if (err instanceof Error && caller.stack) {
      err.stack = `${err.name}: ${err.message}\n${caller.stack.split('\n').slice(1).join('\n')}`;
    }
    throw err;
  }
}

function loadAborted(path: string, signal: AbortSignal): Error {
  const err = new Error(`Loading ${path} was aborted`, { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}

/**
 * Settles with `loading` or, as soon as `signal` fires, with an AbortError. A native load cannot
 * stop half-way, so an abandoned one runs on and its model is disposed when it arrives (or its
 * error dropped): nothing it allocated outlives it, and no rejection goes unhandled.
 */
function abortableLoad(loading: Promise<NativeModel>, path: string, signal: AbortSignal | undefined): Promise<NativeModel> {
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

/** The step functions of a model while its lock is held (see Qwen3Model.exclusive). */
export interface ModelSession {
  /** `pad`: leading padding ids per row (left-padded prompts), only when the cache is empty. */
  prefill(ids: TokenIds, logits?: LogitsMode, sampling?: SamplingOptions, pad?: readonly number[]): Promise<StepOutput>;
  decode(ids: TokenIds, logits?: LogitsMode, sampling?: SamplingOptions): Promise<StepOutput>;
  forward(ids: TokenIds, logits?: LogitsMode, sampling?: SamplingOptions): Promise<StepOutput>;
  /** See Qwen3Model.decodeSteps; sampling.uniforms then holds one draw per row and step, step-major. */
  decodeSteps(ids: TokenIds, steps: number, sampling?: SamplingOptions, stopId?: number | null): Promise<StepsOutput>;
  resetCache(release?: boolean): void;
  readonly cacheLength: number;
}

export class Qwen3Model {
  readonly path: string;
  readonly config: Readonly<Qwen3Config>;
  readonly device: DeviceName;
  readonly dtype: Dtype;
  readonly compiled: boolean;
  #native: NativeModel | null;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, config: Qwen3Config, device: DeviceName, dtype: Dtype, compiled: boolean, handle: NativeModel) {
    this.path = path;
    this.config = Object.freeze({ ...config });
    this.device = device;
    this.dtype = dtype;
    this.compiled = compiled;
    this.#native = handle;
  }

  /**
   * Loads a torch.save(state_dict) checkpoint in the reference layout onto a device. The
   * checkpoint is only ever read as data (no pickle code runs); `signal` aborts the load.
   */
  static async load(path: string, options: LoadOptions = {}): Promise<Qwen3Model> {
    const caller = new Error();
    parseOptions(nonEmptyString(), path, 'path');
    const opts = parseOptions(loadSchema, options);
    if (opts.signal?.aborted) throw loadAborted(path, opts.signal);
    const config = await resolveConfig(opts.config, opts.dtype);
    const device = resolveDevice(opts.device ?? 'auto');
    const dtype = opts.dtype ?? config.dtype;
    await resolveModelSource(path);
    if (opts.signal?.aborted) throw loadAborted(path, opts.signal);
    const { dtype: _stored, ...nativeConfig } = config;
    const loading = native().loadModel({ path, config: nativeConfig, device, dtype, compile: opts.compile ?? false });
    const handle = await withCallerStack(abortableLoad(loading, path, opts.signal), caller);
    return new Qwen3Model(path, config, device, dtype, opts.compile ?? false, handle);
  }

  get disposed(): boolean {
    return this.#native === null;
  }

  #handle(): NativeModel {
    if (!this.#native) throw new Error('Model is disposed');
    return this.#native;
  }

  /** Tokens held in the KV cache. */
  get cacheLength(): number {
    return this.#handle().cacheLength();
  }

  /** Tokens the KV cache can hold before it grows again. */
  get cacheCapacity(): number {
    return this.#handle().info().cacheCapacity;
  }

  /** Seconds spent on the compile step so far (weight fusion at load, CUDA graph captures). */
  get compileSeconds(): number {
    return this.#handle().info().compileSeconds;
  }

  /** How many times the decode step was captured as a CUDA graph (one per batch size and KV capacity bucket). */
  get graphCaptures(): number {
    return this.#handle().info().graphCaptures;
  }

  /** Bytes of weights on the device. */
  get parameterBytes(): number {
    return this.#handle().info().parameterBytes;
  }

  /**
   * Runs `fn` with exclusive use of the model: calls made while another holds it wait their
   * turn, so two generations never interleave their steps or share a KV cache by accident.
   */
  async exclusive<T>(fn: (session: ModelSession) => Promise<T>): Promise<T> {
    if (typeof fn !== 'function') throw new InvalidOptionError(`Expected function for fn but received ${describeValue(fn)}`, 'fn');
    const lease = await this.acquire();
    try {
      return await fn(lease.session);
    } finally {
      lease.release();
    }
  }

  /** Waits for exclusive use of the model; call `release` when done (streams hold it across yields). */
  async acquire(): Promise<{ session: ModelSession; release: () => void }> {
    this.#handle();
    const previous = this.#queue;
    let release!: () => void;
    this.#queue = new Promise<void>((resolve) => (release = resolve));
    await previous;
    return { session: this.#session(), release };
  }

  #session(): ModelSession {
    const step = (kind: 'prefill' | 'decode' | 'forward') => (ids: TokenIds, logits: LogitsMode = 'none', sampling = GREEDY, pad?: readonly number[]) =>
      this.#step(kind, ids, logits, sampling, pad);
    const model = this;
    return {
      prefill: step('prefill'),
      decode: step('decode'),
      forward: step('forward'),
      decodeSteps: (ids: TokenIds, steps: number, sampling = GREEDY, stopId: number | null = null) => this.#steps(ids, steps, sampling, stopId),
      resetCache: (release = false) => this.#handle().resetCache(release),
      get cacheLength() {
        return model.cacheLength;
      },
    };
  }

  /** Runs tokens after the KV cache's content (a prefill when empty) and returns the next token. */
  async prefill(ids: TokenIds, options: { logits?: LogitsMode } = {}): Promise<StepOutput> {
    const logits = parseLogitsOption(options);
    return this.exclusive((s) => s.prefill(ids, logits));
  }

  /** One token per row after the KV cache. */
  async decode(ids: TokenIds, options: { logits?: LogitsMode } = {}): Promise<StepOutput> {
    const logits = parseLogitsOption(options);
    return this.exclusive((s) => s.decode(ids, logits));
  }

  /**
   * Up to `steps` greedy decode steps in one native call, each consuming the token the step
   * before chose; stops early once every row has produced `stopId`. On CUDA the steps run back
   * to back on the device with one read-back at the end, which is how generation reaches the
   * GPU's speed at batch 1. No logits: use decode() for those.
   */
  async decodeSteps(ids: TokenIds, options: { steps: number; stopId?: number | null }): Promise<StepsOutput> {
    const o = parseOptions(z.object({ steps: integer(1, 2 ** 31 - 1), stopId: integer(0, 2 ** 31 - 1).nullable().optional() }).strict(), options);
    return this.exclusive((s) => s.decodeSteps(ids, o.steps, GREEDY, o.stopId ?? null));
  }

  /** The whole sequence from position 0 without the KV cache; logits of every position by default. */
  async forward(ids: TokenIds, options: { logits?: LogitsMode } = {}): Promise<StepOutput> {
    const logits = parseLogitsOption({ logits: 'all', ...options });
    return this.exclusive((s) => s.forward(ids, logits));
  }

  /** Empties the KV cache; `release` also frees its memory. Waits for running steps. */
  async resetCache(options: { release?: boolean } = {}): Promise<void> {
    const { release } = parseOptions(z.object({ release: boolean().optional() }).strict(), options);
    return this.exclusive(async (s) => s.resetCache(release ?? false));
  }

  /** Prints (and returns) the module tree the way PyTorch prints the reference model. */
  summary(): string {
    this.#handle();
    const text = formatModelSummary(this.config);
    process.stdout.write(`${text}\n`);
    return text;
  }

  /** Device memory held by tensors (null on CPU). */
  memoryStats(): MemoryStats | null {
    this.#handle();
    return memoryStats(this.device);
  }

  resetPeakMemory(): void {
    this.#handle();
    resetPeakMemory(this.device);
  }

  /**
   * Frees the weights and the KV cache. Safe at any time, also more than once: a step already
   * running on the thread pool finishes first (the memory goes when it does); a generation in
   * progress, and every call waiting its turn, then rejects with "Model is disposed".
   */
  dispose(): void {
    this.#native?.dispose();
    this.#native = null;
  }

  async #step(kind: 'prefill' | 'decode' | 'forward', ids: TokenIds, logits: LogitsMode, sampling: SamplingOptions, pad?: readonly number[]): Promise<StepOutput> {
    const caller = new Error();
    const handle = this.#handle();
    const { flat, batch, seq } = this.#checkIds(ids, kind === 'forward' ? 0 : handle.cacheLength());
    if (kind === 'decode' && seq !== 1) {
      throw new InvalidOptionError(`Expected one token per row for ids but received ${seq}`, 'ids');
    }
    const request = { ...stepRequest(flat, batch, seq, logits, sampling), pad: pad ? Int32Array.from(pad) : null };
    const result: NativeStepResult = await withCallerStack(handle[kind](request), caller);
    return {
      next: Array.from(result.next),
      logits: result.logits ? { data: result.logits, shape: result.logitsShape as [number, number, number] } : null,
      cacheLength: result.cacheLength,
    };
  }

  async #steps(ids: TokenIds, steps: number, sampling: SamplingOptions, stopId: number | null): Promise<StepsOutput> {
    const caller = new Error();
    const handle = this.#handle();
    const cached = handle.cacheLength();
    const { flat, batch, seq } = this.#checkIds(ids, cached);
    if (seq !== 1) throw new InvalidOptionError(`Expected one token per row for ids but received ${seq}`, 'ids');
    parseOptions(z.object({ steps: integer(1, this.config.context_length - cached) }), { steps });
    const request = { ...stepRequest(flat, batch, seq, 'none', sampling), steps, stopId: stopId ?? -1 };
    const result: NativeStepResult = await withCallerStack(handle.decodeSteps(request), caller);
    const out: number[][] = [];
    for (let i = 0; i < result.next.length; i += batch) out.push(Array.from(result.next.subarray(i, i + batch)));
    return { steps: out, cacheLength: result.cacheLength };
  }

  /** Flattens ids to (batch, seq) and checks vocabulary range and context length. */
  #checkIds(ids: TokenIds, cached: number): { flat: Int32Array; batch: number; seq: number } {
    const rows: ArrayLike<number>[] =
      ids instanceof Int32Array ? [ids] : Array.isArray(ids) && ids.length > 0 && Array.isArray(ids[0]) ? (ids as number[][]) : [ids as number[]];
    if (!Array.isArray(ids) && !(ids instanceof Int32Array)) {
      throw new InvalidOptionError(`Expected array of token ids for ids but received ${describeValue(ids)}`, 'ids');
    }
    const seq = rows[0]!.length;
    if (seq === 0) throw new InvalidOptionError('Expected at least one token for ids but received an empty prompt', 'ids');
    const flat = new Int32Array(rows.length * seq);
    const vocab = this.config.vocab_size;
    rows.forEach((row, r) => {
      if (!Array.isArray(row) && !(row instanceof Int32Array)) {
        throw new InvalidOptionError(`Expected array of token ids for ids[${r}] but received ${describeValue(row)}`, `ids[${r}]`);
      }
      if (row.length !== seq) {
        throw new InvalidOptionError(`Expected every row to have ${seq} tokens for ids[${r}] but received ${row.length}`, `ids[${r}]`);
      }
      for (let i = 0; i < seq; i++) {
        const id = row[i];
        if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocab) {
          throw new InvalidOptionError(`Expected integer between 0 and ${vocab - 1} for token id at position ${i} but received ${describeValue(id)}`, 'ids');
        }
        flat[r * seq + i] = id;
      }
    });
    if (cached + seq > this.config.context_length) {
      throw new InvalidOptionError(
        `Expected at most ${this.config.context_length - cached} tokens (context_length ${this.config.context_length}, ${cached} cached) for ids but received ${seq}`,
        'ids',
      );
    }
    return { flat, batch: rows.length, seq };
  }
}

function parseLogitsOption(options: { logits?: LogitsMode }): LogitsMode {
  return parseOptions(z.object({ logits: oneOf(['none', 'last', 'all']).optional() }).strict(), options).logits ?? 'none';
}
