// How `qwen3 chat` shows a reply as it streams: the thinking (what Qwen3 writes between <think>
// and </think>) goes to one sink, standard error, and the answer to another, standard output.
// The newlines the model puts around each part are the template's layout, not content, so they
// are dropped: the ones at the start of a part at once, the ones at its end when it ends.
import type { StreamDecoder } from '../tokenizer.js';

export interface ReplySinks {
  thinking(text: string): void;
  answer(text: string): void;
}

/** Text of one part, with the newlines at its start dropped and those at its end held back. */
class Part {
  #started = false;
  #held = '';
  constructor(readonly write: (text: string) => void) {}

  push(text: string): void {
    if (!this.#started) {
      text = text.replace(/^\n+/, '');
      if (text === '') return;
      this.#started = true;
    }
    const body = (this.#held + text).replace(/\n+$/, '');
    this.#held = (this.#held + text).slice(body.length);
    if (body !== '') this.write(body);
  }

  get started(): boolean {
    return this.#started;
  }
}

export class ReplyWriter {
  /** Ids of the answer part, for the conversation's history. */
  readonly answerIds: number[] = [];
  readonly #decoder: StreamDecoder;
  readonly #think: { start: number | null; end: number | null };
  readonly #thinking: Part;
  readonly #answer: Part;
  #inThinking: boolean;

  /**
   * `startsThinking`: the prompt already opened the think block (a template whose generation
   * prompt ends in `<think>`), so the reply begins inside it.
   */
  constructor(decoder: StreamDecoder, think: { start: number | null; end: number | null }, sinks: ReplySinks, startsThinking: boolean) {
    this.#decoder = decoder;
    this.#think = think;
    this.#thinking = new Part(sinks.thinking);
    this.#answer = new Part(sinks.answer);
    this.#inThinking = startsThinking;
  }

  /** Whether any thinking was written (the caller closes its line). */
  get thought(): boolean {
    return this.#thinking.started;
  }

  push(id: number): void {
    // A think block counts only at the start of the reply, where Qwen3 writes it.
    if (id === this.#think.start && !this.#inThinking && !this.#answer.started && this.answerIds.length === 0) {
      this.#inThinking = true;
      return;
    }
    if (id === this.#think.end && this.#inThinking) {
      this.#thinking.push(this.#decoder.flush());
      this.#inThinking = false;
      return;
    }
    if (!this.#inThinking) this.answerIds.push(id);
    (this.#inThinking ? this.#thinking : this.#answer).push(this.#decoder.push(id));
  }

  /** Writes what the decoder still holds. */
  finish(): void {
    (this.#inThinking ? this.#thinking : this.#answer).push(this.#decoder.flush());
  }
}
