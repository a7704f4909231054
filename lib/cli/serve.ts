// `qwen3 serve`: loads a model as the other commands do (a .pth checkpoint, a Hugging Face folder
// or a Hub repo id) and serves the OpenAI-compatible API (lib/serve) until SIGTERM or SIGINT.
// Then it stops taking requests, lets those in flight finish for at most --shutdown-timeout
// seconds (a second signal aborts them at once), and exits 0.
import { type Command, Option } from 'commander';
import { z } from 'zod';
import { MODEL_SIZES } from '../config.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, DEFAULT_PORT, startServer } from '../serve/server.js';
import { DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE } from '../serve/batch.js';
import { integer, nonEmptyString, number, parseOptions } from '../validate.js';
import { DISTRIBUTED_FOLLOW_HELP, type ModelFlags, followRankZero, intArg, loadFromFlags, numberArg, placementOptions } from './common.js';
import { write } from './output.js';

interface ServeFlags extends ModelFlags {
  host: string;
  port: number;
  maxBatch: number;
  maxQueue: number;
  prefixCache?: number;
  apiKey?: string;
  servedModelName?: string;
  shutdownTimeout: number;
}

const flagsSchema = z.object({
  '--host': nonEmptyString(),
  '--port': integer(0, 65535),
  '--max-batch': integer(1, 1024),
  '--prefix-cache': integer(0, 4096).optional(),
  '--max-queue': integer(0, 2 ** 31 - 1),
  '--api-key': nonEmptyString().optional(),
  '--served-model-name': nonEmptyString().optional(),
  '--shutdown-timeout': number(0, 86_400),
});

async function serveCommand(flags: ServeFlags): Promise<void> {
  const apiKey = flags.apiKey ?? (process.env.QWEN3_API_KEY || undefined);
  parseOptions(flagsSchema, {
    '--host': flags.host,
    '--port': flags.port,
    '--max-batch': flags.maxBatch,
    '--prefix-cache': flags.prefixCache,
    '--max-queue': flags.maxQueue,
    '--api-key': apiKey,
    '--served-model-name': flags.servedModelName,
    '--shutdown-timeout': flags.shutdownTimeout,
  });
  if (flags.model === undefined && flags.randomWeights === undefined) throw new Error('Expected --model (a .pth, a Hugging Face folder or a Hub repo id) or --random-weights');
  // Batched rows need the fused block (the reference pass runs slot rows one by one): compiled unless --no-compile.
  const { model, tokenizer, generation } = await loadFromFlags({ ...flags, compile: flags.compile ?? true, followRankZero: true }, 'reasoning');
  if (await followRankZero(model)) return; // --distributed: rank 0 serves
  let server;
  try {
    server = await startServer({
      model,
      tokenizer,
      generation,
      servedModelName: flags.servedModelName ?? flags.model ?? `random-${flags.size ?? '0.6B'}`,
      host: flags.host,
      port: flags.port,
      apiKey,
      maxBatch: flags.maxBatch,
      maxQueue: flags.maxQueue,
      prefixCache: flags.prefixCache,
      drainTimeoutMs: Math.round(flags.shutdownTimeout * 1000),
    });
  } catch (err) {
    model.dispose();
    throw err;
  }
  write(`Listening on ${server.url}\n`);
  process.stderr.write(`Serving ${flags.servedModelName ?? flags.model ?? 'random weights'} on ${model.devices.join(', ')}; SIGTERM or Ctrl-C stops it\n`);
  let stopping = false;
  let onSignal: (signal: NodeJS.Signals) => void = () => {};
  try {
    await new Promise<void>((resolve, reject) => {
      onSignal = (signal) => {
        if (stopping) {
          process.stderr.write(`${signal}: aborting the requests in flight\n`);
          void server.close('abort');
          return;
        }
        stopping = true;
        process.stderr.write(`${signal}: finishing the requests in flight (at most ${flags.shutdownTimeout} s; signal again to abort them)\n`);
        server.close('drain').then(resolve, reject);
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    model.dispose();
  }
  process.stderr.write('Stopped\n');
}

export function registerServe(program: Command): void {
  placementOptions(program
    .command('serve')
    .description('serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics)')
    .option('--model <path|id>', 'a .pth checkpoint, a Hugging Face folder or a Hub repo id such as Qwen/Qwen3-0.6B')
    .option('--random-weights [seed]', 'random weights of the --config or --size shape (default 0.6B), made on the device (benchmarks)', intArg('--random-weights'))
    .option('--revision <rev>', 'branch, tag or commit of a Hub repo id (default: main)')
    .option('--config <file>', 'model config JSON (reference key names); not for a model folder')
    .addOption(new Option('--size <size>', 'built-in model size').choices(Object.keys(MODEL_SIZES)))
    .option('--tokenizer <path>', "tokenizer.json, or a model folder's tokenizer and chat template (default: the model folder's, else the bundled Qwen3 tokenizer)"))
    .option('--no-compile', 'the reference pass instead of the fused one (slot rows then run one by one)')
    .option('--host <host>', 'address to listen on (0.0.0.0: every interface)', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: a free one)', intArg('--port'), DEFAULT_PORT)
    .option('--max-batch <n>', 'requests generated at once, sharing each model step (1: one at a time, in arrival order)', intArg('--max-batch'), DEFAULT_MAX_BATCH)
    .option('--prefix-cache <n>', 'ended requests whose KV cache is kept for prompts that begin the same way (default: --max-batch)', intArg('--prefix-cache'))
    .option('--max-queue <n>', 'requests that may wait; more are answered 429', intArg('--max-queue'), DEFAULT_MAX_QUEUE)
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1/ routes (default: $QWEN3_API_KEY, else none)')
    .option('--served-model-name <name>', 'the model name clients send and /v1/models lists (default: the --model value)')
    .option('--shutdown-timeout <s>', 'seconds requests in flight may take to finish after SIGTERM', numberArg('--shutdown-timeout'), DEFAULT_DRAIN_TIMEOUT_MS / 1000)
    .option('--distributed', DISTRIBUTED_FOLLOW_HELP)
    .action(serveCommand);
}
