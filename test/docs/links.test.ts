// Every relative link of the documentation (README.md, docs/**/*.md, the plugins' and examples' READMEs)
// points at a file that exists and, with a #fragment into a Markdown file, at one of its headings (GitHub's
// anchors). The README's sections moved into docs/: a link left behind would fail here.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { it } from 'node:test';
import { ROOT_PATH, docFiles } from './blocks.ts';

/** GitHub's anchors of a Markdown file's headings (outside code blocks). */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fence: string | null = null;
  for (const line of readFileSync(join(ROOT_PATH, file), 'utf8').split('\n')) {
    const f = /^ {0,3}(`{3,}|~{3,})/.exec(line);
    if (f) {
      if (fence === null) fence = f[1];
      else if (f[1][0] === fence[0] && f[1].length >= fence.length) fence = null;
      continue;
    }
    if (fence !== null) continue;
    const h = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!h) continue;
    const base = h[1].toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** The Markdown files whose links are checked. */
function files(): string[] {
  const readmes = ['plugins', 'examples'].flatMap((d) =>
    readdirSync(join(ROOT_PATH, d))
      .map((p) => `${d}/${p}/README.md`)
      .filter((p) => existsSync(join(ROOT_PATH, p))),
  );
  return [...docFiles(), ...readmes];
}

it('every relative link of the documentation resolves (file and heading)', () => {
  const broken: string[] = [];
  let links = 0;
  for (const file of files()) {
    const text = readFileSync(join(ROOT_PATH, file), 'utf8').replace(/^ {0,3}(`{3,})[^\n]*\n[\s\S]*?^ {0,3}\1\s*$/gm, '');
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1];
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, mailto:, …
      links++;
      const [path, fragment] = target.split('#');
      const resolved = path === '' ? file : normalize(join(dirname(file), path));
      if (!existsSync(join(ROOT_PATH, resolved))) {
        broken.push(`${file}: ${target} (no ${resolved})`);
        continue;
      }
      if (fragment !== undefined && resolved.endsWith('.md') && statSync(join(ROOT_PATH, resolved)).isFile() && !anchors(resolved).has(fragment)) {
        broken.push(`${file}: ${target} (no heading #${fragment} in ${resolved})`);
      }
    }
  }
  assert.deepEqual(broken, []);
  assert.ok(links > 50, `${links} links checked`);
});
