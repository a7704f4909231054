// Loading a binary safely. Every candidate is first loaded in a child process: one that crashes
// on load (a libtorch ABI mismatch can abort inside static initialisers) cannot take the
// caller's process down. A binary that passed is remembered by size, time and path, so the child
// runs once per binary and libtorch, not at every start.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { libraryNames } from './libtorch.js';

/** What the addon's buildInfo() says about the libtorch it was compiled against. */
export interface BuiltAgainst {
  torchVersion: string;
  torchRoot: string;
  torchSource: string;
  cuda: boolean;
  cudaVersion: string | null;
  napiVersion: number;
}

/** How to load one binary. */
export interface LoadStep {
  addon: string;
  /** Preload helper and the libraries it opens first; null to rely on the addon's run path. */
  helper: string | null;
  libraries: string[];
}

export type ProbeResult = { ok: true; built: BuiltAgainst } | { ok: false; why: string };

// Runs in the child: the same steps as loadStep() below, then prints what the addon was built against.
const PROBE_SOURCE = `
const step = JSON.parse(process.argv[1]);
if (step.helper) {
  const m = { exports: {} };
  process.dlopen(m, step.helper);
  for (const lib of step.libraries) m.exports.open(lib);
}
process.stdout.write(JSON.stringify(require(step.addon).buildInfo()));
`;

/** Opens the step's libraries, then the addon, in this process. */
export function loadStep(step: LoadStep): unknown {
  if (step.helper) {
    const m = { exports: {} as { open(path: string): void } };
    process.dlopen(m, step.helper);
    for (const lib of step.libraries) m.exports.open(lib);
  }
  return require(step.addon);
}

function cacheDir(env: NodeJS.ProcessEnv): string {
  return join(env.QWEN3_HOME || join(homedir(), '.cache', 'qwen3-torch'), 'load-checks');
}

function stamp(path: string): [string, number, number, number] {
  const s = statSync(path);
  return [resolve(path), s.size, s.mtimeMs, s.ino];
}

/** Identifies a binary and the libraries it is loaded with: any rebuild or reinstall changes it. */
function fingerprint(step: LoadStep): string | null {
  try {
    const files = [step.addon, ...(step.helper ? [step.helper] : []), ...step.libraries].map(stamp);
    return createHash('sha256').update(JSON.stringify([process.version, files])).digest('hex').slice(0, 32);
  } catch {
    return null;
  }
}

/**
 * The libtorch libraries a binary was found to run on. A local build reaches them through its
 * run path, which the fingerprint cannot see: `pip install -U torch` replaces them in place, and
 * the binary must then be checked again before it is loaded here.
 */
function runtimeStamps(built: BuiltAgainst): string {
  const libdir = join(built.torchRoot, 'lib');
  return JSON.stringify(libraryNames(process.platform).flatMap((n) => (existsSync(join(libdir, n)) ? [stamp(join(libdir, n))] : [])));
}

/** The first line of the child's error, e.g. "…/qwen3_torch.node: undefined symbol: _ZN3c10…". */
function childError(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const line = lines.find((l) => /^\w*Error( \[\w+\])?:/.test(l)) ?? lines.at(-1) ?? 'no output';
  return line.replace(/^\w*Error( \[\w+\])?: /, '');
}

function readCached(path: string): BuiltAgainst | null {
  try {
    const entry = JSON.parse(readFileSync(path, 'utf8')) as { built: BuiltAgainst; libtorch: string };
    return entry.libtorch === runtimeStamps(entry.built) ? entry.built : null;
  } catch {
    return null; // not checked yet, or its libtorch changed since
  }
}

function writeCached(path: string, built: BuiltAgainst): void {
  try {
    mkdirSync(join(path, '..'), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ built, libtorch: runtimeStamps(built) }));
    renameSync(tmp, path);
  } catch {
    // an unwritable cache only costs the next start another check
  }
}

/** Loads `step` in a child process; caches success. */
export function probe(step: LoadStep, env: NodeJS.ProcessEnv = process.env): ProbeResult {
  const key = fingerprint(step);
  const cached = key ? join(cacheDir(env), `${key}.json`) : null;
  const known = cached ? readCached(cached) : null;
  if (known) return { ok: true, built: known };
  const childEnv = { ...env };
  delete childEnv.NODE_OPTIONS; // the check is about the binary, not the caller's flags
  const r = spawnSync(process.execPath, ['-e', PROBE_SOURCE, JSON.stringify(step)], { encoding: 'utf8', env: childEnv, timeout: 120_000 });
  if (r.error) return { ok: false, why: `could not run the load check: ${r.error.message}` };
  if (r.signal) return { ok: false, why: `crashed with ${r.signal} while loading${r.stderr.trim() ? ` (${childError(r.stderr)})` : ''}` };
  if (r.status !== 0) return { ok: false, why: childError(r.stderr) };
  let built: BuiltAgainst;
  try {
    built = JSON.parse(r.stdout) as BuiltAgainst;
  } catch {
    return { ok: false, why: `loaded but printed ${JSON.stringify(r.stdout.slice(0, 200))} instead of its build info` };
  }
  if (cached) writeCached(cached, built);
  return { ok: true, built };
}
