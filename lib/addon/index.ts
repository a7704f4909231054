// The native addon's loader: finding libtorch, choosing and checking a binary for it, and what
// `npm install` does. lib/native.ts loads the addon through loadAddon().
export { AddonLoadError, chooseAddon, loadAddon, type AddonChoice, type AddonKind, type LoadOptions, type LoadReport } from './choose.js';
export { type InstallPlan, type InstallRecord, installRecordPath, planInstall, readInstallRecord } from './install-plan.js';
export { type FoundLibtorch, type LibtorchFacts, findLibtorch, inspectLibtorch, libraryNames, prebuildTag, searchLibtorch } from './libtorch.js';
export { type Prebuild, hostLibc, listPrebuilds, matchPrebuild, parsePrebuildName, prebuildDir, preloadHelperFor } from './prebuilds.js';
export { type BuiltAgainst, type LoadStep, probe } from './probe.js';
export { packageRoot, projectPython, venvDir, venvPython } from './python.js';
