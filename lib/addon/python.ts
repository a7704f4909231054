// The project's Python: the interpreter that runs the Python references, fixture makers and
// baselines under scripts/python/, and the project-local environment (.venv/) that the
// development set-up (scripts/dev/setup.js) creates when this machine has no libtorch or lacks
// the pinned reference packages. Everything that runs a Python script asks projectPython().
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The package root: two levels above lib/addon/ (sources) and dist/addon/ (compiled) alike. */
export const packageRoot = resolve(__dirname, '..', '..');

/** Where the project-local Python environment lives (it may not exist). */
export function venvDir(root: string = packageRoot): string {
  return join(root, '.venv');
}

export function venvPython(root: string = packageRoot, platform: string = process.platform): string {
  return platform === 'win32' ? join(venvDir(root), 'Scripts', 'python.exe') : join(venvDir(root), 'bin', 'python');
}

/**
 * The Python to run scripts with: QWEN3_PYTHON when set (the user's choice, used as it is), else
 * the project's .venv when it exists (it holds the pinned packages), else python3 on PATH.
 */
export function projectPython(root: string = packageRoot, env: NodeJS.ProcessEnv = process.env): string {
  if (env.QWEN3_PYTHON) return env.QWEN3_PYTHON;
  const venv = venvPython(root);
  return existsSync(venv) ? venv : 'python3';
}
