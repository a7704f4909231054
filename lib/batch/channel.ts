// A stream that a producer fills from its own loop: items are buffered until the reader takes
// them, so the model never waits for a slow reader, and the outcome settles exactly once. The
// scheduler's sequences and the server's completions are both one.

export class Channel<T, Outcome> implements AsyncIterable<T> {
  readonly finish: Promise<Outcome>;
  #tokens: T[] = [];
  #ended = false;
  #error: unknown = undefined;
  #wake: (() => void) | null = null;
  #iterated = false;
  #settle!: { resolve: (o: Outcome) => void; reject: (e: unknown) => void };

  constructor() {
    this.finish = new Promise<Outcome>((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    // A failure is also reported through the iteration; nobody has to await `finish` for it.
    this.finish.catch(() => {});
  }

  get ended(): boolean {
    return this.#ended;
  }

  push(token: T): void {
    if (this.#ended) return;
    this.#tokens.push(token);
    this.#notify();
  }

  end(outcome: Outcome): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#settle.resolve(outcome);
    this.#notify();
  }

  fail(error: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error ?? new Error('The stream failed');
    this.#settle.reject(this.#error);
    this.#notify();
  }

  // The reader resumes in a later turn of the event loop, not in this one's microtasks: the
  // scheduler, which pushes every row's token after a step, then starts the next model step
  // before the readers' work (detokenizing, writing to sockets) runs, and that work overlaps the
  // step instead of delaying it.
  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    if (wake) setImmediate(wake);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#iterated) throw new Error('This stream can be iterated only once');
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
