// Preloaded (node --require) into `qwen3 chat` by test/cli.test.ts: the process sends itself
// SIGINT, as Ctrl-C would, the moment the first answer's first text is written. The signal thus
// lands while that answer is still being generated, on a fast machine or a loaded one alike.
'use strict';
const write = process.stdout.write.bind(process.stdout);
let sent = false;
process.stdout.write = (chunk, ...rest) => {
  if (!sent && chunk.length > 0) {
    sent = true;
    process.kill(process.pid, 'SIGINT');
  }
  return write(chunk, ...rest);
};
