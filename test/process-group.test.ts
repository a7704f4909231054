// A model split over processes, one rank each (LoadOptions.processGroup, parallel/process_group.h),
// as torchrun starts them: every rank must give what the model gives in one process. Here the
// ranks are CPU processes that add through rank 0's TCPStore; the CUDA host recipe's `tp` phase
// runs this file with QWEN3_TEST_DEVICES=cuda:0,cuda:1, where they add through NCCL.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import * as lib from '../lib/index.js';
import { Qwen3Model } from '../lib/index.js';
import { resolveProcessGroup } from '../lib/model/process-group.js';
import { loadFixture, relativeMaxError } from './support/fixtures.js';
import { PROMPT, runProgram } from './support/process-program.mjs';
import { freePort, freePorts } from './support/ports.js';
import { CLI, runCli } from './support/run-cli.js';

const DEVICE = process.env.QWEN3_TEST_DEVICE ?? 'cpu';
const DEVICES = (process.env.QWEN3_TEST_DEVICES ?? 'cpu,cpu').split(',');
const fx = loadFixture('tiny-gqa4'); // 2 key/value heads: one per rank

type ProgramOutput = Awaited<ReturnType<typeof runProgram>>;

type RankOutput = ProgramOutput & { processGroup: unknown; parameterBytes: number; unseeded: string } & Record<string, unknown>;

/** Runs a rank script of test/support (process-rank.mjs unless named) as one rank; its output, or the reason it failed. */
async function runRank(spec: Record<string, unknown>, script = 'process-rank.mjs'): Promise<RankOutput> {
  const child = spawn(process.execPath, [join(__dirname, 'support', script), JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`rank ${String(spec.rank)} exited with ${code}: ${stderr}`);
  return JSON.parse(stdout);
}

describe.each([false, true])('two processes, one rank each, against one process, float32 (compile %s)', (compile) => {
  it('every rank gives the logits (within 1e-5) and the greedy, seeded and batch tokens of one process', async () => {
    const one = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype: 'float32', compile });
    const want = await runProgram(one, lib);
    const wholeBytes = one.parameterBytes;
    one.dispose();
    const masterPort = await freePort();
    const ranks = await Promise.all(
      [0, 1].map((rank) => runRank({ modelPath: fx.modelPath, configPath: fx.configPath, device: DEVICES[rank], compile, rank, worldSize: 2, masterPort })),
    );
    for (const [rank, got] of ranks.entries()) {
      expect(got.processGroup).toEqual({ rank, worldSize: 2 });
      expect(relativeMaxError(Float32Array.from(got.logits), Float32Array.from(want.logits))).toBeLessThan(1e-5);
      expect(got.greedy).toEqual(want.greedy);
      expect(got.sampled).toEqual(want.sampled);
      expect(got.batch).toEqual(want.batch);
      // Each process holds its share of the blocks, not the whole model.
      expect(got.parameterBytes).toBeLessThan(wholeBytes);
      expect(got.unseeded).toBe('A model split over processes samples only with a seed (or with forwardCalls): every rank must draw the same numbers');
    }
  });
});

describe('rank 0 makes the calls, the other process follows them (forwardCalls)', () => {
  it('rank 0 gives what one process gives, its scheduler\'s sequences too, and samples without a seed in step with rank 1', async () => {
    const scheduled = [PROMPT, [5, 6, 7], [400, 401, 402, 403]];
    const one = await Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: DEVICE, dtype: 'float32' });
    const want = await runProgram(one, lib);
    const wantScheduled = [];
    for (const p of scheduled) wantScheduled.push(await lib.generateTextBasicCache(one, p, { maxNewTokens: 8, eosTokenId: null }));
    one.dispose();
    const [masterPort, forwardPort] = await freePorts(2);
    const [lead, follow] = await Promise.all(
      [0, 1].map((rank) =>
        runRank({ modelPath: fx.modelPath, configPath: fx.configPath, device: DEVICES[rank], rank, worldSize: 2, masterPort, forwardPort, scheduled }, 'follow-rank.mjs')),
    );
    expect(relativeMaxError(Float32Array.from(lead!.logits), Float32Array.from(want.logits))).toBeLessThan(1e-5);
    expect(lead!.greedy).toEqual(want.greedy);
    expect(lead!.sampled).toEqual(want.sampled);
    expect(lead!.batch).toEqual(want.batch);
    expect(lead!.scheduled).toEqual(wantScheduled);
    // Sampling with no seed: rank 0's draws travel with its calls.
    expect(lead!.unseeded).toBe('ran');
    expect(lead!.greedyAfter).toEqual(want.greedy);
    expect(lead!.followRefused).toBe('Rank 0 makes the calls that the other ranks follow: call followCalls() on them');
    expect(lead!.forwardsCalls).toBe(true);
    expect(follow!.forwardsCalls).toBe(true);
    expect(follow!.refused).toBe("Rank 1 follows rank 0's calls (forwardCalls): make them on rank 0, and call followCalls() here");
  });

  it('forwardCalls needs a process group', async () => {
    await expect(Qwen3Model.load(fx.modelPath, { config: fx.configPath, device: 'cpu', forwardCalls: true })).rejects.toThrow(
      'forwardCalls goes with processGroup (a model split over processes)',
    );
  });
});

describe('process group options', () => {
  const load = (options: Record<string, unknown>) => Qwen3Model.load(fx.modelPath, { config: fx.configPath, dtype: 'float32', ...options });

  it('reads torchrun\'s variables, and names the one that is missing or wrong', () => {
    const env = { RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.5', MASTER_PORT: '29400', LOCAL_RANK: '0' };
    expect(resolveProcessGroup('env', env)).toEqual({ rank: 1, worldSize: 2, masterAddr: '10.0.0.5', masterPort: 29400, localRank: 0, forwardPort: 29401 });
    expect(resolveProcessGroup('env', { RANK: '0', WORLD_SIZE: '4', QWEN3_FORWARD_PORT: '31000' })).toEqual({
      rank: 0, worldSize: 4, masterAddr: '127.0.0.1', masterPort: 29500, localRank: 0, forwardPort: 31000,
    });
    expect(resolveProcessGroup({ rank: 1, worldSize: 2, masterPort: 65535 })?.forwardPort).toBe(65534);
    expect(() => resolveProcessGroup('env', { RANK: '0' })).toThrow('processGroup "env" needs WORLD_SIZE in the environment');
    expect(() => resolveProcessGroup('env', { RANK: 'x', WORLD_SIZE: '2' })).toThrow('Expected integer between 0 and 1 for RANK (from the environment) but received "x"');
    expect(() => resolveProcessGroup('env', { RANK: '0', WORLD_SIZE: '1' })).toThrow('Expected integer between 2 and 64 for WORLD_SIZE');
    expect(() => resolveProcessGroup({ rank: 2, worldSize: 2 })).toThrow('Expected integer between 0 and 1 for processGroup.rank but received 2');
  });

  it('refuses a group beside devices, and a bad group', async () => {
    await expect(load({ devices: ['cpu', 'cpu'], processGroup: { rank: 0, worldSize: 2 } })).rejects.toThrow(
      'Give processGroup (one rank per process) or devices / tensorParallel (ranks as threads of this process), not both',
    );
    await expect(load({ processGroup: { rank: 0, worldSize: 1 } })).rejects.toThrow('Expected integer between 2 and 64 for processGroup.worldSize but received 1');
    await expect(load({ processGroup: { rank: 0, worldSize: 2, masterPort: 70000 } })).rejects.toThrow('for processGroup.masterPort');
    await expect(load({ processGroup: 'all' })).rejects.toThrow('for processGroup');
  });

  it('a rank whose partner never comes fails the load after collectiveTimeoutMs, and the process carries on', async () => {
    const masterPort = await freePort();
    await expect(load({ device: 'cpu', processGroup: { rank: 0, worldSize: 2, masterPort }, collectiveTimeoutMs: 1500 })).rejects.toThrow(
      `Process group: rank 0 of 2 could not meet the others at 127.0.0.1:${masterPort} within 1500 ms`,
    );
    const alone = await load({ device: 'cpu' });
    expect(await lib.generateTextBasicCache(alone, PROMPT, { maxNewTokens: 3, eosTokenId: null })).toHaveLength(3);
    alone.dispose();
  });
});

describe('qwen3 generate --distributed', () => {
  const generate = (flags: string[], env: NodeJS.ProcessEnv = process.env) =>
    runCli(['generate', '--model', fx.modelPath, '--config', fx.configPath, '--dtype', 'float32', '--prompt-ids', PROMPT.join(','),
      '--max-new-tokens', '15', '--ignore-eos', '--json', ...flags], { env });

  it('two processes generate what one does; rank 0 alone prints', async () => {
    const one = await generate(['--device', 'cpu']);
    expect(one.status).toBe(0);
    const want = (JSON.parse(one.stdout) as { ids: number[] }).ids;
    const MASTER_PORT = String(await freePort());
    const [r0, r1] = await Promise.all(
      [0, 1].map((rank) => generate(['--device', 'cpu', '--distributed'], { ...process.env, RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT })),
    );
    expect(r0!.status).toBe(0);
    expect((JSON.parse(r0!.stdout) as { ids: number[] }).ids).toEqual(want);
    expect(r1!.status).toBe(0);
    expect(r1!.stdout).toBe('');
  });

  it('under torchrun itself (whose agent hosts the store), as its two workers', async () => {
    const one = await generate(['--device', 'cpu']);
    const want = (JSON.parse(one.stdout) as { ids: number[] }).ids;
    const args = ['-m', 'torch.distributed.run', '--nproc-per-node', '2', '--master-port', String(await freePort()), '--no-python', process.execPath, CLI,
      'generate', '--model', fx.modelPath, '--config', fx.configPath, '--dtype', 'float32', '--prompt-ids', PROMPT.join(','), '--max-new-tokens', '15',
      '--ignore-eos', '--json', '--device', 'cpu', '--distributed'];
    const child = spawn(projectPython(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const [code] = (await once(child, 'close')) as [number | null];
    expect(code, stderr).toBe(0);
    // One worker printed: rank 0.
    const printed = stdout.split('\n').filter((line) => line.startsWith('{'));
    expect(printed).toHaveLength(1);
    expect((JSON.parse(printed[0]!) as { ids: number[] }).ids).toEqual(want);
  });

  it('refuses --distributed with --devices, and without torchrun\'s variables', async () => {
    const both = await generate(['--devices', 'cpu,cpu', '--distributed']);
    expect(both.status).not.toBe(0);
    expect(both.stderr).toContain('Use either --distributed (one rank per process) or --devices / --tensor-parallel');
    const { RANK: _r, WORLD_SIZE: _w, ...bare } = process.env;
    const missing = await generate(['--device', 'cpu', '--distributed'], bare);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain('processGroup "env" needs WORLD_SIZE in the environment');
  });
});
