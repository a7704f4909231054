// A Completion that a completer fills from its own loop: tokens are buffered until the reader
// takes them, so the model never waits for a slow client, and the outcome settles exactly once.
import type { Completion, CompletionOutcome, CompletionToken } from './completer.js';

export class CompletionChannel implements Completion {
  readonly finish: Promise<CompletionOutcome>;
  #tokens: CompletionToken[] = [];
  #ended = false;
  #error: unknown = undefined;
  #wake: (() => void) | null = null;
  #iterated = false;
  #settle!: { resolve: (o: CompletionOutcome) => void; reject: (e: unknown) => void };

  constructor() {
    this.finish = new Promise<CompletionOutcome>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    // A failure is also reported through the iteration; nobody has to await `finish` for it.
    this.finish.catch(() => {});
  }

  get ended(): boolean {
    return this.#ended;
  }

  push(token: CompletionToken): void {
    if (this.#ended) return;
    this.#tokens.push(token);
    this.#notify();
  }

  end(outcome: CompletionOutcome): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#settle.resolve(outcome);
    this.#notify();
  }

  fail(error: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error ?? new Error('The completion failed');
    this.#settle.reject(this.#error);
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<CompletionToken> {
    if (this.#iterated) throw new Error('A completion can be iterated only once');
    this.#iterated = true;
    for (;;) {
      if (this.#tokens.length > 0) {
        const batch = this.#tokens;
        this.#tokens = [];
        yield* batch;
        continue;
      }
      if (this.#ended) {
        if (this.#error !== undefined) throw this.#error;
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}
