// `qwen3 generate`: one prompt, its continuation streamed to stdout, the stats to stderr. Ctrl-C
// stops it (within one prefill chunk or decode step) and it exits 130 with what it had; a reader
// that goes away ends it quietly with 0. With --distributed every process that torchrun starts
// runs the same generation on its share of the model, and rank 0 alone prints.
import type { Command } from 'commander';
import { withSamplingDefaults } from '../model/generation-config.js';
import { PREFILL_CHUNK_SIZE, formatStats, generateStats } from '../generate.js';
import { type ModelFlags, type SamplingFlags, idList, intArg, loadFromFlags, modelOptions } from './common.js';
import { EXIT_INTERRUPTED, catchInterrupt, outputClosed, write } from './output.js';
import { type PromptFlags, readPrompt } from './prompt-input.js';

interface GenerateFlags extends ModelFlags, SamplingFlags, PromptFlags {
  chat?: boolean;
  maxNewTokens: number;
  cache: boolean;
  stream: boolean;
  eosTokenId?: number;
  ignoreEos?: boolean;
  json?: boolean;
}

async function generateCommand(flags: GenerateFlags): Promise<void> {
  const prompt = await readPrompt(flags);
  const { model, tokenizer, generation } = await loadFromFlags(flags, 'base');
  // A model folder's generation_config.json gives the sampling settings the user left unset.
  const sampling = withSamplingDefaults({ temperature: flags.temperature, topK: flags.topK, topP: flags.topP }, generation?.sampling ?? null);
  // Every rank of a process group makes the same calls; rank 0 speaks for them.
  const quiet = (model.processGroup?.rank ?? 0) > 0;
  const interrupt = catchInterrupt();
  try {
    const promptIds = 'ids' in prompt ? prompt.ids : await tokenizer.encode(prompt.text, { chat: flags.chat });
    if (flags.cache && promptIds.length > PREFILL_CHUNK_SIZE) {
      process.stderr.write(`Prefilling ${promptIds.length} prompt tokens, ${PREFILL_CHUNK_SIZE} at a time (Ctrl-C stops between them)\n`);
    }
    const streaming = flags.stream && !flags.json && !quiet;
    const decoder = tokenizer.createStreamDecoder();
    const { ids, stats } = await generateStats(model, promptIds, {
      maxNewTokens: flags.maxNewTokens,
      useCache: flags.cache,
      ignoreEos: flags.ignoreEos,
      eosTokenId: flags.eosTokenId ?? tokenizer.eosTokenId,
      ...sampling,
      seed: flags.seed,
      signal: AbortSignal.any([interrupt.signal, outputClosed()]),
      onToken: streaming ? (id) => write(decoder.push(id)) : undefined,
    });
    const aborted = interrupt.interrupted;
    if (aborted) process.exitCode = EXIT_INTERRUPTED;
    if (outputClosed().aborted || quiet) return; // nobody reads the rest, or rank 0 prints it
    const text = tokenizer.decode(ids);
    if (flags.json) {
      const { seconds, tokensPerSecond, prefillSeconds, decodeTokensPerSecond, peakMemoryBytes, device } = stats;
      write(`${JSON.stringify({ ids, text, aborted, stats: { seconds, tokensPerSecond, prefillSeconds, decodeTokensPerSecond, peakMemoryBytes, device } })}\n`);
      return;
    }
    write(streaming ? `${decoder.flush()}\n` : `${text}\n`);
    process.stderr.write(`\n${formatStats(stats)}\n${aborted ? `Interrupted after ${ids.length} new tokens\n` : ''}`);
  } finally {
    interrupt.dispose();
    model.dispose();
  }
}

export function registerGenerate(program: Command): void {
  modelOptions(program.command('generate').description('generate text, streamed to stdout, with stats at the end'), 'base')
    .option('--prompt <text>', 'prompt text')
    .option('--prompt-ids <ids>', 'comma-separated prompt token ids', idList)
    .option('--prompt-file <file>', 'read the prompt text from a file ("-": standard input)')
    .option('--prompt-ids-file <file>', 'read comma- or space-separated prompt token ids from a file ("-": standard input)')
    .option('--chat', 'wrap the prompt in the chat template')
    .option('--max-new-tokens <n>', 'tokens to generate at most', intArg('--max-new-tokens'), 50)
    .option('--no-cache', 're-feed the whole sequence every step instead of using the KV cache')
    .option('--stream', 'print text as it is generated (default)', true)
    .option('--no-stream', 'print the text once at the end')
    .option('--eos-token-id <id>', "stop at this token (default: the tokenizer's end token)", intArg('--eos-token-id'))
    .option('--ignore-eos', 'do not stop at the end-of-text token')
    .option('--json', 'print {"ids": [...], "text": "...", "aborted": false, "stats": {...}}')
    .option('--distributed', "one rank of a model split over processes, as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; cuda means cuda:LOCAL_RANK); rank 0 prints")
    .action(generateCommand);
}
