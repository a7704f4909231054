// `qwen3 tokenize`: text, or a conversation rendered by the chat template, to Qwen3 token ids
// (and the text back, with --json).
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import type { ApplyChatTemplateOptions, TemplateMessage } from '../tokenizer/chat-template.js';
import { Qwen3Tokenizer } from '../tokenizer.js';
import { loadTokenizer, resolveModelFlag } from './common.js';
import { write } from './output.js';
import { readPromptText } from './prompt-input.js';

interface TokenizeFlags {
  model?: string;
  revision?: string;
  tokenizer?: string;
  chat?: boolean;
  prompt?: string;
  promptFile?: string;
  messages?: string;
  tools?: string;
  think?: boolean;
  generationPrompt: boolean;
  json?: boolean;
}

async function readJsonFile(path: string, flag: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new Error(`Cannot read ${path} for ${flag}: ${reason}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Expected JSON in ${path} for ${flag}: ${(err as Error).message}`);
  }
}

/** The conversation and template options the flags give; checks them before any tokenizer loads. */
async function readConversation(flags: TokenizeFlags): Promise<{ messages: TemplateMessage[]; options: ApplyChatTemplateOptions }> {
  if (flags.prompt !== undefined || flags.promptFile !== undefined || flags.chat) {
    throw new Error('Give either --messages or a prompt (--prompt, --prompt-file, --chat), not both');
  }
  const messages = await readJsonFile(flags.messages!, '--messages');
  if (!Array.isArray(messages)) throw new Error(`Expected a JSON array of messages in ${flags.messages} for --messages`);
  const tools = flags.tools === undefined ? undefined : await readJsonFile(flags.tools, '--tools');
  if (tools !== undefined && !Array.isArray(tools)) throw new Error(`Expected a JSON array of tool definitions in ${flags.tools} for --tools`);
  const options: ApplyChatTemplateOptions = { addGenerationPrompt: flags.generationPrompt };
  if (tools !== undefined) options.tools = tools as Record<string, unknown>[];
  if (flags.think !== undefined) options.enableThinking = flags.think;
  return { messages: messages as TemplateMessage[], options };
}

async function tokenizeCommand(flags: TokenizeFlags): Promise<void> {
  if (flags.model !== undefined && flags.tokenizer !== undefined) throw new Error('Give either --model or --tokenizer, not both');
  const conversation = flags.messages !== undefined ? await readConversation(flags) : null;
  if (conversation === null && (flags.tools !== undefined || flags.think !== undefined || !flags.generationPrompt)) {
    throw new Error('--tools, --think, --no-think and --no-generation-prompt go with --messages');
  }
  const text = conversation === null ? await readPromptText(flags) : null;
  const chat = { applyChatTemplate: flags.chat, addGenerationPrompt: flags.chat };
  let tokenizer: Qwen3Tokenizer;
  if (flags.model !== undefined) tokenizer = await Qwen3Tokenizer.load({ modelDir: await resolveModelFlag(flags.model, flags.revision), ...chat });
  else if (flags.tokenizer !== undefined) tokenizer = await loadTokenizer(flags.tokenizer, chat);
  else tokenizer = await Qwen3Tokenizer.load(chat);
  let ids: number[];
  let shown: string;
  if (conversation !== null) {
    shown = tokenizer.applyChatTemplate(conversation.messages, conversation.options);
    ids = await tokenizer.encode(shown, { chat: false });
  } else {
    ids = await tokenizer.encode(text!);
    shown = tokenizer.decode(ids);
  }
  write(flags.json ? `${JSON.stringify({ ids, text: shown })}\n` : `${ids.join(',')}\n`);
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description('turn text, or a conversation in the chat template, into Qwen3 token ids')
    .option('--prompt <text>', 'text to tokenize')
    .option('--prompt-file <file>', 'read the text from a file ("-": standard input)')
    .option('--model <dir|id>', 'a Hugging Face model folder or Hub repo id: its tokenizer and chat template')
    .option('--revision <rev>', 'branch, tag or commit of a Hub repo id (default: main)')
    .option('--tokenizer <path>', 'tokenizer.json or a model folder (default: the bundled Qwen3 tokenizer)')
    .option('--chat', "wrap the prompt in the book's chat layout with a generation prompt")
    .option('--messages <file>', 'a JSON array of chat messages to render with the chat template')
    .option('--tools <file>', 'a JSON array of tool definitions for the chat template')
    .option('--think', 'enable_thinking=true for the chat template')
    .option('--no-think', 'enable_thinking=false (Qwen3: an empty think block, no thinking)')
    .option('--no-generation-prompt', 'do not open an assistant turn at the end')
    .option('--json', 'print {"ids": [...], "text": "..."}: the decoded ids, or the rendered conversation')
    .action(tokenizeCommand);
}
