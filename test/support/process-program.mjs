// The calls of test/process-group.test.ts: made on a model in one process by the test, and the
// same way by every rank of a model split over processes (test/support/process-rank.mjs). `lib`
// is the package's API (the TypeScript sources in the test, dist/ in a rank's process).
export const PROMPT = [1, 17, 42, 99, 256, 300, 511];

export async function runProgram(model, lib) {
  const forward = await model.forward(PROMPT);
  return {
    logits: Array.from(forward.logits.data),
    greedy: await lib.generateTextBasicCache(model, PROMPT, { maxNewTokens: 40, eosTokenId: null }),
    sampled: await lib.generateTextBasicCache(model, PROMPT, { maxNewTokens: 20, eosTokenId: null, temperature: 0.8, topK: 50, topP: 0.9, seed: 7 }),
    batch: await lib.generateBatchCache(model, [PROMPT, [5, 6, 7]], { maxNewTokens: 12, eosTokenId: null }),
  };
}

/** One rank of the test's two-process model as a rank script gets it (argv[2] as `o`), float32. */
export function loadRank(lib, o, extra = {}) {
  return lib.Qwen3Model.load(o.modelPath, {
    config: o.configPath,
    device: o.device,
    dtype: 'float32',
    compile: o.compile,
    processGroup: { rank: o.rank, worldSize: o.worldSize, masterPort: o.masterPort, ...(o.forwardPort ? { forwardPort: o.forwardPort } : {}) },
    collectiveTimeoutMs: 60_000,
    ...extra,
  });
}
