// The `qwen3` program: commander parses the flags, each command lives in its own file here, and
// the library validates values (its errors name the option). Every failure ends as one
// `qwen3: <message>` line on stderr and exit code 1.
import { Command } from 'commander';
import { registerBench } from './bench.js';
import { registerBenchServe } from './bench-serve.js';
import { registerChat } from './chat.js';
import { registerDownload } from './download.js';
import { registerGenerate } from './generate.js';
import { registerInfo } from './info.js';
import { registerServe } from './serve.js';
import { watchOutput } from './output.js';
import { registerTokenize } from './tokenize.js';

export function buildProgram(): Command {
  const program = new Command('qwen3').description('Run Qwen3 language models through libtorch').showHelpAfterError();
  registerInfo(program);
  registerTokenize(program);
  registerGenerate(program);
  registerChat(program);
  registerBench(program);
  registerBenchServe(program);
  registerDownload(program);
  registerServe(program);
  return program;
}

/** Runs the program on `argv` (process.argv's layout). */
export async function main(argv: readonly string[]): Promise<void> {
  watchOutput();
  try {
    await buildProgram().parseAsync([...argv]);
  } catch (err) {
    process.stderr.write(`qwen3: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
