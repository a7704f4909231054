// `qwen3 chat`: a multi-turn conversation with the reasoning model. The history is rendered
// through the chat template each turn: a model folder's own template (Qwen3's official one for
// the Hub models), else the book's ChatML layout; a ChatSession keeps the KV cache between turns,
// so each turn runs only the text that is new since the previous one. Earlier answers are kept without their
// thinking. When the history no longer leaves room for a whole answer in the context, the oldest
// turns are dropped (and the user told). The thinking streams to stderr (dimmed on a terminal),
// the answer to stdout. Ctrl-C stops the answer being generated (the program goes on); Ctrl-C
// at the prompt or Ctrl-D quits.
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import type { TemplateMessage } from '../tokenizer/chat-template.js';
import { ChatSession } from '../chat-session.js';
import { withSamplingDefaults } from '../model/generation-config.js';
import { formatChat } from '../tokenizer.js';
import { integer, parseOptions } from '../validate.js';
import { DISTRIBUTED_FOLLOW_HELP, type ModelFlags, type SamplingFlags, followRankZero, intArg, loadFromFlags, modelOptions } from './common.js';
import { outputClosed, write } from './output.js';
import { ReplyWriter } from './reply-writer.js';

interface ChatFlags extends ModelFlags, SamplingFlags {
  maxNewTokens: number;
  think?: boolean;
}

type Message = TemplateMessage & { role: 'user' | 'assistant' };

/**
 * Drops the oldest turns (a user message and the answer to it) from `history` until its prompt
 * leaves `answerTokens` of the context free, or only the newest message is left. Returns the
 * prompt, its text and how many turns went.
 */
async function fitToContext(
  history: Message[],
  render: (h: Message[]) => string,
  encode: (text: string) => Promise<number[]>,
  context: number,
  answerTokens: number,
): Promise<{ prompt: number[]; text: string; dropped: number }> {
  let text = render(history);
  let prompt = await encode(text);
  let dropped = 0;
  while (prompt.length + answerTokens > context && history.length > 1) {
    history.splice(0, history[1]!.role === 'assistant' ? 2 : 1);
    dropped++;
    text = render(history);
    prompt = await encode(text);
  }
  return { prompt, text, dropped };
}

const DIM = '\x1b[2m';
const UNDIM = '\x1b[22m';

async function chatCommand(flags: ChatFlags): Promise<void> {
  const { model, tokenizer, generation } = await loadFromFlags({ ...flags, followRankZero: true }, 'reasoning');
  if (await followRankZero(model)) return; // --distributed: rank 0 chats
  const context = model.config.context_length;
  const thinking = flags.think ?? false;
  // A tokenizer from a model folder brings the model's own template; the book's checkpoints use the book's layout.
  const render = tokenizer.modelDir !== null && tokenizer.chatTemplate !== null
    ? (h: Message[]) => tokenizer.applyChatTemplate(h, { addGenerationPrompt: true, enableThinking: thinking })
    : (h: Message[]) => formatChat(h, { addGenerationPrompt: true, addThinking: thinking });
  const encode = (text: string) => tokenizer.encode(text, { chat: false });
  const sampling = withSamplingDefaults({ temperature: flags.temperature, topK: flags.topK, topP: flags.topP }, generation?.sampling ?? null);
  const think = { start: tokenizer.tokenToId('<think>'), end: tokenizer.tokenToId('</think>') };
  const dim = Boolean(process.stderr.isTTY);
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: Boolean(process.stdin.isTTY) });
  const history: Message[] = [];
  let answering: AbortController | null = null;
  // While an answer streams, Ctrl-C only stops it; at the prompt it closes the session.
  rl.on('SIGINT', () => (answering ? answering.abort() : rl.close()));
  process.on('SIGINT', () => answering?.abort());
  const lines = rl[Symbol.asyncIterator]();
  const session = new ChatSession(model);
  try {
    parseOptions(z.object({ maxNewTokens: integer(1, context) }), { maxNewTokens: flags.maxNewTokens });
    while (!outputClosed().aborted) {
      if (process.stdin.isTTY) write('\n> ');
      const next = await lines.next();
      if (next.done) break;
      const message = next.value.trim();
      if (message === '') continue;
      history.push({ role: 'user', content: message });
      const { prompt, text, dropped } = await fitToContext(history, render, encode, context, flags.maxNewTokens);
      if (prompt.length >= context) {
        history.pop();
        process.stderr.write(`[that message takes ${prompt.length} tokens with the chat template, more than the context of ${context} holds with room for an answer; not sent]\n`);
        continue;
      }
      if (dropped > 0) process.stderr.write(`[dropped the oldest ${dropped === 1 ? 'turn' : `${dropped} turns`} of the conversation to fit the context of ${context} tokens]\n`);
      answering = new AbortController();
      const reply = new ReplyWriter(tokenizer.createStreamDecoder(), think, {
        thinking: (t) => process.stderr.write(`${dim ? DIM : ''}${t}${dim ? UNDIM : ''}`),
        answer: write,
      }, /<think>\n*$/.test(text));
      try {
        for await (const id of session.generate(prompt, {
          maxNewTokens: Math.min(flags.maxNewTokens, context - prompt.length),
          stopIds: tokenizer.eosTokenIds, // a folder may name several end tokens
          ...sampling,
          seed: flags.seed,
          signal: AbortSignal.any([answering.signal, outputClosed()]),
        })) {
          reply.push(id);
        }
      } finally {
        reply.finish();
        if (reply.thought) process.stderr.write('\n');
        write(`${answering.signal.aborted ? ' [stopped]' : ''}\n`);
        answering = null;
      }
      history.push({ role: 'assistant', content: tokenizer.decode(reply.answerIds).replace(/^\n+|\n+$/g, '') });
    }
  } finally {
    rl.close();
    await session.close();
    model.dispose();
  }
}

export function registerChat(program: Command): void {
  modelOptions(program.command('chat').description('multi-turn chat with the reasoning model; Ctrl-C stops an answer, Ctrl-D quits'), 'reasoning')
    .option('--max-new-tokens <n>', 'tokens per answer at most', intArg('--max-new-tokens'), 2048)
    .option('--think', 'let the model think before answering (the thinking is shown on stderr)')
    .option('--no-think', 'answer without thinking (default)')
    .option('--distributed', DISTRIBUTED_FOLLOW_HELP)
    .action(chatCommand);
}
