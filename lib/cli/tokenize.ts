// `qwen3 tokenize`: text to Qwen3 token ids (and back, with --json).
import type { Command } from 'commander';
import { Qwen3Tokenizer } from '../tokenizer.js';

async function tokenizeCommand(opts: { tokenizer?: string; chat?: boolean; prompt: string; json?: boolean }): Promise<void> {
  const tokenizer = await Qwen3Tokenizer.load({ tokenizerFilePath: opts.tokenizer, applyChatTemplate: opts.chat, addGenerationPrompt: opts.chat });
  const ids = await tokenizer.encode(opts.prompt);
  const text = tokenizer.decode(ids);
  process.stdout.write(opts.json ? `${JSON.stringify({ ids, text })}\n` : `${ids.join(',')}\n`);
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description('turn text into Qwen3 token ids')
    .requiredOption('--prompt <text>', 'text to tokenize')
    .option('--tokenizer <file>', 'tokenizer.json (default: the bundled Qwen3 tokenizer)')
    .option('--chat', 'wrap the prompt in the chat template with a generation prompt')
    .option('--json', 'print {"ids": [...], "text": "<decoded>"}')
    .action(tokenizeCommand);
}
