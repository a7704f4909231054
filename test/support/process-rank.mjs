// One rank of a model split over processes, for test/process-group.test.ts: loads the model that
// argv[2] (JSON) describes as that rank, runs the test's program on it and prints what it gave
// (and the rank the model reports) as one JSON line.
import * as lib from '../../dist/index.js';
import { loadRank, runProgram } from './process-program.mjs';

const o = JSON.parse(process.argv[2]);
const model = await loadRank(lib, o);
const out = await runProgram(model, lib);
// Sampling with no seed would draw differently on each rank: refused before any step.
const unseeded = await lib.generateTextBasicCache(model, [1, 2], { maxNewTokens: 2, temperature: 0.5 }).then(() => 'sampled', (e) => e.message);
process.stdout.write(`${JSON.stringify({ ...out, unseeded, processGroup: model.processGroup, parameterBytes: model.parameterBytes })}\n`);
model.dispose();
