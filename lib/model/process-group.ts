// LoadOptions.processGroup: this process as one rank of a model split over processes, the way
// torchrun starts them (docs/scale-out.md). Every process loads the same model with its own rank
// and makes the same calls in the same order; rank 0 hosts the c10d store they meet through.
import { z } from 'zod';
import { type DeviceName, resolveDevice } from '../device.js';
import { InvalidOptionError, describeValue, integer, nonEmptyString } from '../validate.js';

/** The most ranks a tensor-parallel model may have (threads or processes). */
export const MAX_RANKS = 64;

export interface ProcessGroupOptions {
  /** This process's rank, 0 .. worldSize - 1. */
  rank: number;
  /** How many processes hold a share of the model (2 .. 64). */
  worldSize: number;
  /** Where rank 0 hosts the store (default "127.0.0.1"). */
  masterAddr?: string;
  /** Its port (default 29500, as torchrun's). */
  masterPort?: number;
  /** Which GPU of this machine a `device` of "cuda" means: cuda:localRank (default: rank). */
  localRank?: number;
  /** With LoadOptions.forwardCalls: where rank 0 takes the other ranks' connections (default masterPort + 1). */
  forwardPort?: number;
}

/** The group as resolved: every field set. */
export type ProcessGroup = Required<ProcessGroupOptions>;

export const DEFAULT_MASTER_PORT = 29500;

export const processGroupSchema = z.union([
  z.literal('env'),
  z
    .object(
      {
        rank: integer(0, MAX_RANKS - 1),
        worldSize: integer(2, MAX_RANKS),
        masterAddr: nonEmptyString().optional(),
        masterPort: integer(1, 65535).optional(),
        localRank: integer(0, MAX_RANKS - 1).optional(),
        forwardPort: integer(1, 65535).optional(),
      },
      { error: 'Expected "env" or {rank, worldSize, masterAddr?, masterPort?, localRank?, forwardPort?}' },
    )
    .strict(),
]);

/** The default forwardPort: the one after the store's (the one before where that is the last). */
function forwardPortAfter(masterPort: number): number {
  return masterPort < 65535 ? masterPort + 1 : masterPort - 1;
}

/** An integer environment variable in [min, max]; `fallback` when it is unset (undefined: required). */
function envInteger(env: NodeJS.ProcessEnv, name: string, min: number, max: number, fallback?: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') {
    if (fallback !== undefined) return fallback;
    throw new InvalidOptionError(`processGroup "env" needs ${name} in the environment (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)`, 'processGroup');
  }
  const value = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
  if (!(value >= min && value <= max)) {
    throw new InvalidOptionError(`Expected integer between ${min} and ${max} for ${name} (from the environment) but received ${describeValue(raw)}`, 'processGroup');
  }
  return value;
}

/** The group that `option` names ('env': torchrun's variables in `env`), checked; null for none. */
export function resolveProcessGroup(option: ProcessGroupOptions | 'env' | undefined, env: NodeJS.ProcessEnv = process.env): ProcessGroup | null {
  if (option === undefined) return null;
  const group: ProcessGroup =
    option === 'env'
      ? (() => {
          const worldSize = envInteger(env, 'WORLD_SIZE', 2, MAX_RANKS);
          const rank = envInteger(env, 'RANK', 0, worldSize - 1);
          const masterPort = envInteger(env, 'MASTER_PORT', 1, 65535, DEFAULT_MASTER_PORT);
          return {
            rank,
            worldSize,
            masterAddr: env.MASTER_ADDR || '127.0.0.1',
            masterPort,
            localRank: envInteger(env, 'LOCAL_RANK', 0, MAX_RANKS - 1, rank),
            forwardPort: envInteger(env, 'QWEN3_FORWARD_PORT', 1, 65535, forwardPortAfter(masterPort)),
          };
        })()
      : {
          rank: option.rank,
          worldSize: option.worldSize,
          masterAddr: option.masterAddr ?? '127.0.0.1',
          masterPort: option.masterPort ?? DEFAULT_MASTER_PORT,
          localRank: option.localRank ?? option.rank,
          forwardPort: option.forwardPort ?? forwardPortAfter(option.masterPort ?? DEFAULT_MASTER_PORT),
        };
  if (group.rank >= group.worldSize) {
    throw new InvalidOptionError(`Expected integer between 0 and ${group.worldSize - 1} for processGroup.rank but received ${group.rank}`, 'processGroup.rank');
  }
  return group;
}

/** This rank's device: `device` as given ("cuda" or a CUDA "auto": cuda:localRank), CPU or CUDA only. */
export function processRankDevice(device: string | undefined, group: ProcessGroup): DeviceName {
  const resolved = resolveDevice(device ?? 'auto');
  const named = resolved === 'cuda' ? (`cuda:${group.localRank}` as DeviceName) : resolved;
  if (named !== 'cpu' && !named.startsWith('cuda')) {
    throw new InvalidOptionError(`A process group runs on CUDA devices or the CPU, not on ${named}`, 'device');
  }
  return resolveDevice(named);
}
