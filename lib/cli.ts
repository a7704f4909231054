#!/usr/bin/env node
// The `qwen3` executable (package.json "bin" names dist/cli.js); the program is in ./cli/.
import { main } from './cli/main.js';

void main(process.argv);
