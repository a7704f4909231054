// `qwen3 chat`: a multi-turn conversation with the reasoning model. The history is re-sent
// through the chat template each turn; when it no longer leaves room for a whole answer in the
// context, the oldest turns are dropped (and the user told). Ctrl-C stops the answer being
// generated (the program goes on); Ctrl-C at the prompt or Ctrl-D quits.
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { generateTextBasicStreamCache } from '../generate.js';
import { type ChatMessage, formatChat } from '../tokenizer.js';
import { integer, parseOptions } from '../validate.js';
import { type ModelFlags, type SamplingFlags, intArg, loadFromFlags, modelOptions } from './common.js';
import { outputClosed, write } from './output.js';

interface ChatFlags extends ModelFlags, SamplingFlags {
  maxNewTokens: number;
  think?: boolean;
}

/**
 * Drops the oldest turns (a user message and the answer to it) from `history` until its prompt
 * leaves `answerTokens` of the context free, or only the newest message is left. Returns the
 * prompt and how many turns went.
 */
async function fitToContext(history: ChatMessage[], encode: (h: ChatMessage[]) => Promise<number[]>, context: number, answerTokens: number): Promise<{ prompt: number[]; dropped: number }> {
  let prompt = await encode(history);
  let dropped = 0;
  while (prompt.length + answerTokens > context && history.length > 1) {
    history.splice(0, history[1]!.role === 'assistant' ? 2 : 1);
    dropped++;
    prompt = await encode(history);
  }
  return { prompt, dropped };
}

async function chatCommand(flags: ChatFlags): Promise<void> {
  const { model, tokenizer } = await loadFromFlags(flags, 'reasoning');
  const context = model.config.context_length;
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: Boolean(process.stdin.isTTY) });
  const history: ChatMessage[] = [];
  const encode = (h: ChatMessage[]) => tokenizer.encode(formatChat(h, { addGenerationPrompt: true, addThinking: flags.think ?? false }));
  let answering: AbortController | null = null;
  // While an answer streams, Ctrl-C only stops it; at the prompt it closes the session.
  rl.on('SIGINT', () => (answering ? answering.abort() : rl.close()));
  process.on('SIGINT', () => answering?.abort());
  const lines = rl[Symbol.asyncIterator]();
  try {
    parseOptions(z.object({ maxNewTokens: integer(1, context) }), { maxNewTokens: flags.maxNewTokens });
    while (!outputClosed().aborted) {
      if (process.stdin.isTTY) write('\n> ');
      const next = await lines.next();
      if (next.done) break;
      const message = next.value.trim();
      if (message === '') continue;
      history.push({ role: 'user', content: message });
      const { prompt, dropped } = await fitToContext(history, encode, context, flags.maxNewTokens);
      if (prompt.length >= context) {
        history.pop();
        process.stderr.write(`[that message takes ${prompt.length} tokens with the chat template, more than the context of ${context} holds with room for an answer; not sent]\n`);
        continue;
      }
      if (dropped > 0) process.stderr.write(`[dropped the oldest ${dropped === 1 ? 'turn' : `${dropped} turns`} of the conversation to fit the context of ${context} tokens]\n`);
      answering = new AbortController();
      const decoder = tokenizer.createStreamDecoder();
      const answer: number[] = [];
      try {
        for await (const id of generateTextBasicStreamCache(model, prompt, {
          maxNewTokens: Math.min(flags.maxNewTokens, context - prompt.length),
          eosTokenId: tokenizer.eosTokenId,
          temperature: flags.temperature,
          topK: flags.topK,
          topP: flags.topP,
          seed: flags.seed,
          signal: AbortSignal.any([answering.signal, outputClosed()]),
        })) {
          answer.push(id);
          write(decoder.push(id));
        }
      } finally {
        write(`${decoder.flush()}${answering.signal.aborted ? ' [stopped]' : ''}\n`);
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
