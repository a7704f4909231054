// The turn-taking of calls on one model (see Qwen3Model.exclusive for the rule), and what the
// JS side knows of the KV cache so that a holder that gave up its turn gets its cache back.

/** Where a holder stands. A parked one gave up its turn while idle and takes a new one on its next step. */
export type LeaseState = 'waiting' | 'holding' | 'parked' | 'released';

/** The tokens the KV cache holds per row, and the left padding its first step set (null: none). */
export interface CacheContent {
  rows: number[][];
  pad: number[] | null;
}

/** What a parked holder left in the cache; `epoch` tells whether anyone changed it since. */
export interface SavedCache {
  epoch: number;
  /** null: the holder's cache is not known (a failed native step), so it cannot be rebuilt. */
  content: CacheContent | null;
  /** The holder emptied its cache while parked and asked for its memory back. */
  releaseMemory: boolean;
}

export class Lease {
  state: LeaseState = 'waiting';
  /** Native steps in flight for this holder. */
  busy = 0;
  idleSince = Date.now();
  saved: SavedCache | null = null;
  /** The wait for a new turn (and the cache rebuild) of a parked holder, shared by its steps. */
  resuming: Promise<void> | null = null;
}

interface Waiter {
  lease: Lease;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * A first-come, first-served lock whose holder is parked (its turn handed to the next waiter)
 * once it has run no step for `idleMs` while someone waits.
 */
export class ModelLock {
  readonly #idleMs: number;
  readonly #onPark: (lease: Lease) => void;
  #holder: Lease | null = null;
  #waiters: Waiter[] = [];
  #timer: NodeJS.Timeout | null = null;
  #closed: (() => Error) | null = null;

  constructor(idleMs: number, onPark: (lease: Lease) => void) {
    this.#idleMs = idleMs;
    this.#onPark = onPark;
  }

  /** Resolves when `lease` holds the lock; rejects at once if the lock is (or gets) closed. */
  acquire(lease: Lease): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closed());
    if (this.#holder === null && this.#waiters.length === 0) {
      this.#grant(lease);
      return Promise.resolve();
    }
    lease.state = 'waiting';
    return new Promise<void>((resolve, reject) => {
      this.#waiters.push({ lease, resolve, reject });
      this.#schedule();
    });
  }

  /** Ends the lease for good; the next waiter gets the lock if this one held it. */
  release(lease: Lease): void {
    const previous = lease.state;
    lease.state = 'released';
    if (previous === 'waiting') this.#waiters = this.#waiters.filter((w) => w.lease !== lease);
    if (this.#holder === lease) {
      this.#holder = null;
      this.#grantNext();
    }
  }

  stepStarted(lease: Lease): void {
    lease.busy++;
    this.#clearTimer();
  }

  stepEnded(lease: Lease): void {
    lease.busy--;
    lease.idleSince = Date.now();
    this.#schedule();
  }

  /** Rejects every waiter now, and every later acquire, with a fresh `error()`. */
  close(error: () => Error): void {
    this.#closed = error;
    this.#clearTimer();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(error());
  }

  #grant(lease: Lease): void {
    this.#holder = lease;
    lease.state = 'holding';
    lease.idleSince = Date.now();
  }

  #grantNext(): void {
    const next = this.#waiters.shift();
    if (!next) return;
    this.#grant(next.lease);
    next.resolve();
    this.#schedule();
  }

  #clearTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }

  // Starts the idle clock when the holder is idle and someone waits. The timer is not unref'd:
  // a waiting call is work the process still has to do.
  #schedule(): void {
    this.#clearTimer();
    const holder = this.#holder;
    if (holder === null || holder.busy > 0 || this.#waiters.length === 0) return;
    const wait = Math.max(0, this.#idleMs - (Date.now() - holder.idleSince));
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#holder !== holder || holder.busy > 0 || this.#waiters.length === 0) return this.#schedule();
      this.#onPark(holder);
      holder.state = 'parked';
      this.#holder = null;
      this.#grantNext();
    }, wait);
  }
}

/** A copy of the cache content, or null for an unknown one. */
export function copyContent(content: CacheContent | null): CacheContent | null {
  return content && { rows: content.rows.map((r) => [...r]), pad: content.pad && [...content.pad] };
}

/** The cache content after a step that ran `rows` after `content` (a cache step's new tokens). */
export function appendRows(content: CacheContent | null, rows: readonly (readonly number[])[], pad: readonly number[] | undefined): CacheContent | null {
  if (content === null) return null;
  if (content.rows.length === 0 || content.rows[0]!.length === 0) return { rows: rows.map((r) => [...r]), pad: pad ? [...pad] : null };
  if (content.rows.length !== rows.length) return null;
  content.rows.forEach((r, i) => {
    for (const id of rows[i]!) r.push(id);
  });
  return content;
}

/** Tokens per row in the cache content (0 when empty, -1 when unknown). */
export function contentLength(content: CacheContent | null): number {
  if (content === null) return -1;
  return content.rows.length === 0 ? 0 : content.rows[0]!.length;
}
