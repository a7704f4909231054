// What keeps the `tokenizers` binding from taking the process down.
//
// The binding runs the pre-tokenizer's regular expression with Oniguruma, whose matcher gives up
// after 10,000,000 backtracking steps in one match; the binding then panics in a function that
// cannot unwind, and the whole process aborts (exit 134), Python's `tokenizers` raising a
// PanicException on the same input. Qwen's pattern reaches that limit through its alternative
// `\s*[\r\n]+`: at the start of a whitespace run without a line break, `\s*` takes the whole run
// and then gives it back one character at a time looking for a newline, one step per character.
// A run of about 9,980,000 spaces (alone, or between two letters) is enough.
//
// The fix is at the root: that alternative is replaced by one that matches exactly the same text
// without ever giving characters back (possessive quantifiers), so a match costs a constant
// number of steps however long the run. What `\s*[\r\n]+` matches at a position is the
// whitespace from there up to and including the last CR or LF of the run (none: no match); the
// replacement takes groups of "blanks that are not CR/LF, then CR/LFs" for as long as they
// follow one another, which ends at that same last CR or LF and fails the same way when there
// is none. The other alternatives backtrack at most a character or two, so with the replacement
// no input reaches the limit, and the ids are those of the original pattern (checked against
// Python's `tokenizers` with the original pattern on whitespace runs and the parity corpus).
//
// A tokenizer file whose pattern lacks that alternative is left as it is; for such files a
// whitespace run longer than MAX_WHITESPACE_RUN_UNKNOWN_PATTERN is refused instead, well below
// the run that aborts with Qwen's pattern.
import { constants } from 'node:buffer';
import { InvalidOptionError } from '../validate.js';

/** The backtracking alternative of Qwen2/Qwen3's (and Llama 3's) pre-tokenizer pattern. */
export const BACKTRACKING_NEWLINE_RUN = String.raw`|\s*[\r\n]+|`;
/** Matches what BACKTRACKING_NEWLINE_RUN matches, without backtracking. */
export const LINEAR_NEWLINE_RUN = String.raw`|(?:[^\S\r\n]*+[\r\n]++)++|`;

/**
 * The most UTF-8 bytes encode() takes. Memory, not the regex, sets it: the binding keeps about
 * 450 bytes per token while encoding, and a byte-level BPE gives up to one token per byte, so
 * the largest text may need about 7.5 GB. Python's `tokenizers` has no such limit.
 */
export const MAX_TEXT_BYTES = 16 * 2 ** 20;

/** Whitespace run refused for tokenizer files whose pattern was not made linear. */
export const MAX_WHITESPACE_RUN_UNKNOWN_PATTERN = 1_000_000;

/** The longest string decode() can return: V8's limit on string length. */
export const MAX_DECODED_LENGTH = constants.MAX_STRING_LENGTH;

/**
 * Rewrites, in a parsed tokenizer.json, every Split pre-tokenizer whose pattern contains
 * BACKTRACKING_NEWLINE_RUN to use LINEAR_NEWLINE_RUN. Returns true when no Split pattern is left
 * that was not rewritten (so no whitespace-run limit is needed).
 */
export function linearizePreTokenizer(json: unknown): boolean {
  let allLinear = true;
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (typeof node !== 'object' || node === null) return;
    const obj = node as Record<string, unknown>;
    const pattern = obj.pattern as { Regex?: unknown } | undefined;
    if (obj.type === 'Split' && typeof pattern?.Regex === 'string') {
      if (pattern.Regex.includes(BACKTRACKING_NEWLINE_RUN)) {
        pattern.Regex = pattern.Regex.split(BACKTRACKING_NEWLINE_RUN).join(LINEAR_NEWLINE_RUN);
      } else {
        allLinear = false;
      }
    }
    Object.values(obj).forEach(visit);
  };
  if (typeof json === 'object' && json !== null) visit((json as { pre_tokenizer?: unknown }).pre_tokenizer);
  return allLinear;
}

/** Throws an InvalidOptionError when `text` is over the size limit or has too long a whitespace run. */
export function checkEncodable(text: string, maxWhitespaceRun: number): void {
  // A UTF-16 code unit is at most 3 UTF-8 bytes: only long texts need counting.
  if (text.length * 3 > MAX_TEXT_BYTES) {
    const bytes = Buffer.byteLength(text, 'utf8');
    if (bytes > MAX_TEXT_BYTES) {
      throw new InvalidOptionError(`Expected text of at most ${MAX_TEXT_BYTES} bytes (UTF-8) for text but received ${bytes} bytes`, 'text');
    }
  }
  if (Number.isFinite(maxWhitespaceRun) && text.length > maxWhitespaceRun) {
    const { length, start } = longestWhitespaceRun(text);
    if (length > maxWhitespaceRun) {
      throw new InvalidOptionError(
        `Expected whitespace runs of at most ${maxWhitespaceRun} characters with this tokenizer file for text but received a run of ${length} at offset ${start}`,
        'text',
      );
    }
  }
}

// Oniguruma's \s (Unicode White_Space), plus U+FEFF to err on the long side.
function isSpace(c: number): boolean {
  return (c >= 9 && c <= 13) || c === 32 || c === 0x85 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a)
    || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

function longestWhitespaceRun(text: string): { length: number; start: number } {
  let best = { length: 0, start: 0 };
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    if (i < text.length && isSpace(text.charCodeAt(i))) continue;
    if (i - start > best.length) best = { length: i - start, start };
    start = i + 1;
  }
  return best;
}
