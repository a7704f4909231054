// `qwen3 chat`: a multi-turn conversation with the reasoning model. The whole history is kept
// and re-sent through the chat template each turn; Ctrl-C stops the answer being generated
// (the program goes on), Ctrl-C at the prompt or Ctrl-D quits.
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import { generateTextBasicStreamCache } from '../generate.js';
import { type ChatMessage, formatChat } from '../tokenizer.js';
import { type ModelFlags, type SamplingFlags, intArg, loadFromFlags, modelOptions } from './common.js';

interface ChatFlags extends ModelFlags, SamplingFlags {
  maxNewTokens: number;
  think?: boolean;
}

async function chatCommand(flags: ChatFlags): Promise<void> {
  const { model, tokenizer } = await loadFromFlags(flags, 'reasoning');
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: Boolean(process.stdin.isTTY) });
  const history: ChatMessage[] = [];
  let answering: AbortController | null = null;
  // While an answer streams, Ctrl-C only stops it; at the prompt it closes the session.
  rl.on('SIGINT', () => (answering ? answering.abort() : rl.close()));
  process.on('SIGINT', () => answering?.abort());
  const lines = rl[Symbol.asyncIterator]();
  try {
    for (;;) {
      if (process.stdin.isTTY) process.stdout.write('\n> ');
      const next = await lines.next();
      if (next.done) break;
      const message = next.value.trim();
      if (message === '') continue;
      history.push({ role: 'user', content: message });
      const prompt = await tokenizer.encode(formatChat(history, { addGenerationPrompt: true, addThinking: flags.think ?? false }));
      answering = new AbortController();
      const decoder = tokenizer.createStreamDecoder();
      const answer: number[] = [];
      try {
        for await (const id of generateTextBasicStreamCache(model, prompt, {
          maxNewTokens: Math.min(flags.maxNewTokens, model.config.context_length - prompt.length),
          eosTokenId: tokenizer.eosTokenId,
          temperature: flags.temperature,
          topK: flags.topK,
          topP: flags.topP,
          seed: flags.seed,
          signal: answering.signal,
        })) {
          answer.push(id);
          process.stdout.write(decoder.push(id));
        }
      } finally {
        process.stdout.write(`${decoder.flush()}${answering.signal.aborted ? ' [stopped]' : ''}\n`);
        answering = null;
      }
      history.push({ role: 'assistant', content: tokenizer.decode(answer) });
    }
  } finally {
    rl.close();
    model.dispose();
  }
}

export function registerChat(program: Command): void {
  modelOptions(program.command('chat').description('multi-turn chat with the reasoning model; Ctrl-C stops an answer, Ctrl-D quits'), 'reasoning')
    .option('--max-new-tokens <n>', 'tokens per answer at most', intArg('--max-new-tokens'), 2048)
    .option('--think', 'let the model think before answering')
    .action(chatCommand);
}
