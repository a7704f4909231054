// Qwen3Model: the public handle on a loaded model. Validates every argument, serialises use of
// the native engine (one step at a time per model) and gives native errors the caller's stack.
import { z } from 'zod';
import type { Dtype, Quantize, Qwen3Config } from './config.js';
import { type DeviceName, type MemoryStats, memoryStats, resetPeakMemory } from './device.js';
import { DEFAULT_COLLECTIVE_TIMEOUT_MS, IDLE_HANDOVER_MS, type LoadOptions, type RandomWeights, abortableLoad, loadAborted, loadSchema, resolveConfig, resolveRanks } from './model/load.js';
import { type CallChannel, type CallLeader, followCalls, followerGuard, leadCalls } from './model/forward-calls.js';
import { processRankDevice, resolveProcessGroup } from './model/process-group.js';
import { warmUp } from './model/warmup.js';
import { checkMemoryFits } from './model/memory.js';
import { resolveModelDir } from './hub/model.js';
import { isRepoId } from './hub/settings.js';
import { resolveModelSource } from './model/path.js';
import { type CacheContent, Lease, ModelLock, appendRows, contentLength, copyContent } from './model/queue.js';
import { GREEDY, type LogitsMode, type SamplingOptions, type TokenIds, checkTokenIds, stepRequest, withCallerStack } from './model/request.js';
import { type NativeLoadRequest, type NativeModel, type NativeStepResult, native } from './native.js';
import { type SlotRow, type SlotRowOutput, type SlotStepOptions, SlotPool, runCopySlot, runSlotStep } from './model/slots.js';
import { formatModelSummary } from './summary.js';
import { InvalidOptionError, boolean, describeValue, integer, nonEmptyString, oneOf, parseOptions } from './validate.js';

export { IDLE_HANDOVER_MS, type LoadOptions, type RandomWeights } from './model/load.js';
export type { LogitsMode, SamplingOptions, TokenIds } from './model/request.js';
export type { SlotRow, SlotRowOutput, SlotSampling, SlotStepOptions, TokenLogprob } from './model/slots.js';

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
  /** One step over sequence slots taken with takeSlot() (see model/slots.ts); leaves the batch KV cache alone. */
  slotStep(rows: readonly SlotRow[], options?: SlotStepOptions): Promise<SlotRowOutput[]>;
  /** Slot `to` gets the first `length` tokens of slot `from`. */
  copySlot(from: number, to: number, length: number): Promise<void>;
}

export class Qwen3Model {
  readonly path: string;
  readonly config: Readonly<Qwen3Config>;
  /** The device, or with tensor parallelism rank 0's. */
  readonly device: DeviceName;
  /** Every device the model runs on in this process: one, or the tensor-parallel ranks' in rank order. */
  readonly devices: readonly DeviceName[];
  /** With LoadOptions.processGroup: this process's rank and the group's size; else null. */
  readonly processGroup: Readonly<{ rank: number; worldSize: number }> | null;
  /** LoadOptions.forwardCalls: rank 0 sends its calls to the other ranks, which follow them (followCalls). */
  readonly forwardsCalls: boolean;
  readonly dtype: Dtype;
  readonly compiled: boolean;
  /** The format the weights were quantized to at load ("int8", "fp8"), else null. */
  readonly quantize: Quantize | null;
  /** The vocabulary head is the embedding table (one tensor on the device). */
  readonly tieWordEmbeddings: boolean;
  #native: NativeModel | null;
  /** A rank other than 0 of a forwardCalls group: where it meets rank 0, and its engine unguarded (followCalls); else null. */
  readonly #channel: (CallChannel & { native: NativeModel }) | null;
  #following = false;
  /** Rank 0 of a forwardCalls group: the connections to the other ranks; else null. */
  readonly #leader: CallLeader | null;
  readonly #lock: ModelLock;
  /** What the KV cache holds, as far as the JS side knows (null: unknown after a failed step). */
  #cache: CacheContent | null = { rows: [], pad: null };
  /** Counts changes of the KV cache, so a parked holder can tell whether its cache survived. */
  #cacheEpoch = 0;
  readonly #slots = new SlotPool();

  private constructor(path: string, config: Qwen3Config, tied: boolean, devices: DeviceName[], dtype: Dtype, compiled: boolean, quantize: Quantize | null, handle: NativeModel, idleHandoverMs: number, forwarding: { channel: (CallChannel & { native: NativeModel }) | null; leader: CallLeader | null }) {
    this.path = path;
    const group = handle.info().processGroup;
    this.processGroup = group ? Object.freeze({ ...group }) : null;
    this.#channel = forwarding.channel;
    this.#leader = forwarding.leader;
    this.forwardsCalls = this.#channel !== null || this.#leader !== null;
    this.config = Object.freeze({ ...config });
    this.tieWordEmbeddings = tied;
    this.device = devices[0]!;
    this.devices = Object.freeze([...devices]);
    this.dtype = dtype;
    this.compiled = compiled;
    this.quantize = quantize;
    this.#native = handle;
    this.#lock = new ModelLock(idleHandoverMs, (lease) => {
      lease.saved = { epoch: this.#cacheEpoch, content: copyContent(this.#cache), releaseMemory: false };
    });
  }

  /**
   * Loads a model onto a device: a torch.save(state_dict) checkpoint in the book's layout (with
   * `config`), a Hugging Face Qwen3 folder (config.json and safetensors, single or sharded), or
   * a Hub repo id such as "Qwen/Qwen3-8B" (downloaded into the Hugging Face cache first).
   * Checkpoints are only ever read as data (no pickle code runs); a model that cannot fit the
   * device's free memory is refused before loading; `signal` aborts the load.
   *
   * With no path, `Qwen3Model.load({ config, randomWeights: { seed } })` makes random weights of
   * the config's shape directly on the device and reads no file (see LoadOptions.randomWeights).
   */
  static async load(path: string, options?: LoadOptions): Promise<Qwen3Model>;
  static async load(options: LoadOptions & { randomWeights: RandomWeights }): Promise<Qwen3Model>;
  static async load(source: string | LoadOptions, ...rest: LoadOptions[]): Promise<Qwen3Model> {
    const caller = new Error();
    if (typeof source === 'object' && source !== null && !Array.isArray(source)) {
      if (rest.length > 0) {
        throw new InvalidOptionError('Expected Qwen3Model.load(path, options) or Qwen3Model.load(options) with randomWeights, not two objects', 'path');
      }
      return Qwen3Model.#loadRandom(source, caller);
    }
    const path = parseOptions(nonEmptyString(), source, 'path');
    const opts = parseOptions(loadSchema, rest[0] ?? {});
    if (opts.randomWeights) {
      throw new InvalidOptionError(`Random weights read no file: leave the path out (Qwen3Model.load({ config, randomWeights })) instead of ${path}`, 'randomWeights');
    }
    if (opts.signal?.aborted) throw loadAborted(path, opts.signal);
    // A Hub repo id (owner/name) that names no local path is downloaded into the shared cache first.
    const where = isRepoId(path) ? await resolveModelDir(path, { revision: opts.revision, signal: opts.signal }) : path;
    const found = await resolveModelSource(where);
    const hf = found.kind === 'huggingface' ? found.model : null;
    if (hf && opts.config !== undefined) {
      throw new InvalidOptionError(`A Hugging Face model folder brings its own config.json: leave config out for ${path}`, 'config');
    }
    // The book's checkpoints always hold their own out_head.
    const { config, tied } = hf ? { config: hf.config, tied: hf.tieWordEmbeddings } : { config: (await resolveConfig(opts.config, opts.dtype)).config, tied: false };
    return Qwen3Model.#start(path, config, tied, opts, caller, {
      path: where,
      safetensors: hf ? { files: hf.files, tensors: hf.tensors } : null,
    });
  }

  static async #loadRandom(options: LoadOptions, caller: Error): Promise<Qwen3Model> {
    const opts = parseOptions(loadSchema, options);
    if (!opts.randomWeights) {
      throw new InvalidOptionError('Expected a model path as the first argument, or options with randomWeights (weights made on the device)', 'randomWeights');
    }
    if (opts.revision !== undefined) throw new InvalidOptionError('revision goes with a Hub repo id, not with random weights', 'revision');
    const resolved = await resolveConfig(opts.config, opts.dtype);
    const seed = opts.randomWeights.seed ?? 0;
    const label = `random weights (seed ${seed})`;
    if (opts.signal?.aborted) throw loadAborted(label, opts.signal);
    return Qwen3Model.#start(label, resolved.config, opts.randomWeights.tieWordEmbeddings ?? resolved.tied, opts, caller, {
      path: label,
      randomWeights: { seed },
    });
  }

  /** The memory check, then the native load of what `request` names. */
  static async #start(
    label: string,
    config: Qwen3Config,
    tied: boolean,
    opts: ReturnType<typeof loadSchema.parse>,
    caller: Error,
    request: Pick<NativeLoadRequest, 'path' | 'safetensors' | 'randomWeights'>,
  ): Promise<Qwen3Model> {
    const group = resolveProcessGroup(opts.processGroup);
    if (group && (opts.devices !== undefined || (opts.tensorParallel ?? 1) > 1)) {
      throw new InvalidOptionError('Give processGroup (one rank per process) or devices / tensorParallel (ranks as threads of this process), not both', 'processGroup');
    }
    if (opts.forwardCalls && !group) throw new InvalidOptionError('forwardCalls goes with processGroup (a model split over processes)', 'forwardCalls');
    const devices = group ? [processRankDevice(opts.device, group)] : resolveRanks(opts);
    const device = devices[0]!;
    const dtype = opts.dtype ?? config.dtype;
    checkMemoryFits(config, dtype, devices, tied, group?.worldSize);
    if (opts.signal?.aborted) throw loadAborted(label, opts.signal);
    const { dtype: _stored, ...architecture } = config;
    const compile = opts.compile ?? false;
    const ranks = devices.length > 1 ? { devices } : {};
    const processGroup = group ? { processGroup: { rank: group.rank, worldSize: group.worldSize, masterAddr: group.masterAddr, masterPort: group.masterPort } } : {};
    const timeout = opts.collectiveTimeoutMs !== undefined ? { collectiveTimeoutMs: opts.collectiveTimeoutMs } : {};
    const quantize = opts.quantize ? { quantize: opts.quantize } : {};
    const loading = native().loadModel({
      ...request, config: { ...architecture, tie_word_embeddings: tied }, device, dtype, compile, ...ranks, ...processGroup, ...timeout, ...quantize,
    });
    let handle = await withCallerStack(abortableLoad(loading, label, opts.signal), caller);
    let leader: CallLeader | null = null;
    const channel: CallChannel | null = opts.forwardCalls && group
      ? { rank: group.rank, worldSize: group.worldSize, host: group.masterAddr, port: group.forwardPort, timeoutMs: opts.collectiveTimeoutMs ?? DEFAULT_COLLECTIVE_TIMEOUT_MS }
      : null;
    try {
      // Every rank warms up alike, before rank 0 starts sending its calls.
      if (opts.warmup ?? device.startsWith('cuda')) await withCallerStack(warmUp(handle, config.context_length, config.vocab_size, compile), caller);
      if (channel?.rank === 0) {
        leader = await withCallerStack(leadCalls(handle, channel), caller);
        handle = leader.model();
      }
    } catch (err) {
      handle.dispose();
      throw err;
    }
    const follows = channel !== null && channel.rank !== 0;
    const forwarding = { channel: follows ? { ...channel, native: handle } : null, leader };
    if (follows) handle = followerGuard(handle, channel.rank);
    return new Qwen3Model(label, config, tied, devices, dtype, compile, opts.quantize ?? null, handle, opts.idleHandoverMs ?? IDLE_HANDOVER_MS, forwarding);
  }

  get disposed(): boolean {
    return this.#native === null;
  }

  #handle(): NativeModel {
    if (!this.#native) throw new Error('Model is disposed');
    return this.#native;
  }

  /**
   * Rank 0 of a model loaded with forwardCalls: why the other ranks can no longer follow its
   * calls (a rank's connection closed, or a rank never connected), after which every call fails
   * with it; null while they follow, and on other models.
   */
  get groupFailure(): Error | null {
    return this.#leader?.failure ?? null;
  }

  /**
   * On a rank other than 0 of a model loaded with forwardCalls: makes every call that rank 0's
   * model makes, in the same order, until rank 0 disposes it (then resolves; dispose this one
   * too). Rejects if rank 0 cannot be reached within collectiveTimeoutMs, or goes away first.
   */
  async followCalls(): Promise<void> {
    if (!this.#native) throw new Error('Model is disposed');
    if (!this.#channel) {
      throw new Error(this.forwardsCalls ? "Rank 0 makes the calls that the other ranks follow: call followCalls() on them" : 'followCalls() is for a model loaded with forwardCalls');
    }
    if (this.#following) throw new Error('This model is following rank 0 already');
    this.#following = true;
    try {
      await followCalls(this.#channel.native, this.#channel);
    } finally {
      this.#following = false;
    }
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

  /**
   * Slot steps that the engine ran before they were asked for (after a step whose rows are all
   * greedy, the one that would follow it), and how many of them served the request that came,
   * whole or in part. On by default on CUDA; QWEN3_SLOT_SPECULATION=1 or 0 forces it.
   */
  get slotSpeculation(): { run: number; used: number } {
    return this.#handle().info().slotSpeculation;
  }

  /**
   * Prompt chunks that ran inside a slot step's decode rows, one row per token, so that a
   * sequence joining costs the running ones about a step. On by default on CUDA (on the CPU a
   * prompt pass keeps the logits equal to the reference's); QWEN3_PROMPT_ROWS=1 or 0 forces it.
   */
  get slotPromptRows(): number {
    return this.#handle().info().slotPromptRows;
  }

  /** Bytes of weights on all its devices together. */
  get parameterBytes(): number {
    return this.#handle().info().parameterBytes;
  }

  /**
   * Runs `fn` with exclusive use of the model: calls made while another holds it wait their
   * turn, first come first served, so two generations never interleave their steps or share a
   * KV cache by accident.
   *
   * The rule for a holder that stops stepping (a stream whose consumer no longer pulls, or `fn`
   * awaiting something else): while another call waits, the holder keeps its turn for
   * `idleHandoverMs` (LoadOptions, default 1 s) after its last step; then the waiting calls go
   * first. The holder does not fail: its next step waits for a new turn, and if another call
   * changed the KV cache meanwhile, that step first rebuilds the holder's cache with one prefill
   * of the tokens it held (equal keys and values up to rounding: greedy tokens are those of an
   * uninterrupted run except at near-ties). So an abandoned stream, one `next()` and no more,
   * holds up other calls for at most `idleHandoverMs`, and a stream that is pulled steadily
   * keeps the model to itself. dispose() rejects every waiting call at once.
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

  /** Waits for a turn (see exclusive); call `release` when done (streams hold it across yields). */
  async acquire(): Promise<{ session: ModelSession; release: () => void }> {
    this.#handle();
    const lease = new Lease();
    await this.#lock.acquire(lease);
    return { session: this.#session(lease), release: () => this.#lock.release(lease) };
  }

  #session(lease: Lease): ModelSession {
    // Every step takes the turn back first if the holder was parked, and counts as activity.
    const run = async <T>(work: () => Promise<T>): Promise<T> => {
      await this.#resume(lease);
      this.#lock.stepStarted(lease);
      try {
        return await work();
      } finally {
        this.#lock.stepEnded(lease);
      }
    };
    const step = (kind: 'prefill' | 'decode' | 'forward') => (ids: TokenIds, logits: LogitsMode = 'none', sampling = GREEDY, pad?: readonly number[]) =>
      run(() => this.#step(kind, ids, logits, sampling, pad));
    const model = this;
    return {
      prefill: step('prefill'),
      decode: step('decode'),
      forward: step('forward'),
      decodeSteps: (ids: TokenIds, steps: number, sampling = GREEDY, stopId: number | null = null) => run(() => this.#steps(ids, steps, sampling, stopId)),
      slotStep: (rows: readonly SlotRow[], options: SlotStepOptions = {}) => run(() => runSlotStep(this.#handle(), this.#slots, this.config, rows, options)),
      copySlot: (from: number, to: number, length: number) => run(() => runCopySlot(this.#handle(), this.#slots, from, to, length)),
      resetCache: (release = false) => {
        if (lease.state === 'released') throw new Error('This model session has ended: acquire the model again');
        if (lease.state !== 'holding') {
          // Parked: the model may be someone else's now; the reset happens when the turn comes back.
          lease.saved = { epoch: -1, content: { rows: [], pad: null }, releaseMemory: release };
          return;
        }
        this.#handle().resetCache(this.#mayRelease(release));
        this.#setCache({ rows: [], pad: null });
      },
      get cacheLength() {
        const saved = lease.state === 'holding' ? -1 : contentLength(lease.saved?.content ?? null);
        return saved >= 0 ? saved : model.cacheLength;
      },
    };
  }

  /** Gives a parked holder a new turn and its KV cache back; nothing to do for the holder. */
  async #resume(lease: Lease): Promise<void> {
    if (lease.state === 'holding') return;
    if (lease.state === 'released') throw new Error('This model session has ended: acquire the model again');
    lease.resuming ??= (async () => {
      try {
        await this.#lock.acquire(lease);
        await this.#restore(lease);
      } finally {
        lease.resuming = null;
      }
    })();
    await lease.resuming;
  }

  async #restore(lease: Lease): Promise<void> {
    const saved = lease.saved;
    lease.saved = null;
    if (saved === null || saved.epoch === this.#cacheEpoch) return; // nobody touched the cache
    if (saved.content === null) {
      throw new Error('The KV cache of this generation cannot be rebuilt (a step of it failed) after another call used the model; start it again');
    }
    const handle = this.#handle();
    this.#lock.stepStarted(lease);
    try {
      handle.resetCache(this.#mayRelease(saved.releaseMemory));
      this.#setCache({ rows: [], pad: null });
      const { rows, pad } = saved.content;
      const seq = contentLength(saved.content);
      if (seq > 0) {
        const flat = new Int32Array(rows.length * seq);
        rows.forEach((row, r) => flat.set(row, r * seq));
        const request = { ...stepRequest(flat, rows.length, seq, 'none', GREEDY), pad: pad ? Int32Array.from(pad) : null };
        await withCallerStack(handle.prefill(request), new Error());
        this.#setCache(saved.content);
      }
    } catch (err) {
      this.#cache = null;
      throw err;
    } finally {
      this.#lock.stepEnded(lease);
    }
  }

  // Releasing the cache's memory also frees the slots' storage (native/model/slot_cache.h): not
  // while a chat session or scheduler holds a slot, whose content must survive.
  #mayRelease(release: boolean): boolean {
    return release && this.#slots.taken === 0;
  }

  #setCache(content: CacheContent | null): void {
    this.#cache = content;
    this.#cacheEpoch++;
  }

  /** Records what a cache step added; a result that does not fit what we know makes the cache unknown. */
  #recordCache(added: number[][], pad: readonly number[] | undefined, cacheLength: number): void {
    const next = appendRows(this.#cache, added, pad);
    this.#setCache(contentLength(next) === cacheLength ? next : null);
  }

  // After a failed native step the cache is known only if its length did not change.
  #recordFailure(before: number): void {
    let same = false;
    try {
      same = this.#native !== null && this.#native.cacheLength() === before && contentLength(this.#cache) === before;
    } catch {
      same = false;
    }
    if (!same) this.#setCache(null);
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

  /**
   * Takes a sequence slot: a KV cache row of its own that slot steps extend (chat sessions and
   * the batch scheduler are built on them). Give it back with giveSlot() when done.
   */
  takeSlot(): number {
    this.#handle();
    return this.#slots.take();
  }

  giveSlot(slot: number): void {
    this.#slots.give(slot);
  }

  /** Runs one slot step in its own turn (see ModelSession.slotStep). */
  async slotStep(rows: readonly SlotRow[], options: SlotStepOptions = {}): Promise<SlotRowOutput[]> {
    return this.exclusive((s) => s.slotStep(rows, options));
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
   * progress, and every call waiting its turn, then rejects with "Model is disposed". A rank of a
   * process group lets go on the thread pool, where rank 0 waits (up to 10 s) until the other
   * ranks are done with its store: this returns at once, and Node stays up until then.
   */
  dispose(): void {
    this.#native?.dispose();
    this.#native = null;
    this.#lock.close(() => new Error('Model is disposed'));
  }

  async #step(kind: 'prefill' | 'decode' | 'forward', ids: TokenIds, logits: LogitsMode, sampling: SamplingOptions, pad?: readonly number[]): Promise<StepOutput> {
    const caller = new Error();
    const handle = this.#handle();
    const { flat, batch, seq } = checkTokenIds(ids, kind === 'forward' ? 0 : handle.cacheLength(), this.config);
    if (kind === 'decode' && seq !== 1) {
      throw new InvalidOptionError(`Expected one token per row for ids but received ${seq}`, 'ids');
    }
    const request = { ...stepRequest(flat, batch, seq, logits, sampling), pad: pad ? Int32Array.from(pad) : null };
    const before = handle.cacheLength();
    let result: NativeStepResult;
    try {
      result = await withCallerStack(handle[kind](request), caller);
    } catch (err) {
      if (kind !== 'forward') this.#recordFailure(before);
      throw err;
    }
    if (kind !== 'forward') {
      const rows = Array.from({ length: batch }, (_, r) => Array.from(flat.subarray(r * seq, (r + 1) * seq)));
      this.#recordCache(rows, before === 0 ? pad : undefined, result.cacheLength);
    }
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
    const { flat, batch, seq } = checkTokenIds(ids, cached, this.config);
    if (seq !== 1) throw new InvalidOptionError(`Expected one token per row for ids but received ${seq}`, 'ids');
    parseOptions(z.object({ steps: integer(1, this.config.context_length - cached) }), { steps });
    const request = { ...stepRequest(flat, batch, seq, 'none', sampling), steps, stopId: stopId ?? -1 };
    let result: NativeStepResult;
    try {
      result = await withCallerStack(handle.decodeSteps(request), caller);
    } catch (err) {
      this.#recordFailure(cached);
      throw err;
    }
    const out: number[][] = [];
    for (let i = 0; i < result.next.length; i += batch) out.push(Array.from(result.next.subarray(i, i + batch)));
    // The cache holds the fed token and every chosen one but the last (the steps consumed those).
    this.#recordCache(Array.from({ length: batch }, (_, r) => [flat[r]!, ...out.slice(0, -1).map((ids) => ids[r]!)]), undefined, result.cacheLength);
    return { steps: out, cacheLength: result.cacheLength };
  }
}

function parseLogitsOption(options: { logits?: LogitsMode }): LogitsMode {
  return parseOptions(z.object({ logits: oneOf(['none', 'last', 'all']).optional() }).strict(), options).logits ?? 'none';
}
