// `qwen3 download`: with a Hub repo id, what a Qwen3 model needs from that repo, into the
// Hugging Face cache (its snapshot folder is printed); without one, the book's Qwen3-0.6B
// weights and tokenizer, into $QWEN3_HOME by default.
import { type Command, Option } from 'commander';
import { downloadQwen3Small } from '../download.js';
import { baseUrl, modelHome } from '../home.js';
import { downloadModel } from '../hub/model.js';
import { hubProgressView } from './hub-progress.js';
import { EXIT_INTERRUPTED, catchInterrupt, write } from './output.js';

interface DownloadFlags {
  kind: 'base' | 'reasoning';
  tokenizerOnly?: boolean;
  outDir?: string;
  revision?: string;
}

async function downloadCommand(repoId: string | undefined, flags: DownloadFlags, cmd: Command): Promise<void> {
  if (repoId === undefined) {
    if (flags.revision !== undefined) throw new Error('--revision applies to a Hugging Face repo id: qwen3 download REPO_ID --revision R');
    const got = await downloadQwen3Small({ kind: flags.kind, tokenizerOnly: flags.tokenizerOnly, outDir: flags.outDir ?? modelHome(), baseUrl: baseUrl(), progress: 'auto' });
    for (const path of [got.modelPath, got.tokenizerPath]) if (path) write(`${path}\n`);
    return;
  }
  const bookOnly = ['kind', 'tokenizerOnly', 'outDir'].filter((name) => cmd.getOptionValueSource(name) === 'cli');
  if (bookOnly.length > 0) {
    throw new Error("--kind, --tokenizer-only and --out-dir apply to the book's download; a Hugging Face repo goes into the Hugging Face cache ($HF_HOME or $HF_HUB_CACHE)");
  }
  const view = hubProgressView();
  const interrupt = catchInterrupt();
  try {
    const got = await downloadModel(repoId, { revision: flags.revision, signal: interrupt.signal, onProgress: view.onProgress });
    view.stop();
    write(`${got.dir}\n`);
  } catch (err) {
    view.stop();
    if (!interrupt.interrupted) throw err;
    process.stderr.write(`qwen3: download of ${repoId} interrupted; run the same command again to resume\n`);
    process.exitCode = EXIT_INTERRUPTED;
  } finally {
    interrupt.dispose();
  }
}

export function registerDownload(program: Command): void {
  program
    .command('download')
    .description("download a Qwen3 model from the Hugging Face Hub (REPO_ID such as Qwen/Qwen3-0.6B) into the Hugging Face cache, or without one the book's Qwen3-0.6B weights and tokenizer")
    .argument('[repo-id]', 'Hugging Face model repo, owner/name')
    .option('--revision <rev>', 'branch, tag or commit of the repo (default: main)')
    .addOption(new Option('--kind <kind>', 'book download: base or reasoning model').choices(['base', 'reasoning']).default('base'))
    .option('--tokenizer-only', 'book download: only the tokenizer file')
    .option('--out-dir <dir>', 'book download: where to put the files (default: $QWEN3_HOME or ~/.cache/qwen3-torch)')
    .action(downloadCommand);
}
