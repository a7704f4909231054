// The short fuzz run: a few hundred mutated checkpoints (truncations, flipped bytes in the zip
// directory, the pickle and the tensor records, wrong sizes and offsets, huge declared sizes),
// each loaded in a child process. Every one must end in a clean error or a model that runs.
// The long run is `node scripts/checks/fuzz_checkpoints.mjs` (2,000 cases and more).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script, shared with the command line
import { makeCase, parseLayout, prepareBases, runFuzz } from '../scripts/checks/fuzz_checkpoints.mjs';

const SEED = 20261129;
const CASES = 500;
let work: string;
let bases: { config: string; bases: string[]; sameWeightsAs: number[] };

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'qwen3-fuzz-test-'));
  bases = prepareBases(work);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('mutated checkpoints', () => {
  it(`${CASES} cases end in a clean error or a model that runs: no crash, hang or huge allocation`, async () => {
    const r = await runFuzz({ cases: CASES, seed: SEED, perChild: 50, ...bases });
    expect(r.failures).toEqual([]);
    expect(r.counts.loaded + r.counts.rejected).toBe(CASES);
    // The mix must exercise both sides: most mutations break the file, some leave it loadable.
    expect(r.counts.rejected).toBeGreaterThan(CASES / 2);
    expect(r.counts.loaded).toBeGreaterThan(10);
    expect(r.counts.loadedIdentical).toBeGreaterThan(0);
    // Many different checks fired, in the zip reader, the pickle reader and the key/shape check.
    expect(r.messages.length).toBeGreaterThan(40);
    const all = r.messages.map(([m]: [string, number]) => m).join('\n');
    expect(all).toMatch(/end-of-central-directory/);
    expect(all).toMatch(/data\.pkl: /);
    expect(all).toMatch(/truncated/);
  }, 600_000); // a bound for a stuck run only: how fast the cases go is not what this test checks

  it('a case is a function of seed and index alone (so any failure can be replayed)', () => {
    const loaded = bases.bases.map((path) => ({ path, bytes: readFileSync(path), layout: parseLayout(readFileSync(path)) }));
    const a = makeCase(loaded, SEED, 123);
    const b = makeCase(loaded, SEED, 123);
    const c = makeCase(loaded, SEED + 1, 123);
    expect(Buffer.compare(a.bytes, b.bytes)).toBe(0);
    expect(a.ops).toEqual(b.ops);
    expect(a.ops.length).toBeGreaterThan(0);
    expect(Buffer.compare(a.bytes, c.bytes) !== 0 || a.ops.join() !== c.ops.join()).toBe(true);
  });

  it('the harness itself notices a crash and a hang, and carries on with the next case', async () => {
    // The hang is ended after 3 s, or 25 times the child's slowest base load on a slow machine.
    const r = await runFuzz({ cases: 8, seed: SEED, perChild: 8, jobs: 1, timeoutMs: 3000, selfTest: 'crash:2,hang:5', ...bases });
    expect(r.failures.map((f: { index: number; outcome: string }) => [f.index, f.outcome])).toEqual([[2, 'crash'], [5, 'hang']]);
    expect(r.counts.loaded + r.counts.rejected).toBe(6);
  }, 600_000);
});
