// Preloaded (`node --require`) into a CLI child by the Ctrl-C tests. It holds each model's second
// native prefill call until the process has received SIGINT, so a test that sends SIGINT once the
// CLI says it is prefilling has it land between two prefill chunks on any machine, fast or slow.
// It wraps the handle the addon returns (a proxy: the addon's methods are read-only and need the
// real object as `this`) and changes nothing else.
const { join } = require('node:path');
const { native } = require(join(__dirname, '..', '..', 'dist', 'native.js'));

let interrupted = false;
const held = [];
process.on('SIGINT', () => {
  interrupted = true;
  for (const resume of held.splice(0)) resume();
});

const binding = native();
const loadModel = binding.loadModel;
binding.loadModel = async (request) => {
  const handle = await loadModel.call(binding, request);
  let calls = 0;
  const prefill = async (step) => {
    calls += 1;
    if (calls === 2 && !interrupted) await new Promise((resume) => held.push(resume));
    return handle.prefill(step);
  };
  return new Proxy(handle, {
    get: (target, key) => {
      if (key === 'prefill') return prefill;
      const value = Reflect.get(target, key);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
};
