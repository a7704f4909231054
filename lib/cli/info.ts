// `qwen3 info`: the addon, the libtorch it runs on, the install record and the devices.
import type { Command } from 'commander';
import { formatRuntimeInfo, runtimeInfo } from '../info.js';
import { write } from './output.js';

async function infoCommand(opts: { json?: boolean }): Promise<void> {
  const info = runtimeInfo();
  write(opts.json ? `${JSON.stringify(info, null, 2)}\n` : `${formatRuntimeInfo(info)}\n`);
}

export function registerInfo(program: Command): void {
  program.command('info').description('show the addon, the libtorch it uses and the devices it sees').option('--json', 'machine-readable output').action(infoCommand);
}
