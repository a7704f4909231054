// Runs once before the suite: makes sure the addon is built and the parity fixtures exist
// (random-weight checkpoints plus PyTorch and Hugging Face reference outputs, made by Python).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export default function setup(): void {
  const root = join(__dirname, '..');
  if (!existsSync(join(root, 'build', 'Release', 'qwen3_torch.node'))) {
    throw new Error('The native addon is not built: run `npm run build` first (needs `pip install torch`).');
  }
  execFileSync('python3', [join(root, 'scripts', 'make_fixtures.py'), '--out', join(root, 'test', '.fixtures')], {
    stdio: 'inherit',
  });
}
