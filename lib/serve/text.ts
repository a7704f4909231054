// Generated ids to the text a response carries, piece by piece as they stream:
//   - TextStream: whole UTF-8 characters only (a token may end inside one), special tokens such as
//     <|im_end|> left out as vLLM's default skip_special_tokens leaves them out;
//   - StopMatcher: the stop strings, matched on the decoded text; a piece that could be the start
//     of one is held back until it is known not to be, and the stop string itself is dropped;
//   - ReasoningSplitter: Qwen3's thinking, the text between <think> and </think>, apart from the
//     answer, read the way the chat template reads an assistant turn (splitThinking): the newlines
//     around the thinking and those that open the answer are layout, not content.
// Each push returns what may be sent now; flush returns what was held back once the reply ends.
import type { Qwen3Tokenizer, StreamDecoder } from '../tokenizer.js';

export class TextStream {
  readonly #decoder: StreamDecoder;
  readonly #skip: ReadonlySet<number>;

  constructor(tokenizer: Qwen3Tokenizer) {
    this.#decoder = tokenizer.createStreamDecoder();
    this.#skip = new Set(tokenizer.specialTokens.values());
  }

  push(id: number): string {
    return this.#skip.has(id) ? '' : this.#decoder.push(id);
  }

  flush(): string {
    return this.#decoder.flush();
  }
}

/** The length of the longest end of `text` that is the start of `word` (but not all of it). */
function partialSuffix(text: string, word: string): number {
  for (let k = Math.min(word.length - 1, text.length); k > 0; k--) {
    if (text.endsWith(word.slice(0, k))) return k;
  }
  return 0;
}

export class StopMatcher {
  readonly #stops: readonly string[];
  #held = '';
  #stopped = false;

  constructor(stops: readonly string[]) {
    this.#stops = stops;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** The text that may be sent now; once a stop string matched, the text before it, then '' for good. */
  push(text: string): string {
    if (this.#stopped) return '';
    const all = this.#held + text;
    let at = -1;
    for (const stop of this.#stops) {
      const i = all.indexOf(stop);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      this.#stopped = true;
      this.#held = '';
      return all.slice(0, at);
    }
    let keep = 0;
    for (const stop of this.#stops) keep = Math.max(keep, partialSuffix(all, stop));
    this.#held = all.slice(all.length - keep);
    return all.slice(0, all.length - keep);
  }

  flush(): string {
    const rest = this.#held;
    this.#held = '';
    return rest;
  }
}

export interface ReplyParts {
  reasoning: string;
  content: string;
}

const THINK = '<think>';
const END_THINK = '</think>';

export class ReasoningSplitter {
  /** 'start': the reply may still open with <think>; 'thinking'; 'answer'. */
  #state: 'start' | 'thinking' | 'answer';
  #held = '';
  #thinkingStarted = false;
  #answerStarted = false;

  /** `startsThinking`: the prompt already opened the think block (a generation prompt ending in <think>). */
  constructor(startsThinking: boolean) {
    this.#state = startsThinking ? 'thinking' : 'start';
  }

  push(text: string): ReplyParts {
    const out: ReplyParts = { reasoning: '', content: '' };
    let rest = this.#held + text;
    this.#held = '';
    while (rest !== '') {
      if (this.#state === 'start') {
        const trimmed = rest.replace(/^\s+/, '');
        if (trimmed.startsWith(THINK)) {
          this.#state = 'thinking';
          rest = trimmed.slice(THINK.length);
        } else if (THINK.startsWith(trimmed)) {
          this.#held = rest; // maybe the start of <think>: wait for more
          return out;
        } else {
          this.#state = 'answer';
        }
      } else if (this.#state === 'thinking') {
        const end = rest.indexOf(END_THINK);
        const body = end >= 0 ? rest.slice(0, end) : rest;
        out.reasoning += this.#thinking(body, end >= 0);
        if (end < 0) return out;
        this.#state = 'answer';
        rest = rest.slice(end + END_THINK.length);
      } else {
        out.content += this.#answer(rest);
        return out;
      }
    }
    return out;
  }

  flush(): ReplyParts {
    const rest = this.#held;
    this.#held = '';
    if (this.#state === 'thinking') return { reasoning: this.#thinking(rest, true), content: '' };
    return { reasoning: '', content: this.#answer(rest) };
  }

  /** Thinking text to send: leading newlines dropped, trailing ones (and a partial </think>) held until more comes. */
  #thinking(text: string, closed: boolean): string {
    if (!this.#thinkingStarted) {
      text = text.replace(/^\n+/, '');
      if (text === '') return '';
      this.#thinkingStarted = true;
    }
    if (closed) return text.replace(/\n+$/, '');
    const partial = partialSuffix(text, END_THINK);
    const body = text.slice(0, text.length - partial).replace(/\n+$/, '');
    this.#held = text.slice(body.length);
    return body;
  }

  #answer(text: string): string {
    if (!this.#answerStarted) {
      text = text.replace(/^\n+/, '');
      if (text === '') return '';
      this.#answerStarted = true;
    }
    return text;
  }
}
