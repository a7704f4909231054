// What a model path names, checked before anything native reads it: a checkpoint file (the zip
// that torch.save writes, in the book's layout) or a Hugging Face model folder (config.json and
// safetensors). This is the one place that decides what a path may be.
import { open, stat } from 'node:fs/promises';
import { type HuggingFaceModel, isHuggingFaceDir, readHuggingFaceModel } from './huggingface.js';

/** A model source that the loader can read. */
export type ModelSource = { kind: 'checkpoint'; path: string } | { kind: 'huggingface'; path: string; model: HuggingFaceModel };

const ZIP_MAGIC = Buffer.from('PK\x03\x04', 'latin1');

/**
 * Resolves `path` to a model source, or throws an error that says what is wrong with it: not
 * found, a directory, not a regular file, empty, or a file whose format is not recognised.
 */
export async function resolveModelSource(path: string): Promise<ModelSource> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A NUL byte in the path (ERR_INVALID_ARG_VALUE) can name no file either.
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ERR_INVALID_ARG_VALUE' || code === 'ERR_INVALID_ARG_TYPE') {
      throw new Error(`Model file not found: ${path}`);
    }
    throw new Error(`Cannot read model file ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (info.isDirectory()) {
    if (await isHuggingFaceDir(path)) return { kind: 'huggingface', path, model: await readHuggingFaceModel(path) };
    throw new Error(
      `Model path ${path} is a directory without a config.json; expected a Hugging Face model folder or a checkpoint file written by torch.save(state_dict) (.pth)`,
    );
  }
  if (!info.isFile()) throw new Error(`Model path ${path} is not a regular file; expected a checkpoint file written by torch.save(state_dict) (.pth)`);
  if (info.size === 0) throw new Error(`Model file ${path} is empty; expected a checkpoint file written by torch.save(state_dict) (.pth)`);
  const head = await readHead(path, 16);
  if (!head.subarray(0, 4).equals(ZIP_MAGIC)) {
    throw new Error(
      `Model file ${path} is not a PyTorch checkpoint: its format is not recognised (${describeFormat(head)}); `
      + 'expected the zip archive that torch.save(state_dict) writes (.pth)',
    );
  }
  return { kind: 'checkpoint', path };
}

async function readHead(path: string, bytes: number): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await file.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } catch (err) {
    throw new Error(`Cannot read model file ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    await file.close();
  }
}

/** A hint at what the file is instead, for the error message. */
function describeFormat(head: Buffer): string {
  // safetensors: an 8-byte little-endian header length, then the JSON header.
  if (head.length >= 10 && head.toString('latin1', 8, 10) === '{"') return 'it looks like a safetensors file';
  if (head[0] === 0x80 && head[1] !== undefined && head[1] <= 5) return 'it looks like a bare pickle, not the zip that torch.save writes';
  if (head.length >= 4 && head.toString('latin1', 0, 4) === 'GGUF') return 'it looks like a GGUF file';
  const text = head.every((b) => b === 9 || b === 10 || b === 13 || (b >= 32 && b < 127) || b >= 0xc0);
  return text ? 'it looks like a text file' : `it starts with bytes ${head.subarray(0, 4).toString('hex')}`;
}
