// One rank of a model split over processes whose calls come from rank 0 alone
// (LoadOptions.forwardCalls), for test/process-group.test.ts. Rank 0 runs the test's program, a
// BatchScheduler's interleaved sequences and a sampled generation with no seed, then the greedy
// one again (the ranks must still be in step); every other rank follows. Prints one JSON line.
import * as lib from '../../dist/index.js';
import { PROMPT, loadRank, runProgram } from './process-program.mjs';

const o = JSON.parse(process.argv[2]);
const model = await loadRank(lib, o, { forwardCalls: true });
const message = (p) => p.then(() => 'ran', (e) => e.message);
if (o.rank === 0) {
  const out = await runProgram(model, lib);
  const scheduler = new lib.BatchScheduler(model, { maxBatch: 3 });
  const stream = async (s) => {
    const ids = [];
    for await (const t of s) ids.push(t.id);
    return ids;
  };
  out.scheduled = await Promise.all(o.scheduled.map((p) => stream(scheduler.submit({ promptIds: p, maxTokens: 8 }))));
  await scheduler.close();
  out.unseeded = await message(lib.generateTextBasicCache(model, PROMPT, { maxNewTokens: 6, temperature: 0.7 }));
  out.greedyAfter = await lib.generateTextBasicCache(model, PROMPT, { maxNewTokens: 40, eosTokenId: null });
  out.followRefused = await message(model.followCalls());
  process.stdout.write(`${JSON.stringify({ ...out, forwardsCalls: model.forwardsCalls })}\n`);
} else {
  const refused = await message(lib.generateTextBasicCache(model, PROMPT, { maxNewTokens: 2 }));
  await model.followCalls();
  process.stdout.write(`${JSON.stringify({ refused, forwardsCalls: model.forwardsCalls, parameterBytes: model.parameterBytes })}\n`);
}
model.dispose();
