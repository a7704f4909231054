// What the serve tests share: the tiny model with the real Qwen3 tokenizer and chat template, an
// OpenAI client for a server, a step gate (a beforeStep hook that holds one request at a chosen
// point until the test lets it go, or until the request is aborted), a completer that plays back
// scripted tokens, and raw server-sent-event reading.
import { join } from 'node:path';
import OpenAI from 'openai';
import { Qwen3Model, Qwen3Tokenizer } from '../../lib/index.js';
import { Channel } from '../../lib/batch/channel.js';
import type { Completer, CompleterStats, Completion, CompletionOutcome, CompletionRequest, CompletionToken, StepHook, StepRow } from '../../lib/serve/completer.js';
import { loadFixture } from './fixtures.js';

export const TOKENIZER_DIR = join(__dirname, '..', '.fixtures', 'chat-template', 'tokenizer');

/** tiny-bigvocab (the full vocabulary, random weights) and the real tokenizer folder with its template. */
export async function loadTiny(): Promise<{ model: Qwen3Model; tokenizer: Qwen3Tokenizer }> {
  const big = loadFixture('tiny-bigvocab');
  const model = await Qwen3Model.load(big.modelPath, { config: big.configPath, device: 'cpu', dtype: 'float32' });
  const tokenizer = await Qwen3Tokenizer.load({ modelDir: TOKENIZER_DIR });
  return { model, tokenizer };
}

export function client(url: string, apiKey = 'unused'): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 });
}

const sameIds = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * A beforeStep hook that holds the request whose prompt is `promptIds` once it has generated
 * `generated` tokens: `reached` resolves then, and the step waits until release() is called or
 * the request is aborted (its row's signal fires), whichever comes first.
 */
export class StepGate {
  readonly reached: Promise<StepRow>;
  #arrive!: (row: StepRow) => void;
  #release!: () => void;
  readonly #released = new Promise<void>((resolve) => (this.#release = resolve));
  #target: { promptIds: readonly number[]; generated: number } | null = null;
  /** How the held request was let go: by release(), or by its abort. */
  readonly outcome: Promise<'released' | 'aborted'>;
  #settle!: (how: 'released' | 'aborted') => void;

  constructor() {
    this.reached = new Promise((resolve) => (this.#arrive = resolve));
    this.outcome = new Promise((resolve) => (this.#settle = resolve));
  }

  hold(promptIds: readonly number[], generated: number): this {
    this.#target = { promptIds, generated };
    return this;
  }

  release(): void {
    this.#release();
  }

  readonly hook: StepHook = async (rows) => {
    const t = this.#target;
    const row = t && rows.find((r) => r.generated === t.generated && sameIds(r.request.promptIds, t.promptIds));
    if (!row) return;
    this.#target = null;
    this.#arrive(row);
    const aborted = new Promise<void>((resolve) => {
      if (row.signal.aborted) resolve();
      row.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    this.#settle(await Promise.race([this.#released.then(() => 'released' as const), aborted.then(() => 'aborted' as const)]));
  };
}

/** A completer that answers every request with `script` (ids, optionally with logprobs) and then `reason`. */
export class ScriptedCompleter implements Completer {
  readonly requests: CompletionRequest[] = [];
  constructor(readonly script: readonly (number | CompletionToken)[], readonly reason: 'stop' | 'length' = 'stop') {}

  complete(request: CompletionRequest): Completion {
    this.requests.push(request);
    const channel = new Channel<CompletionToken, CompletionOutcome>();
    for (const t of this.script) channel.push(typeof t === 'number' ? { id: t } : t);
    channel.end({ reason: this.reason, generatedTokens: this.script.length + (this.reason === 'stop' ? 1 : 0) });
    return channel;
  }

  stats(): CompleterStats {
    return { queued: 0, running: 0, generatedTokens: 0 };
  }

  async close(): Promise<void> {}
}

/** The JSON payloads of a server-sent-event body, and whether it ended with [DONE]. */
export function parseEvents(body: string): { events: Record<string, unknown>[]; done: boolean } {
  const lines = body.split('\n\n').filter((l) => l !== '').map((l) => l.replace(/^data: /, ''));
  const done = lines.at(-1) === '[DONE]';
  return { events: lines.filter((l) => l !== '[DONE]').map((l) => JSON.parse(l) as Record<string, unknown>), done };
}

export async function post(url: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; json: any; text: string }> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: response.status, headers: response.headers, json, text };
}
