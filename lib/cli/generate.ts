// `qwen3 generate`: one prompt, its continuation streamed to stdout, the stats to stderr.
import type { Command } from 'commander';
import { formatStats, generateStats } from '../generate.js';
import { type ModelFlags, type SamplingFlags, idList, intArg, loadFromFlags, modelOptions } from './common.js';

interface GenerateFlags extends ModelFlags, SamplingFlags {
  prompt?: string;
  promptIds?: number[];
  chat?: boolean;
  maxNewTokens: number;
  cache: boolean;
  stream: boolean;
  eosTokenId?: number;
  ignoreEos?: boolean;
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

export function registerGenerate(program: Command): void {
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
}
