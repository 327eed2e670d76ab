// The fenced code blocks of the documentation (README.md and docs/**/*.md), for the tests that check or run
// them: test/docs/samples.test.ts (every block) and the tests that run one sample as written.
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repository's root directory (ends with a slash). */
export const ROOT = new URL('../../', import.meta.url);
export const ROOT_PATH = fileURLToPath(ROOT);

/** One fenced code block. */
export interface CodeBlock {
  /** the Markdown file, relative to the repository */
  readonly file: string;
  /** the line of the block's first content line (1-based) */
  readonly line: number;
  /** the info string's first word (`ts`, `sh`, …; '' when none) */
  readonly lang: string;
  /** the info string's other words: `file=src/index.ts` → file: 'src/index.ts'; `config` → config: '' */
  readonly attrs: ReadonlyMap<string, string>;
  /** the whole info string */
  readonly info: string;
  /** the block's text, with a final newline */
  readonly text: string;
}

/** Every Markdown file the documentation sample check walks, relative to the repository. */
export function docFiles(): string[] {
  const docs = readdirSync(new URL('docs/', ROOT), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f.split('\\').join('/')}`)
    .sort();
  return ['README.md', ...docs];
}

/** The fenced code blocks of one Markdown file (relative to the repository). */
export function codeBlocks(file: string): CodeBlock[] {
  const lines = readFileSync(new URL(file, ROOT), 'utf8').split('\n');
  const blocks: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^ {0,3}(`{3,}|~{3,})\s*(.*)$/.exec(lines[i]);
    if (!open) continue;
    const fence = open[1];
    const info = open[2].trim();
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      body.push(lines[j]);
    }
    const [lang = '', ...rest] = info.split(/\s+/).filter(Boolean);
    const attrs = new Map<string, string>();
    for (const w of rest) {
      const eq = w.indexOf('=');
      if (eq < 0) attrs.set(w, '');
      else attrs.set(w.slice(0, eq), w.slice(eq + 1));
    }
    blocks.push({ file, line: i + 2, lang: lang.toLowerCase(), attrs, info, text: body.length ? `${body.join('\n')}\n` : '' });
    i = j;
  }
  return blocks;
}

/** The one block of `file` whose info string carries `attr` (with `value`, if given); throws when not exactly one. */
export function codeBlock(file: string, attr: string, value?: string): CodeBlock {
  const found = codeBlocks(file).filter((b) => b.attrs.has(attr) && (value === undefined || b.attrs.get(attr) === value));
  if (found.length !== 1) throw new Error(`${file}: ${found.length} code blocks with ${attr}${value === undefined ? '' : `=${value}`} (expected 1)`);
  return found[0];
}
