// `qwen3 tokenize`: text to Qwen3 token ids (and back, with --json).
import type { Command } from 'commander';
import { Qwen3Tokenizer } from '../tokenizer.js';
import { write } from './output.js';
import { readPromptText } from './prompt-input.js';

async function tokenizeCommand(opts: { tokenizer?: string; chat?: boolean; prompt?: string; promptFile?: string; json?: boolean }): Promise<void> {
  const text = await readPromptText(opts);
  const tokenizer = await Qwen3Tokenizer.load({ tokenizerFilePath: opts.tokenizer, applyChatTemplate: opts.chat, addGenerationPrompt: opts.chat });
  const ids = await tokenizer.encode(text);
  write(opts.json ? `${JSON.stringify({ ids, text: tokenizer.decode(ids) })}\n` : `${ids.join(',')}\n`);
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description('turn text into Qwen3 token ids')
    .option('--prompt <text>', 'text to tokenize')
    .option('--prompt-file <file>', 'read the text from a file ("-": standard input)')
    .option('--tokenizer <file>', 'tokenizer.json (default: the bundled Qwen3 tokenizer)')
    .option('--chat', 'wrap the prompt in the chat template with a generation prompt')
    .option('--json', 'print {"ids": [...], "text": "<decoded>"}')
    .action(tokenizeCommand);
}
