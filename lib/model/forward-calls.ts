// LoadOptions.forwardCalls: a model split over processes whose calls come from rank 0 alone (a
// server's requests, a chat's turns), not from the same program run in every process. Rank 0
// sends every call it hands its engine to the other ranks, in the order it hands them over and
// with all of their arguments (sampling's random draws included), over one TCP connection per
// rank; each rank makes the same call on its own share (Qwen3Model.followCalls), so the ranks'
// collectives meet as they do when every process runs the same program.
import { once } from 'node:events';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';
import type { NativeModel } from '../native.js';

/** Where rank 0 listens for the other ranks, and for how long each side waits for the other. */
export interface CallChannel {
  rank: number;
  worldSize: number;
  host: string;
  port: number;
  timeoutMs: number;
}

type Method = 'prefill' | 'decode' | 'forward' | 'decodeSteps' | 'slotStep' | 'copySlot' | 'resetCache' | 'dispose';

interface Call {
  method: Method;
  args: unknown[];
}

const TYPED_ARRAYS = { Int32Array, Float32Array, Float64Array } as const;
type TypedName = keyof typeof TYPED_ARRAYS;

/** One call as a line of JSON; typed arrays travel as their bytes (base64), so every draw arrives exact. */
function encodeCall(call: Call): string {
  return `${JSON.stringify(call, (_key, value: unknown) =>
    ArrayBuffer.isView(value) ? { $typed: value.constructor.name, base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') } : value,
  )}\n`;
}

function decodeCall(line: string): Call {
  return JSON.parse(line, (_key, value: unknown) => {
    if (value === null || typeof value !== 'object' || !('$typed' in value)) return value;
    const { $typed, base64 } = value as { $typed: string; base64: string };
    const Ctor = TYPED_ARRAYS[$typed as TypedName];
    if (Ctor === undefined) throw new Error(`rank 0 sent an array of unknown type ${$typed}`);
    const bytes = Buffer.from(base64, 'base64');
    return new Ctor(new Uint8Array(bytes).buffer); // a copy, aligned for any element size
  }) as Call;
}

/**
 * Rank 0's side: listens at channel.host:channel.port, takes one connection from each other
 * rank, and returns a NativeModel that sends each call to them before it makes it itself. Calls
 * made before every rank has connected wait in the connections' buffers: their collectives then
 * wait for the ranks as they would anyway (up to the collective timeout).
 */
export async function leadCalls(handle: NativeModel, channel: CallChannel): Promise<CallLeader> {
  const server = createServer();
  server.listen(channel.port, channel.host);
  try {
    await once(server, 'listening');
  } catch (err) {
    throw new Error(`Rank 0 could not listen for the other ranks' connections on ${channel.host}:${channel.port}: ${(err as Error).message}`);
  }
  return new CallLeader(handle, server, channel);
}

export class CallLeader {
  readonly #handle: NativeModel;
  readonly #server: Server;
  readonly #followers = new Map<number, Socket>();
  readonly #pending: string[] = []; // sent before every rank had connected, in order
  readonly #expected: number; // the other ranks
  #failure: Error | null = null;
  #disposed = false;
  #chain: Promise<unknown> = Promise.resolve();
  readonly #timer: NodeJS.Timeout;

  constructor(handle: NativeModel, server: Server, channel: CallChannel) {
    this.#handle = handle;
    this.#server = server;
    const expected = channel.worldSize - 1;
    this.#expected = expected;
    this.#timer = setTimeout(() => {
      if (this.#followers.size < expected) this.#fail(new Error(`Rank 0 waited ${channel.timeoutMs} ms for the other ranks to follow its calls; ${this.#followers.size} of ${expected} connected`));
    }, channel.timeoutMs);
    this.#timer.unref();
    server.on('connection', (socket) => {
      socket.setNoDelay(true);
      const lines = createInterface({ input: socket, crlfDelay: Infinity });
      lines.once('line', (line) => {
        lines.close();
        let rank = -1;
        try {
          rank = (JSON.parse(line) as { rank: number }).rank;
        } catch {}
        if (!Number.isInteger(rank) || rank < 1 || rank > expected || this.#followers.has(rank)) return void socket.destroy();
        this.#followers.set(rank, socket);
        socket.on('close', () => this.#fail(new Error(`Rank ${rank} stopped following rank 0's calls (its connection closed)`)));
        if (this.#followers.size === expected) {
          clearTimeout(this.#timer);
          server.close(); // no more connections
          for (const line of this.#pending.splice(0)) this.#write(line);
        }
      });
      socket.on('error', () => {}); // a close follows, which says what happened
    });
  }

  #fail(err: Error): void {
    if (!this.#disposed) this.#failure ??= err;
  }

  /** Why the other ranks can no longer follow (a connection closed, or never came); else null. */
  get failure(): Error | null {
    return this.#failure;
  }

  #write(line: string): void {
    for (const socket of this.#followers.values()) socket.write(line);
  }

  #send(call: Call): void {
    if (this.#failure) throw this.#failure;
    const line = encodeCall(call);
    if (this.#followers.size < this.#expected) this.#pending.push(line);
    else this.#write(line);
  }

  /** An engine call: after the one before has settled, so rank 0's engine takes them in the order sent. */
  #forward<T>(method: Method, args: unknown[], run: () => Promise<T>): Promise<T> {
    const result = this.#chain.then(() => {
      this.#send({ method, args });
      return run();
    });
    this.#chain = result.catch(() => undefined);
    return result;
  }

  model(): NativeModel {
    const h = this.#handle;
    return {
      prefill: (r) => this.#forward('prefill', [r], () => h.prefill(r)),
      decode: (r) => this.#forward('decode', [r], () => h.decode(r)),
      forward: (r) => this.#forward('forward', [r], () => h.forward(r)),
      decodeSteps: (r) => this.#forward('decodeSteps', [r], () => h.decodeSteps(r)),
      slotStep: (r) => this.#forward('slotStep', [r], () => h.slotStep(r)),
      copySlot: (from, to, length) => this.#forward('copySlot', [from, to, length], () => h.copySlot(from, to, length)),
      // Synchronous, and refused while a step runs: sent only once it has happened here.
      resetCache: (release) => {
        if (this.#failure) throw this.#failure;
        h.resetCache(release);
        this.#send({ method: 'resetCache', args: [release] });
      },
      cacheLength: () => h.cacheLength(),
      info: () => h.info(),
      dispose: () => {
        this.#disposed = true;
        clearTimeout(this.#timer);
        if (!this.#failure) {
          const line = encodeCall({ method: 'dispose', args: [] });
          for (const socket of this.#followers.values()) socket.end(line);
        }
        this.#server.close();
        h.dispose();
      },
    };
  }
}

/**
 * A follower's engine as its own Qwen3Model sees it: the steps are rank 0's to make (followCalls
 * makes them on the engine itself); what it reports, and dispose(), are its own.
 */
export function followerGuard(handle: NativeModel, rank: number): NativeModel {
  const refuse = (): never => {
    throw new Error(`Rank ${rank} follows rank 0's calls (forwardCalls): make them on rank 0, and call followCalls() here`);
  };
  return {
    prefill: refuse, decode: refuse, forward: refuse, decodeSteps: refuse, slotStep: refuse, copySlot: refuse, resetCache: refuse,
    cacheLength: () => handle.cacheLength(),
    info: () => handle.info(),
    dispose: () => handle.dispose(),
  };
}

/** Connects to rank 0, retrying until `deadline` (rank 0 may still be loading). */
async function connectToLeader(channel: CallChannel, deadline: number): Promise<Socket> {
  for (;;) {
    const socket = connect(channel.port, channel.host);
    try {
      await once(socket, 'connect');
      socket.setNoDelay(true);
      return socket;
    } catch (err) {
      socket.destroy();
      if (Date.now() >= deadline) {
        throw new Error(`Rank ${channel.rank} could not reach rank 0 at ${channel.host}:${channel.port} to follow its calls: ${(err as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/**
 * Another rank's side: makes each call rank 0 sends, in order, each after the one before has
 * settled, until rank 0 disposes its model. A call that fails here fails on rank 0 too (the same
 * arguments, or the collective it could not join), where its caller hears of it.
 */
export async function followCalls(handle: NativeModel, channel: CallChannel): Promise<void> {
  const socket = await connectToLeader(channel, Date.now() + channel.timeoutMs);
  socket.on('error', () => {}); // the line reader ends; the check below says what happened
  socket.write(`${JSON.stringify({ rank: channel.rank })}\n`);
  const lines = createInterface({ input: socket, crlfDelay: Infinity });
  for await (const line of lines) {
    const call = decodeCall(line);
    if (call.method === 'dispose') {
      socket.end();
      return;
    }
    try {
      if (call.method === 'resetCache') handle.resetCache(call.args[0] as boolean);
      else await (handle[call.method] as (...args: unknown[]) => Promise<unknown>)(...call.args);
    } catch (err) {
      // Rank 0's caller hears of a failed call; a model disposed here cannot follow any more.
      if (err instanceof Error && err.message === 'Model is disposed') {
        socket.destroy();
        throw err;
      }
    }
  }
  throw new Error(`Rank 0 went away without disposing its model: rank ${channel.rank} stops following`);
}
