// The parallel compiles of a build from source (scripts/install/build-jobs.js, used by the install,
// `npm run build` and the prebuild): CMAKE_BUILD_PARALLEL_LEVEL wins; otherwise one job per CPU
// while each has 2 GiB of the memory this process may use.
import { createRequire } from 'node:module';
import { availableParallelism, constrainedMemory, totalmem } from 'node:os';
import { describe, expect, it } from 'vitest';

const { buildJobs } = createRequire(__filename)('../scripts/install/build-jobs.js') as { buildJobs: (env?: Record<string, string>) => string };

describe('buildJobs', () => {
  it('takes CMAKE_BUILD_PARALLEL_LEVEL as it is', () => {
    expect(buildJobs({ CMAKE_BUILD_PARALLEL_LEVEL: '7' })).toBe('7');
  });

  it('otherwise runs one job per CPU while each has 2 GiB, and at least one', () => {
    const limit = constrainedMemory?.();
    const memory = limit && limit < totalmem() ? limit : totalmem();
    const want = Math.max(1, Math.min(availableParallelism(), Math.floor(memory / 2 ** 31)));
    expect(buildJobs({})).toBe(String(want));
    expect(Number(buildJobs({}))).toBeGreaterThanOrEqual(1);
    expect(Number(buildJobs({}))).toBeLessThanOrEqual(availableParallelism());
  });
});
