#!/usr/bin/env node
// The `qwen3` command line. Each command parses flags with commander, validates through the
// library (which throws messages naming the option), and exits non-zero with that message.
import { Command, InvalidArgumentError, Option } from 'commander';
import { MODEL_SIZES } from './config.js';
import { generateWithStats } from './generate.js';
import { runtimeInfo } from './info.js';
import { Qwen3Model } from './model.js';

function intArg(name: string) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value)) throw new InvalidArgumentError(`Expected integer for ${name} but received "${value}"`);
    return Number(value);
  };
}

function idList(value: string): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p))) {
    throw new InvalidArgumentError(`Expected comma-separated token ids for --prompt-ids but received "${value}"`);
  }
  return parts.map(Number);
}

async function infoCommand(opts: { json?: boolean }): Promise<void> {
  const info = runtimeInfo();
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  const lines = [
    `qwen3-torch ${info.version} on ${info.platform}, Node ${info.node}`,
    `addon:    ${info.addon.path} (Node-API ${info.addon.napiVersion})`,
    `libtorch: ${info.libtorch.version}${info.libtorch.cuda ? ` with CUDA ${info.libtorch.cudaVersion ?? ''}` : ' (CPU only)'}`,
    `          ${info.libtorch.root} (found via ${info.libtorch.foundVia})`,
    `devices:  ${info.devices.join(', ')}${info.cudaDevices.length ? ` (${info.cudaDevices.join(', ')})` : ''}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

interface GenerateFlags {
  model: string;
  config?: string;
  size?: string;
  promptIds: number[];
  maxNewTokens: number;
  device: string;
  dtype?: 'bfloat16' | 'float32' | 'float16';
  cache: boolean;
  ignoreEos?: boolean;
  eosTokenId?: number;
  json?: boolean;
}

async function generateCommand(flags: GenerateFlags): Promise<void> {
  if (flags.config && flags.size) throw new Error('Use either --config or --size, not both');
  const model = await Qwen3Model.load(flags.model, { config: flags.config ?? flags.size ?? '0.6B', device: flags.device, dtype: flags.dtype });
  try {
    const { ids, stats } = await generateWithStats(model, flags.promptIds, {
      maxNewTokens: flags.maxNewTokens,
      useCache: flags.cache,
      ignoreEos: flags.ignoreEos,
      eosTokenId: flags.eosTokenId ?? null,
    });
    if (flags.json) {
      const { seconds, tokensPerSecond, prefillSeconds, decodeTokensPerSecond, peakMemoryBytes, device } = stats;
      process.stdout.write(
        `${JSON.stringify({ ids, stats: { seconds, tokensPerSecond, prefillSeconds, decodeTokensPerSecond, peakMemoryBytes, device } })}\n`,
      );
    } else {
      process.stdout.write(`${ids.join(',')}\n`);
      process.stderr.write(`Time: ${stats.seconds.toFixed(2)} sec\n${Math.round(stats.tokensPerSecond)} tokens/sec\n`);
    }
  } finally {
    model.dispose();
  }
}

export function buildProgram(): Command {
  const program = new Command('qwen3').description('Run Qwen3 language models through libtorch').showHelpAfterError();
  program
    .command('info')
    .description('show the addon, the libtorch it uses and the devices it sees')
    .option('--json', 'machine-readable output')
    .action(infoCommand);
  program
    .command('generate')
    .description('generate tokens with greedy decoding')
    .requiredOption('--model <file>', 'checkpoint written by torch.save(state_dict) (.pth)')
    .option('--config <file>', 'model config JSON (reference key names)')
    .addOption(new Option('--size <size>', 'built-in model size').choices(Object.keys(MODEL_SIZES)))
    .requiredOption('--prompt-ids <ids>', 'comma-separated prompt token ids', idList)
    .option('--max-new-tokens <n>', 'tokens to generate at most', intArg('--max-new-tokens'), 50)
    .option('--device <device>', 'auto, cpu, cuda, cuda:N, mps or xpu', 'auto')
    .addOption(new Option('--dtype <dtype>', 'compute dtype (default: the config\'s)').choices(['bfloat16', 'float32', 'float16']))
    .option('--no-cache', 're-feed the whole sequence every step instead of using the KV cache')
    .option('--eos-token-id <id>', 'stop at this token', intArg('--eos-token-id'))
    .option('--ignore-eos', 'do not stop at the end-of-text token')
    .option('--json', 'print {"ids": [...], "stats": {...}}')
    .action(generateCommand);
  return program;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`qwen3: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    });
}
