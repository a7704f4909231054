'use strict';
// How many compilers a build of the addon from source runs at once (install.js, and setup.js and
// prebuild.js in a checkout): CMAKE_BUILD_PARALLEL_LEVEL where it is set, else one per CPU while
// each has 2 GiB of memory, since a source that includes libtorch's headers takes 1-2 GB to
// compile. The memory is the container's limit where there is one (os.totalmem reports the host's).
const os = require('node:os');

const BYTES_PER_JOB = 2 * 1024 ** 3;

/** The parallel jobs for cmake-js (and node-gyp), as a string. */
function buildJobs(env = process.env) {
  if (env.CMAKE_BUILD_PARALLEL_LEVEL) return String(env.CMAKE_BUILD_PARALLEL_LEVEL);
  const cpus = os.availableParallelism?.() ?? os.cpus().length;
  const limit = os.constrainedMemory?.();
  const memory = limit && limit < os.totalmem() ? limit : os.totalmem();
  return String(Math.max(1, Math.min(cpus, Math.floor(memory / BYTES_PER_JOB))));
}

module.exports = { buildJobs };
