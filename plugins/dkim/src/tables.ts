// OpenDKIM's KeyTable and SigningTable files, so that an administrator moving from OpenDKIM keeps the
// files they have (opendkim.conf(5): KeyTable, SigningTable with the `refile:` wildcard syntax).
//
//   KeyTable:      NAME   DOMAIN:SELECTOR:/path/to/private.key
//   SigningTable:  PATTERN   NAME [NAME…]
//
// A SigningTable pattern is matched against the author address (the From: header), first line first:
// `*@example.com`, `user@example.com`, `*@*.example.com`, `*` — `*` matches any run of characters, as
// OpenDKIM's `refile:` tables do. A bare `example.com` (OpenDKIM's plain-table form, the domain alone)
// matches every address at that domain. Several NAMEs on one line sign with each (RSA and Ed25519).
import { readFileSync } from 'node:fs';
import type { DkimKeyConfig } from './keys.ts';

/** Why a table cannot be used: the message names the file and line. */
export class TableProblem extends Error {
  readonly file: string;
  readonly line: number;
  constructor(file: string, line: number, reason: string) {
    super(reason);
    this.file = file;
    this.line = line;
  }
}

/** One SigningTable row: which author addresses it covers, and the KeyTable names that sign them. */
export interface SigningRule {
  /** The pattern as written. */
  pattern: string;
  /** The pattern compiled (lower-case, anchored). */
  test: RegExp;
  /** KeyTable names, in the order written. */
  keys: string[];
  /** Where it was written, for messages. */
  line: number;
}

/** The lines of a table file that hold entries: comments (`#` to the end) and blank lines dropped. */
function entries(file: string): { line: number; fields: string[] }[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TableProblem(file, 0, `cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const out: { line: number; fields: string[] }[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const fields = raw.replace(/#.*$/, '').trim().split(/\s+/).filter(Boolean);
    if (fields.length > 0) out.push({ line: i + 1, fields });
  });
  return out;
}

/** Reads a KeyTable: key name → the key's domain, selector and file. */
export function readKeyTable(file: string): Map<string, DkimKeyConfig & { line: number }> {
  const keys = new Map<string, DkimKeyConfig & { line: number }>();
  for (const { line, fields } of entries(file)) {
    if (fields.length !== 2) throw new TableProblem(file, line, `expected "NAME DOMAIN:SELECTOR:KEYFILE", found ${fields.length} field(s)`);
    const [name, value] = fields as [string, string];
    const first = value.indexOf(':');
    const second = value.indexOf(':', first + 1);
    if (first <= 0 || second <= first + 1 || second === value.length - 1) throw new TableProblem(file, line, `expected DOMAIN:SELECTOR:KEYFILE after "${name}", found "${value}"`);
    if (keys.has(name)) throw new TableProblem(file, line, `key name "${name}" is defined twice (first on line ${keys.get(name)!.line})`);
    // The file may contain ':' (a path), the domain and selector may not.
    keys.set(name, { domain: value.slice(0, first), selector: value.slice(first + 1, second), keyFile: value.slice(second + 1), line });
  }
  return keys;
}

/** Compiles a SigningTable pattern: `*` is any run of characters; a bare domain covers its addresses. */
function compile(pattern: string): RegExp {
  const p = pattern.toLowerCase();
  const full = p.includes('@') || p === '*' ? p : `*@${p}`;
  return new RegExp(`^${full.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

/** Reads a SigningTable, checking that every name it uses is in `keyNames`. */
export function readSigningTable(file: string, keyNames: ReadonlySet<string>): SigningRule[] {
  const rules: SigningRule[] = [];
  for (const { line, fields } of entries(file)) {
    if (fields.length < 2) throw new TableProblem(file, line, `expected "PATTERN NAME [NAME…]", found only "${fields[0]}"`);
    const [pattern, ...keys] = fields as [string, ...string[]];
    for (const k of keys) if (!keyNames.has(k)) throw new TableProblem(file, line, `key name "${k}" is not in the KeyTable`);
    rules.push({ pattern, test: compile(pattern), keys, line });
  }
  return rules;
}

/** The KeyTable names that sign mail from `author` (the first matching rule's), or none. */
export function keysForAuthor(rules: readonly SigningRule[], author: string): SigningRule | undefined {
  const a = author.toLowerCase();
  return rules.find((r) => r.test.test(a));
}
