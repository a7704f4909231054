// A PyTorch-style model summary: the text `print(model)` shows for the reference implementation's
// `Qwen3Model(cfg)` (scripts/python/qwen3_reference.py), built from the config alone, with no weights.
//
// The rendering mirrors torch.nn.Module.__repr__ and ModuleList.__repr__ (torch 2.x): children
// print as "(name): repr", nested lines gain two spaces, a module with only a one-line
// extra_repr prints it inline ("Linear(in_features=..., ...)"), one with neither prints "Name()"
// (the reference's RMSNorm defines no extra_repr), and a ModuleList collapses runs of identical
// entries into "(first-last): n x repr".
import { type Qwen3Config, parseConfig } from './config.js';

interface ModuleNode {
  name: string;
  extra?: string;
  children?: [string, ModuleNode][];
  /** Set for an nn.ModuleList; entries are keyed by index. */
  list?: ModuleNode[];
}

// torch.nn.modules.module._addindent: indent every line after the first, blank lines excepted.
function addIndent(s: string, spaces: number): string {
  const [first, ...rest] = s.split('\n');
  if (rest.length === 0) return s;
  return [first, ...rest.map((line) => (line.trim() ? ' '.repeat(spaces) + line : ''))].join('\n');
}

function render(node: ModuleNode): string {
  if (node.list !== undefined) return renderList(node.name, node.list);
  const extraLines = node.extra ? node.extra.split('\n') : [];
  const childLines = (node.children ?? []).map(([key, child]) => `(${key}): ${addIndent(render(child), 2)}`);
  const lines = [...extraLines, ...childLines];
  let s = `${node.name}(`;
  if (lines.length > 0) {
    s += extraLines.length === 1 && childLines.length === 0 ? extraLines[0] : `\n  ${lines.join('\n  ')}\n`;
  }
  return `${s})`;
}

function renderList(name: string, items: ModuleNode[]): string {
  if (items.length === 0) return `${name}()`;
  const reprs = items.map(render);
  const runs: { start: number; end: number; repr: string }[] = [];
  reprs.forEach((repr, i) => {
    const last = runs.at(-1);
    if (last !== undefined && last.repr === repr) last.end = i;
    else runs.push({ start: i, end: i, repr });
  });
  const lines = runs.map(({ start, end, repr }) =>
    addIndent(start === end ? `(${start}): ${repr}` : `(${start}-${end}): ${end - start + 1} x ${repr}`, 2),
  );
  return `${name}(\n  ${lines.join('\n  ')}\n)`;
}

const linear = (inFeatures: number, outFeatures: number): ModuleNode => ({
  name: 'Linear',
  extra: `in_features=${inFeatures}, out_features=${outFeatures}, bias=False`,
});
const rmsNorm = (): ModuleNode => ({ name: 'RMSNorm' });

function transformerBlock(c: Qwen3Config): ModuleNode {
  const qOut = c.n_heads * c.head_dim;
  const kvOut = c.n_kv_groups * c.head_dim;
  const att: [string, ModuleNode][] = [
    ['W_query', linear(c.emb_dim, qOut)],
    ['W_key', linear(c.emb_dim, kvOut)],
    ['W_value', linear(c.emb_dim, kvOut)],
    ['out_proj', linear(qOut, c.emb_dim)],
  ];
  // Without qk_norm the reference sets q_norm/k_norm to None, which are not submodules.
  if (c.qk_norm) att.push(['q_norm', rmsNorm()], ['k_norm', rmsNorm()]);
  return {
    name: 'TransformerBlock',
    children: [
      ['att', { name: 'GroupedQueryAttention', children: att }],
      ['ff', {
        name: 'FeedForward',
        children: [
          ['fc1', linear(c.emb_dim, c.hidden_dim)],
          ['fc2', linear(c.emb_dim, c.hidden_dim)],
          ['fc3', linear(c.hidden_dim, c.emb_dim)],
        ],
      }],
      ['norm1', rmsNorm()],
      ['norm2', rmsNorm()],
    ],
  };
}

/**
 * What Python's `print(Qwen3Model(cfg))` prints for the reference implementation, without the
 * trailing newline (so `console.log(formatModelSummary(cfg))` prints the same bytes). The config
 * is validated first; dtype, context_length and rope_base do not appear in the summary.
 */
export function formatModelSummary(config: Qwen3Config): string {
  const c = parseConfig(config);
  return render({
    name: 'Qwen3Model',
    children: [
      ['tok_emb', { name: 'Embedding', extra: `${c.vocab_size}, ${c.emb_dim}` }],
      ['trf_blocks', { name: 'ModuleList', list: Array.from({ length: c.n_layers }, () => transformerBlock(c)) }],
      ['final_norm', rmsNorm()],
      ['out_head', linear(c.emb_dim, c.vocab_size)],
    ],
  });
}
