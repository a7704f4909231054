// `qwen3 bench`: the command-line side of the benchmark in ../bench.ts (flags in, report out).
import { type Command, InvalidArgumentError, Option } from 'commander';
import { BENCH_DEFAULTS, BENCH_ROWS, type BenchRowName, formatBenchReport, runBench } from '../bench.js';
import { MODEL_SIZES, type Quantize } from '../config.js';
import { intArg, intList, quantizeOption, randomSeed, resolveModelFlag } from './common.js';
import { write } from './output.js';

interface BenchFlags {
  device?: string[];
  model?: string;
  revision?: string;
  config?: string;
  size?: string;
  dtype?: 'bfloat16' | 'float32' | 'float16';
  quantize?: Quantize;
  randomWeights?: number | true;
  newTokens?: number;
  runs: number;
  rows?: BenchRowName[];
  batches: number[];
  prefill: number[];
  /** --context: batch-1 decode after prompts of these lengths. */
  context?: number[];
  baseline?: 'transformers';
  json?: boolean;
}

/** Comma-separated row names; an empty or unknown name is refused. */
function rowList(value: string): BenchRowName[] {
  const names = value.split(',').map((r) => r.trim());
  if (names.some((r) => !(BENCH_ROWS as readonly string[]).includes(r))) {
    throw new InvalidArgumentError(`Expected comma-separated rows from ${BENCH_ROWS.join(', ')} for --rows but received "${value}"`);
  }
  return names as BenchRowName[];
}

async function benchCommand(opts: BenchFlags): Promise<void> {
  const { device: devices, newTokens, runs, rows, batches, prefill, baseline, dtype, quantize } = opts;
  if (opts.config && opts.size) throw new Error('Use either --config or --size, not both');
  if (opts.randomWeights !== undefined && opts.model !== undefined) throw new Error('--random-weights makes the weights on the device: leave out --model');
  // A repo id is downloaded here, with a progress bar on stderr; runBench then finds it in the cache.
  const { model, revision } = opts;
  if (model !== undefined) await resolveModelFlag(model, revision);
  const config = opts.config ?? opts.size;
  const randomWeights = opts.randomWeights === undefined ? undefined : { seed: randomSeed(opts.randomWeights) };
  const report = await runBench({ devices, model, revision, config, dtype, randomWeights, quantize, newTokens, runs, rows, batches, prefill, contexts: opts.context, baseline });
  write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatBenchReport(report)}\n`);
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description("the book's speed table for each device, with prefill, batched decode and bandwidth")
    .option('--device <device...>', 'devices to measure (default: every available one); an entry cuda:0,cuda:1 is one tensor-parallel model over those devices')
    .option('--model <path|id>', "a .pth checkpoint, a Hugging Face folder or a Hub repo id (default: the book's downloaded Qwen3-0.6B base weights, else random weights of its shape)")
    .option('--revision <rev>', 'branch, tag or commit of a Hub repo id (default: main)')
    .option('--config <file>', "config JSON (the book's keys or a Hugging Face config.json) for a .pth or --random-weights")
    .addOption(new Option('--size <size>', 'built-in model size, for a .pth or --random-weights').choices(Object.keys(MODEL_SIZES)))
    .addOption(new Option('--dtype <dtype>', 'compute dtype (default: bfloat16)').choices(['bfloat16', 'float32', 'float16']))
    .addOption(quantizeOption())
    .option('--random-weights [seed]', 'random weights of the --config or --size shape (default 0.6B), made on each device: no file is read (seed default 0)', intArg('--random-weights'))
    .option('--new-tokens <n>', `tokens generated per run (default: ${BENCH_DEFAULTS.newTokens}, or what the model's context leaves)`, intArg('--new-tokens'))
    .option('--runs <n>', 'timed runs per row after one warm-up (median reported)', intArg('--runs'), BENCH_DEFAULTS.runs)
    .option('--rows <names>', `comma-separated rows (${BENCH_ROWS.join(', ')})`, rowList)
    .option('--batches <list>', 'batch sizes for batched decode', intList('--batches'), [...BENCH_DEFAULTS.batches])
    .option('--prefill <list>', `prompt lengths for prefill throughput (default: ${BENCH_DEFAULTS.prefill.join(',')}, those that fit the model's context)`, intList('--prefill'))
    .option('--context <list>', 'batch-1 decode after prompts of these lengths, e.g. 4096,16384,32768, with the bandwidth it uses (weights and KV cache)', intList('--context'))
    .addOption(new Option('--baseline <system>', 'also run this system on the same weights and device').choices(['transformers']))
    .option('--json', 'machine-readable report')
    .action(benchCommand);
}
