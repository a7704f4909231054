// `qwen3 download`: the book's Qwen3-0.6B weights and tokenizer, into $QWEN3_HOME by default.
import { type Command, Option } from 'commander';
import { downloadQwen3Small } from '../download.js';
import { baseUrl, modelHome } from '../home.js';
import { write } from './output.js';

async function downloadCommand(opts: { kind: 'base' | 'reasoning'; tokenizerOnly?: boolean; outDir?: string }): Promise<void> {
  const got = await downloadQwen3Small({ kind: opts.kind, tokenizerOnly: opts.tokenizerOnly, outDir: opts.outDir ?? modelHome(), baseUrl: baseUrl(), progress: 'auto' });
  for (const path of [got.modelPath, got.tokenizerPath]) if (path) write(`${path}\n`);
}

export function registerDownload(program: Command): void {
  program
    .command('download')
    .description("download the book's Qwen3-0.6B weights and tokenizer")
    .addOption(new Option('--kind <kind>', 'base or reasoning model').choices(['base', 'reasoning']).default('base'))
    .option('--tokenizer-only', 'only the tokenizer file')
    .option('--out-dir <dir>', 'where to put the files (default: $QWEN3_HOME or ~/.cache/qwen3-torch)')
    .action(downloadCommand);
}
