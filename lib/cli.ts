#!/usr/bin/env node
// The `qwen3` command line. Commander parses flags; the library validates values (its errors
// name the option) and every failure ends as one `qwen3: <message>` line and exit code 1.
import { Command, InvalidArgumentError, Option } from 'commander';
import { BENCH_ROWS, type BenchRowName, formatBenchReport, runBench } from './bench.js';
import { chatCommand } from './chat.js';
import { baseUrl, loadFromFlags, type ModelFlags, modelHome } from './cli-common.js';
import { MODEL_SIZES } from './config.js';
import { downloadQwen3Small } from './download.js';
import { formatStats, generateStats } from './generate.js';
import { formatRuntimeInfo, runtimeInfo } from './info.js';
import { Qwen3Tokenizer } from './tokenizer.js';

function intArg(name: string) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`Expected integer for ${name} but received "${value}"`);
    return Number(value);
  };
}

function numberArg(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`Expected number for ${name} but received "${value}"`);
    return n;
  };
}

function idList(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p))) {
    throw new InvalidArgumentError(`Expected comma-separated token ids for --prompt-ids but received "${value}"`);
  }
  return parts.map(Number);
}

async function infoCommand(opts: { json?: boolean }): Promise<void> {
  const info = runtimeInfo();
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  process.stdout.write(`${formatRuntimeInfo(info)}\n`);
}

async function tokenizeCommand(opts: { tokenizer?: string; chat?: boolean; prompt: string; json?: boolean }): Promise<void> {
  const tokenizer = await Qwen3Tokenizer.load({ tokenizerFilePath: opts.tokenizer, applyChatTemplate: opts.chat, addGenerationPrompt: opts.chat });
  const ids = await tokenizer.encode(opts.prompt);
  const text = tokenizer.decode(ids);
  process.stdout.write(opts.json ? `${JSON.stringify({ ids, text })}\n` : `${ids.join(',')}\n`);
}

interface GenerateFlags extends ModelFlags {
  prompt?: string;
  promptIds?: number[];
  chat?: boolean;
  maxNewTokens: number;
  cache: boolean;
  stream: boolean;
  eosTokenId?: number;
  ignoreEos?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  json?: boolean;
}

async function generateCommand(flags: GenerateFlags): Promise<void> {
  if ((flags.prompt === undefined) === (flags.promptIds === undefined)) throw new Error('Give exactly one of --prompt and --prompt-ids');
  const { model, tokenizer } = await loadFromFlags(flags, 'base');
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.on('SIGINT', onSigint);
  try {
    const promptIds = flags.promptIds ?? (await tokenizer.encode(flags.prompt!, { chat: flags.chat }));
    const streaming = flags.stream && !flags.json;
    const decoder = tokenizer.createStreamDecoder();
    const { ids, stats } = await generateStats(model, promptIds, {
      maxNewTokens: flags.maxNewTokens,
      useCache: flags.cache,
      ignoreEos: flags.ignoreEos,
      eosTokenId: flags.eosTokenId ?? tokenizer.eosTokenId,
      temperature: flags.temperature,
      topK: flags.topK,
      topP: flags.topP,
      seed: flags.seed,
      signal: abort.signal,
      onToken: streaming ? (id) => process.stdout.write(decoder.push(id)) : undefined,
    });
    const text = tokenizer.decode(ids);
    if (flags.json) {
      const { seconds, tokensPerSecond, prefillSeconds, decodeTokensPerSecond, peakMemoryBytes, device } = stats;
      const out = { ids, text, stats: { seconds, tokensPerSecond, prefillSeconds, decodeTokensPerSecond, peakMemoryBytes, device } };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return;
    }
    process.stdout.write(streaming ? `${decoder.flush()}\n` : `${text}\n`);
    process.stderr.write(`\n${formatStats(stats)}\n`);
  } finally {
    process.off('SIGINT', onSigint);
    model.dispose();
  }
}

function intList(name: string) {
  return (value: string): number[] => {
    const parts = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (parts.some((p) => !/^\d+$/.test(p) || Number(p) < 1)) throw new InvalidArgumentError(`Expected comma-separated positive integers for ${name} but received "${value}"`);
    return parts.map(Number);
  };
}

async function benchCommand(opts: { device?: string[]; model?: string; newTokens: number; runs: number; rows?: string; batches: number[]; prefill: number[]; baseline?: 'transformers'; json?: boolean }): Promise<void> {
  const rows = opts.rows?.split(',').map((r) => r.trim()) as BenchRowName[] | undefined;
  const unknown = rows?.find((r) => !(BENCH_ROWS as readonly string[]).includes(r));
  if (unknown) throw new Error(`Expected rows from ${BENCH_ROWS.join(', ')} for --rows but received "${unknown}"`);
  const report = await runBench({ devices: opts.device, model: opts.model, newTokens: opts.newTokens, runs: opts.runs, rows, batches: opts.batches, prefill: opts.prefill, baseline: opts.baseline });
  process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatBenchReport(report)}\n`);
}

async function downloadCommand(opts: { kind: 'base' | 'reasoning'; tokenizerOnly?: boolean; outDir?: string }): Promise<void> {
  const got = await downloadQwen3Small({ kind: opts.kind, tokenizerOnly: opts.tokenizerOnly, outDir: opts.outDir ?? modelHome(), baseUrl: baseUrl(), progress: 'auto' });
  for (const path of [got.modelPath, got.tokenizerPath]) if (path) process.stdout.write(`${path}\n`);
}

/** Flags shared by every command that loads a model. */
function modelOptions(cmd: Command, kind: string): Command {
  return cmd
    .option('--model <file>', `checkpoint written by torch.save(state_dict) (default: download the ${kind} Qwen3-0.6B)`)
    .option('--config <file>', 'model config JSON (reference key names)')
    .addOption(new Option('--size <size>', 'built-in model size').choices(Object.keys(MODEL_SIZES)))
    .option('--tokenizer <file>', 'tokenizer.json (default: the downloaded one, else the bundled Qwen3 tokenizer)')
    .option('--device <device>', 'auto, cpu, cuda, cuda:N, mps or xpu', 'auto')
    .addOption(new Option('--dtype <dtype>', "compute dtype (default: the config's)").choices(['bfloat16', 'float32', 'float16']))
    .option('--compile', 'optimised execution (CUDA graphs, fused weights); same outputs')
    .option('--temperature <t>', 'sampling temperature (0: greedy)', numberArg('--temperature'))
    .option('--top-k <k>', 'sample from the k most likely tokens', intArg('--top-k'))
    .option('--top-p <p>', 'sample from the smallest set of tokens with probability p', numberArg('--top-p'))
    .option('--seed <s>', 'random seed for sampling', intArg('--seed'));
}

export function buildProgram(): Command {
  const program = new Command('qwen3').description('Run Qwen3 language models through libtorch').showHelpAfterError();
  program.command('info').description('show the addon, the libtorch it uses and the devices it sees').option('--json', 'machine-readable output').action(infoCommand);
  program
    .command('tokenize')
    .description('turn text into Qwen3 token ids')
    .requiredOption('--prompt <text>', 'text to tokenize')
    .option('--tokenizer <file>', 'tokenizer.json (default: the bundled Qwen3 tokenizer)')
    .option('--chat', 'wrap the prompt in the chat template with a generation prompt')
    .option('--json', 'print {"ids": [...], "text": "<decoded>"}')
    .action(tokenizeCommand);
  modelOptions(program.command('generate').description('generate text, streamed to stdout, with stats at the end'), 'base')
    .option('--prompt <text>', 'prompt text')
    .option('--prompt-ids <ids>', 'comma-separated prompt token ids', idList)
    .option('--chat', 'wrap the prompt in the chat template')
    .option('--max-new-tokens <n>', 'tokens to generate at most', intArg('--max-new-tokens'), 50)
    .option('--no-cache', 're-feed the whole sequence every step instead of using the KV cache')
    .option('--stream', 'print text as it is generated (default)', true)
    .option('--no-stream', 'print the text once at the end')
    .option('--eos-token-id <id>', "stop at this token (default: the tokenizer's end token)", intArg('--eos-token-id'))
    .option('--ignore-eos', 'do not stop at the end-of-text token')
    .option('--json', 'print {"ids": [...], "text": "...", "stats": {...}}')
    .action(generateCommand);
  modelOptions(program.command('chat').description('multi-turn chat with the reasoning model; Ctrl-C stops an answer, Ctrl-D quits'), 'reasoning')
    .option('--max-new-tokens <n>', 'tokens per answer at most', intArg('--max-new-tokens'), 2048)
    .option('--think', 'let the model think before answering')
    .action(chatCommand);
  program
    .command('bench')
    .description("the book's speed table for each device, with prefill, batched decode and bandwidth")
    .option('--device <device...>', 'devices to measure (default: every available one)')
    .option('--model <file>', 'Qwen3-0.6B checkpoint (default: downloaded base weights, else random weights)')
    .option('--new-tokens <n>', 'tokens generated per run', intArg('--new-tokens'), 200)
    .option('--runs <n>', 'timed runs per row after one warm-up (median reported)', intArg('--runs'), 2)
    .option('--rows <names>', `comma-separated rows (${BENCH_ROWS.join(', ')})`)
    .option('--batches <list>', 'batch sizes for batched decode', intList('--batches'), [1, 8, 32])
    .option('--prefill <list>', 'prompt lengths for prefill throughput', intList('--prefill'), [512, 2048])
    .addOption(new Option('--baseline <system>', 'also run this system on the same weights and device').choices(['transformers']))
    .option('--json', 'machine-readable report')
    .action(benchCommand);
  program
    .command('download')
    .description("download the book's Qwen3-0.6B weights and tokenizer")
    .addOption(new Option('--kind <kind>', 'base or reasoning model').choices(['base', 'reasoning']).default('base'))
    .option('--tokenizer-only', 'only the tokenizer file')
    .option('--out-dir <dir>', 'where to put the files (default: $QWEN3_HOME or ~/.cache/qwen3-torch)')
    .action(downloadCommand);
  return program;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`qwen3: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    });
}
