// Slots whose sequences have ended but whose keys and values are kept, newest last, so that a
// new request that starts the same way (a system prompt, the earlier turns of a chat) runs only
// its new tokens. Bounded by a count of slots: each slot's memory is the slot cache's capacity
// (see docs/guide/serve.md), so the count bounds the memory.

export interface CachedSlot {
  slot: number;
  /** The tokens the slot holds. */
  tokens: readonly number[];
}

/** How many leading tokens a and b share. */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export class PrefixCache {
  readonly #entries: CachedSlot[] = []; // least recently used first
  readonly #limit: number;

  constructor(limit: number) {
    this.#limit = limit;
  }

  get size(): number {
    return this.#entries.length;
  }

  /** Keeps a slot; returns the slots that no longer fit (least recently used), for the caller to give back. */
  put(entry: CachedSlot): number[] {
    this.#entries.push(entry);
    const evicted: number[] = [];
    while (this.#entries.length > this.#limit) evicted.push(this.#entries.shift()!.slot);
    return evicted;
  }

  /** The entry sharing the longest prefix with `prompt` (ties: the most recent), or null when none shares a token. */
  best(prompt: readonly number[]): { entry: CachedSlot; shared: number } | null {
    let found: { entry: CachedSlot; shared: number } | null = null;
    for (const entry of this.#entries) {
      const shared = commonPrefix(entry.tokens, prompt);
      if (shared > 0 && shared >= (found?.shared ?? 0)) found = { entry, shared };
    }
    return found;
  }

  /** Removes an entry (the caller takes its slot over). */
  take(entry: CachedSlot): void {
    const i = this.#entries.indexOf(entry);
    if (i >= 0) this.#entries.splice(i, 1);
  }

  /** Empties the cache, returning every slot. */
  clear(): number[] {
    return this.#entries.splice(0).map((e) => e.slot);
  }
}
