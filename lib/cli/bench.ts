// `qwen3 bench`: the command-line side of the benchmark in ../bench.ts (flags in, report out).
import { type Command, Option } from 'commander';
import { BENCH_DEFAULTS, BENCH_ROWS, type BenchRowName, formatBenchReport, runBench } from '../bench.js';
import { intArg, intList } from './common.js';

interface BenchFlags {
  device?: string[];
  model?: string;
  newTokens: number;
  runs: number;
  rows?: string;
  batches: number[];
  prefill: number[];
  baseline?: 'transformers';
  json?: boolean;
}

async function benchCommand(opts: BenchFlags): Promise<void> {
  const rows = opts.rows?.split(',').map((r) => r.trim()) as BenchRowName[] | undefined;
  const unknown = rows?.find((r) => !(BENCH_ROWS as readonly string[]).includes(r));
  if (unknown) throw new Error(`Expected rows from ${BENCH_ROWS.join(', ')} for --rows but received "${unknown}"`);
  const report = await runBench({ devices: opts.device, model: opts.model, newTokens: opts.newTokens, runs: opts.runs, rows, batches: opts.batches, prefill: opts.prefill, baseline: opts.baseline });
  process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatBenchReport(report)}\n`);
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description("the book's speed table for each device, with prefill, batched decode and bandwidth")
    .option('--device <device...>', 'devices to measure (default: every available one)')
    .option('--model <file>', 'Qwen3-0.6B checkpoint (default: downloaded base weights, else random weights)')
    .option('--new-tokens <n>', 'tokens generated per run', intArg('--new-tokens'), BENCH_DEFAULTS.newTokens)
    .option('--runs <n>', 'timed runs per row after one warm-up (median reported)', intArg('--runs'), BENCH_DEFAULTS.runs)
    .option('--rows <names>', `comma-separated rows (${BENCH_ROWS.join(', ')})`)
    .option('--batches <list>', 'batch sizes for batched decode', intList('--batches'), [...BENCH_DEFAULTS.batches])
    .option('--prefill <list>', 'prompt lengths for prefill throughput', intList('--prefill'), [...BENCH_DEFAULTS.prefill])
    .addOption(new Option('--baseline <system>', 'also run this system on the same weights and device').choices(['transformers']))
    .option('--json', 'machine-readable report')
    .action(benchCommand);
}
