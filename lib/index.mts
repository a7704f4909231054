// The ES module entry (`import … from 'qwen3-torch'`): the same exports as the CommonJS build in
// index.js, so both module systems share one copy of the library and of the loaded addon.
export * from './index.js';
