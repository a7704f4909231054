// Where a command's prompt comes from: a flag (--prompt, --prompt-ids), or, for inputs longer
// than a command line may be (the kernel caps one argument at 128 KiB), a file or standard input
// (--prompt-file, --prompt-ids-file; "-" reads stdin). A prompt file is used exactly as it is,
// trailing newline included.
import { readFile } from 'node:fs/promises';

export interface PromptFlags {
  prompt?: string;
  promptIds?: number[];
  promptFile?: string;
  promptIdsFile?: string;
}

export type PromptInput = { text: string } | { ids: number[] };

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function readSource(path: string, flag: string): Promise<string> {
  if (path === '-') return readStdin();
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new Error(`Cannot read ${path} for ${flag}: ${reason}`);
  }
}

/** Token ids separated by commas and/or whitespace, as `qwen3 tokenize` prints them. */
export function parseIdText(text: string, flag: string, source: string): number[] {
  const parts = text.split(/[\s,]+/).filter((p) => p !== '');
  if (parts.length === 0) throw new Error(`Expected token ids in ${source} for ${flag} but it holds none`);
  const ids = new Array<number>(parts.length);
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (!/^\d+$/.test(part)) {
      const shown = part.length > 20 ? `${part.slice(0, 17)}...` : part;
      throw new Error(`Expected comma- or space-separated token ids for ${flag} but received "${shown}" as id ${i} of ${source}`);
    }
    ids[i] = Number(part);
  }
  return ids;
}

function requireOne(names: string[], values: unknown[]): void {
  if (values.filter((v) => v !== undefined).length !== 1) throw new Error(`Give exactly one of ${names.slice(0, -1).join(', ')} and ${names.at(-1)}`);
}

/** The prompt text of --prompt or --prompt-file; fails naming both when neither or both are given. */
export async function readPromptText(flags: { prompt?: string; promptFile?: string }): Promise<string> {
  requireOne(['--prompt', '--prompt-file'], [flags.prompt, flags.promptFile]);
  return flags.prompt ?? readSource(flags.promptFile!, '--prompt-file');
}

/** The one prompt the flags give, as text or ids; read before any model is loaded, so a bad flag fails fast. */
export async function readPrompt(flags: PromptFlags): Promise<PromptInput> {
  requireOne(['--prompt', '--prompt-ids', '--prompt-file', '--prompt-ids-file'], [flags.prompt, flags.promptIds, flags.promptFile, flags.promptIdsFile]);
  if (flags.prompt !== undefined) return { text: flags.prompt };
  if (flags.promptIds !== undefined) return { ids: flags.promptIds };
  if (flags.promptFile !== undefined) return { text: await readSource(flags.promptFile, '--prompt-file') };
  const file = flags.promptIdsFile!;
  return { ids: parseIdText(await readSource(file, '--prompt-ids-file'), '--prompt-ids-file', file === '-' ? 'standard input' : file) };
}
