// `qwen3 bench`: the command-line side of the benchmark in ../bench.ts (flags in, report out).
import { type Command, InvalidArgumentError, Option } from 'commander';
import { BENCH_DEFAULTS, BENCH_ROWS, type BenchRowName, formatBenchReport, runBench } from '../bench.js';
import { intArg, intList } from './common.js';
import { write } from './output.js';

interface BenchFlags {
  device?: string[];
  model?: string;
  newTokens: number;
  runs: number;
  rows?: BenchRowName[];
  batches: number[];
  prefill: number[];
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
  const { device: devices, model, newTokens, runs, rows, batches, prefill, baseline } = opts;
  const report = await runBench({ devices, model, newTokens, runs, rows, batches, prefill, baseline });
  write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatBenchReport(report)}\n`);
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description("the book's speed table for each device, with prefill, batched decode and bandwidth")
    .option('--device <device...>', 'devices to measure (default: every available one)')
    .option('--model <file>', 'Qwen3-0.6B checkpoint (default: downloaded base weights, else random weights)')
    .option('--new-tokens <n>', 'tokens generated per run', intArg('--new-tokens'), BENCH_DEFAULTS.newTokens)
    .option('--runs <n>', 'timed runs per row after one warm-up (median reported)', intArg('--runs'), BENCH_DEFAULTS.runs)
    .option('--rows <names>', `comma-separated rows (${BENCH_ROWS.join(', ')})`, rowList)
    .option('--batches <list>', 'batch sizes for batched decode', intList('--batches'), [...BENCH_DEFAULTS.batches])
    .option('--prefill <list>', 'prompt lengths for prefill throughput', intList('--prefill'), [...BENCH_DEFAULTS.prefill])
    .addOption(new Option('--baseline <system>', 'also run this system on the same weights and device').choices(['transformers']))
    .option('--json', 'machine-readable report')
    .action(benchCommand);
}
