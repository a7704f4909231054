// The load generator of `qwen3 bench-serve`: streamed completions over real HTTP against an
// OpenAI-compatible server, measuring what a client sees. Per request: time to the first token,
// the gaps between later tokens, and the tokens the server reports in `usage`. Requests run
// closed-loop (N clients, each sending its next request when the last ends) or open-loop (one
// request every `arrivalMs`, whatever is still running). An open loop's throughput over the whole
// run is bounded by its arrivals (the last request starts (requests - 1) * arrivalMs in, and its
// 200 tokens take their time after that), so it also reports the sustained rate: tokens streamed
// between the first request's end (when the number in flight has settled) and the last arrival,
// against the offered rate (maxTokens per arrivalMs).

export interface ServeLoadOptions {
  /** Server root, e.g. http://127.0.0.1:8080 */
  url: string;
  /** The model name to send ('' : none, the server's own). */
  model: string;
  apiKey?: string;
  /** Requests in flight at once (closed loop). Ignored when arrivalMs is set. */
  concurrency: number;
  requests: number;
  maxTokens: number;
  /** Prompt length in tokens (random ids below `vocab`, seeded per request). */
  promptTokens: number;
  vocab: number;
  /** Open loop: start a request every this many milliseconds. */
  arrivalMs?: number;
  /** Explicit prompts, request i taking prompts[i % length] (instead of random ones). */
  prompts?: number[][];
}

export interface Percentiles {
  p50: number;
  p99: number;
}

export interface ServeLoadResult {
  concurrency: number;
  arrivalMs: number | null;
  requests: number;
  failed: number;
  completionTokens: number;
  seconds: number;
  tokensPerSecond: number;
  /** Milliseconds. */
  ttft: Percentiles;
  /** Milliseconds between consecutive streamed tokens of one request. */
  itl: Percentiles;
  /** Open loop only: the steady state between the first request's end and the last arrival. */
  sustained: { tokensPerSecond: number; offeredTokensPerSecond: number; seconds: number } | null;
}

function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { p50: Number.NaN, p99: Number.NaN };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { p50: at(0.5), p99: at(0.99) };
}

function promptIds(index: number, length: number, vocab: number): number[] {
  let state = (index + 1) * 2654435761;
  return Array.from({ length }, () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state % vocab;
  });
}

interface OneResult {
  ok: boolean;
  ttft: number | null;
  gaps: number[];
  tokens: number;
  /** performance.now() of each streamed event with text, and of the end. */
  times: number[];
  end: number;
}

/** One streamed completion; reads the server-sent events until [DONE]. */
async function oneRequest(o: ServeLoadOptions, index: number): Promise<OneResult> {
  const started = performance.now();
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (o.apiKey) headers.authorization = `Bearer ${o.apiKey}`;
  const body = {
    ...(o.model ? { model: o.model } : {}),
    prompt: o.prompts ? o.prompts[index % o.prompts.length] : promptIds(index, o.promptTokens, o.vocab),
    max_tokens: o.maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    // Random weights may choose an end token early; every request should run its full length.
    ignore_eos: true,
  };
  const result: OneResult = { ok: false, ttft: null, gaps: [], tokens: 0, times: [], end: 0 };
  try {
    const response = await fetch(`${o.url}/v1/completions`, { method: 'POST', headers, body: JSON.stringify(body) });
    if (!response.ok || !response.body) return result;
    const decoder = new TextDecoder();
    let buffered = '';
    let last = 0;
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      const now = performance.now();
      buffered += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = event.startsWith('data: ') ? event.slice(6) : '';
        if (data === '[DONE]') {
          result.ok = true;
          continue;
        }
        if (data === '') continue;
        const parsed = JSON.parse(data) as { choices?: { text?: string }[]; usage?: { completion_tokens?: number } };
        if (parsed.usage?.completion_tokens !== undefined) result.tokens = parsed.usage.completion_tokens;
        if ((parsed.choices?.length ?? 0) === 0) continue;
        result.times.push(now);
        if (result.ttft === null) result.ttft = now - started;
        else result.gaps.push(now - last);
        last = now;
      }
    }
  } catch {
    result.ok = false;
  }
  result.end = performance.now();
  return result;
}

/** Tokens streamed per second between the first request's end and the last arrival. */
function sustainedRate(o: ServeLoadOptions, ok: OneResult[], started: number, completionTokens: number): ServeLoadResult['sustained'] {
  if (o.arrivalMs === undefined || ok.length === 0) return null;
  const from = Math.min(...ok.map((r) => r.end));
  const to = started + (o.requests - 1) * o.arrivalMs;
  const offeredTokensPerSecond = (o.maxTokens * 1000) / o.arrivalMs;
  if (to <= from) return { tokensPerSecond: Number.NaN, offeredTokensPerSecond, seconds: 0 };
  // Events carry a token each, except where the server holds back part of a character: scale by
  // the tokens the server counted per event.
  const events = ok.reduce((n, r) => n + r.times.length, 0);
  const inWindow = ok.reduce((n, r) => n + r.times.filter((t) => t >= from && t < to).length, 0);
  const seconds = (to - from) / 1000;
  return { tokensPerSecond: (inWindow * (completionTokens / events)) / seconds, offeredTokensPerSecond, seconds };
}

export async function runServeLoad(o: ServeLoadOptions): Promise<ServeLoadResult> {
  const results: OneResult[] = [];
  const started = performance.now();
  if (o.arrivalMs !== undefined) {
    const all: Promise<void>[] = [];
    for (let i = 0; i < o.requests; i++) {
      const due = started + i * o.arrivalMs;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      all.push(oneRequest(o, i).then((r) => void results.push(r)));
    }
    await Promise.all(all);
  } else {
    let next = 0;
    const client = async () => {
      while (next < o.requests) results.push(await oneRequest(o, next++));
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency, o.requests) }, client));
  }
  const seconds = (performance.now() - started) / 1000;
  const ok = results.filter((r) => r.ok);
  const completionTokens = ok.reduce((n, r) => n + r.tokens, 0);
  return {
    concurrency: o.arrivalMs !== undefined ? 0 : o.concurrency,
    arrivalMs: o.arrivalMs ?? null,
    requests: o.requests,
    failed: results.length - ok.length,
    completionTokens,
    seconds,
    tokensPerSecond: completionTokens / seconds,
    ttft: percentiles(ok.map((r) => r.ttft!).filter((t) => t !== null)),
    itl: percentiles(ok.flatMap((r) => r.gaps)),
    sustained: sustainedRate(o, ok, started, completionTokens),
  };
}

export function formatServeLoad(results: ServeLoadResult[]): string {
  const head =
    '| load | requests | failed | tokens/s | sustained / offered tokens/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) |\n|---|---:|---:|---:|---:|---:|---:|';
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
  const sustained = (r: ServeLoadResult) =>
    r.sustained ? `${Number.isFinite(r.sustained.tokensPerSecond) ? r.sustained.tokensPerSecond.toFixed(0) : '-'} / ${r.sustained.offeredTokensPerSecond.toFixed(0)}` : '';
  const rows = results.map(
    (r) =>
      `| ${r.arrivalMs !== null ? `1 every ${r.arrivalMs} ms` : `${r.concurrency} concurrent`} | ${r.requests} | ${r.failed} | ${r.tokensPerSecond.toFixed(0)} | ${sustained(r)} | ${f(r.ttft.p50)} / ${f(r.ttft.p99)} | ${f(r.itl.p50)} / ${f(r.itl.p99)} |`,
  );
  return [head, ...rows].join('\n');
}
