// `qwen3 bench-serve`: throughput and latency of `qwen3 serve` as clients see them, over real
// HTTP. It starts `qwen3 serve --port 0 <the arguments after -->` as a child process (or uses a
// running server with --url), then runs each load of ../bench/serve-load.ts in turn: N
// concurrent clients for each N of --concurrency, and requests arriving one every --arrival-ms.
// It also times the first token of an idle server for a short prompt, and of a conversation's
// second turn with and without the prefix cache (the same prompt after an unrelated one, and
// after its own first turn). Optionally Hugging Face transformers' continuous batching on the
// same weights (--baseline transformers, a model folder only).
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { type Command, Option } from 'commander';
import { projectPython } from '../addon/index.js';
import { type ServeLoadResult, formatServeLoad, runServeLoad } from '../bench/serve-load.js';
import { packageRoot } from '../native.js';
import { intArg, intList } from './common.js';
import { write } from './output.js';

interface BenchServeFlags {
  url?: string;
  concurrency: number[];
  requests?: number;
  maxTokens: number;
  promptTokens: number;
  arrivalMs?: number;
  turnTokens: number;
  baseline?: 'transformers';
  json?: boolean;
}

/** Token ids below this work with every model, the tiny test ones included. */
const PROMPT_VOCAB = 500;

async function startChild(serveArgs: string[]): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [join(packageRoot, 'dist', 'cli.js'), 'serve', '--port', '0', ...serveArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`qwen3 serve exited with code ${code} before it listened`);
  });
  const listening = (async () => {
    for await (const line of lines) {
      const m = /^Listening on (\S+)/.exec(line);
      if (m) return m[1]!;
    }
    throw new Error('qwen3 serve closed its output before it listened');
  })();
  const url = await Promise.race([listening, exited]);
  return { url, child };
}

/** Milliseconds to the first streamed token of one request. */
async function firstTokenMs(url: string, prompt: number[], maxTokens = 1): Promise<number> {
  const r = await runServeLoad({ url, model: '', concurrency: 1, requests: 1, maxTokens, promptTokens: 0, vocab: PROMPT_VOCAB, prompts: [prompt] });
  if (r.failed > 0) throw new Error(`a request to ${url} failed`);
  return r.ttft.p50;
}

const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729) % PROMPT_VOCAB);

async function benchServeCommand(serveArgs: string[], flags: BenchServeFlags): Promise<void> {
  let child: ChildProcess | null = null;
  let url = flags.url;
  if (!url) {
    if (serveArgs.length === 0) throw new Error('Expected --url of a running server, or the arguments of `qwen3 serve` after -- (for example: -- --model DIR --device cuda)');
    ({ url, child } = await startChild(serveArgs));
  }
  const log = (s: string) => process.stderr.write(`${s}\n`);
  try {
    const common = { url, model: '', maxTokens: flags.maxTokens, promptTokens: flags.promptTokens, vocab: PROMPT_VOCAB };
    log('warming up');
    await runServeLoad({ ...common, concurrency: 4, requests: 8, maxTokens: 8 });
    const idle: number[] = [];
    for (let i = 0; i < 10; i++) idle.push(await firstTokenMs(url, ids(flags.promptTokens, 100 + i)));
    const results: ServeLoadResult[] = [];
    for (const n of flags.concurrency) {
      log(`${n} concurrent`);
      results.push(await runServeLoad({ ...common, concurrency: n, requests: flags.requests ?? Math.max(2 * n, 8) }));
    }
    if (flags.arrivalMs !== undefined) {
      const n = Math.max(...flags.concurrency);
      log(`one request every ${flags.arrivalMs} ms`);
      // Arrivals over at least 4 s, so that the steady state outlasts the ramp up and the drain.
      const requests = flags.requests ?? Math.max(2 * n, 8, Math.ceil(4000 / flags.arrivalMs));
      results.push(await runServeLoad({ ...common, concurrency: n, requests, arrivalMs: flags.arrivalMs }));
    }
    // A conversation's second turn: its first turn plus a short new message.
    const turn1 = ids(flags.turnTokens, 1);
    const turn2 = [...turn1, ...ids(16, 2)];
    const cold = await firstTokenMs(url, [...ids(flags.turnTokens, 3), ...ids(16, 2)]);
    await firstTokenMs(url, turn1, 1);
    const warm = await firstTokenMs(url, turn2);
    const sorted = idle.sort((a, b) => a - b);
    const report = { results, idleFirstTokenMs: sorted[Math.floor(sorted.length / 2)]!, turn2: { tokens: turn2.length, withoutReuseMs: cold, withReuseMs: warm } };
    const baseline = flags.baseline ? transformersBaseline(serveArgs, flags) : null;
    if (flags.json) {
      write(`${JSON.stringify({ ...report, baseline }, null, 2)}\n`);
      return;
    }
    write(`${formatServeLoad(results)}\n\n`);
    write(`time to first token, idle server, ${flags.promptTokens}-token prompt: ${report.idleFirstTokenMs.toFixed(1)} ms (median of 10)\n`);
    write(`turn 2 of a conversation (${turn2.length} tokens): first token in ${cold.toFixed(1)} ms without the prefix cache, ${warm.toFixed(1)} ms with it\n`);
    if (baseline) {
      // The script falls back to padded model.generate where continuous batching fails.
      const how = baseline.mode === 'continuous-batching' ? 'continuous batching' : `${String(baseline.mode)} (continuous batching failed)`;
      write(`transformers ${String(baseline.transformersVersion ?? '')} ${how}, ${String(baseline.requests)} requests at once: ${Number(baseline.tokensPerSecond).toFixed(0)} tokens/s\n`);
    }
  } finally {
    if (child) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  }
}

/** transformers' generate_batch on the folder given as --model to serve (scripts/python/bench_transformers_serve.py). */
function transformersBaseline(serveArgs: string[], flags: BenchServeFlags): Record<string, unknown> {
  const value = (name: string) => {
    const i = serveArgs.indexOf(name);
    return i >= 0 ? serveArgs[i + 1] : undefined;
  };
  const model = value('--model');
  if (!model) throw new Error('--baseline transformers needs the model folder as --model after --');
  const args = [join(packageRoot, 'scripts', 'python', 'bench_transformers_serve.py'), '--model', model, '--requests', String(Math.max(...flags.concurrency)),
    '--prompt-tokens', String(flags.promptTokens), '--max-new-tokens', String(flags.maxTokens), '--device', (value('--device') ?? 'cpu').replace(/:\d+$/, ''),
    '--dtype', value('--dtype') ?? 'bfloat16', '--json'];
  return JSON.parse(execFileSync(projectPython(packageRoot), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })) as Record<string, unknown>;
}

export function registerBenchServe(program: Command): void {
  program
    .command('bench-serve')
    .description('throughput and latency of `qwen3 serve` over HTTP: qwen3 bench-serve [options] -- <serve arguments>')
    .argument('[serve-args...]', 'arguments for `qwen3 serve`, after --')
    .option('--url <url>', 'measure a running server instead of starting one')
    .option('--concurrency <list>', 'concurrent clients to measure, one load each', intList('--concurrency'), [1, 8, 32])
    .option('--requests <n>', 'requests per load (default: twice the concurrency, at least 8)', intArg('--requests'))
    .option('--max-tokens <n>', 'new tokens per request', intArg('--max-tokens'), 200)
    .option('--prompt-tokens <n>', 'prompt length in tokens', intArg('--prompt-tokens'), 10)
    .option('--arrival-ms <n>', 'also a load of one request every n ms (arrivals over 4 s unless --requests says)', intArg('--arrival-ms'))
    .option('--turn-tokens <n>', "length of a conversation's first turn for the prefix-cache measurement", intArg('--turn-tokens'), 1000)
    .addOption(new Option('--baseline <system>', "also run transformers' continuous batching on the same folder").choices(['transformers']))
    .option('--json', 'machine-readable report')
    .action((serveArgs: string[], flags: BenchServeFlags) => benchServeCommand(serveArgs, flags));
}
