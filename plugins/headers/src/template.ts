/**
 * `{placeholder}` templates of header values and verdict reasons. Placeholders are parsed at load,
 * so a misspelt one is a configuration error rather than a literal `{sendr}` in delivered mail.
 * @module
 */

/** Placeholders that are not another plugin's note, with what they stand for (the README table). */
export const PLACEHOLDERS: Readonly<Record<string, string>> = {
  policy: 'the policy whose rule is running',
  rule: 'the rule’s name',
  'client.ip': 'the client’s IP address',
  'client.name': 'the client’s host name as the MTA reports it',
  helo: 'the HELO/EHLO name',
  sender: 'the envelope sender (empty for the null sender)',
  'sender.domain': 'the envelope sender’s domain',
  'sender.local': 'the envelope sender’s local part',
  recipient: 'the first accepted recipient',
  recipients: 'every accepted recipient, comma-separated',
  'recipients.count': 'the number of accepted recipients',
  auth: 'the SASL login, when the client authenticated',
  mta: 'the MTA’s host name ({j})',
  queueId: 'the MTA’s queue id',
  now: 'the current time as an RFC 5322 date',
  'now.iso': 'the current time, ISO 8601 in UTC',
  'now.unix': 'the current time in seconds since 1970',
  value: 'the current value of the header being changed or set (empty for add and insert)',
};

/** Placeholder families: `match.N` or `match.NAME` (captures), `header.NAME` (a header, decoded). */
const FAMILIES = ['match', 'header'];

/** One piece of a parsed template: literal text, or a placeholder path. */
export type TemplatePart = string | { readonly name: string; readonly path: readonly string[] };

/** A parsed template. */
export interface Template {
  /** The text as configured. */
  readonly source: string;
  /** Literal text and placeholders, in order. */
  readonly parts: readonly TemplatePart[];
  /** The plugins whose notes it reads (`{spf.result}` → `spf`). */
  readonly notes: readonly string[];
}

/**
 * Parses a template. Returns the problem as a string for a placeholder that is neither listed in
 * {@link PLACEHOLDERS}, a `match.`/`header.` reference, nor `<plugin>.<field>`.
 */
export function parseTemplate(source: string): Template | string {
  const parts: TemplatePart[] = [];
  const notes = new Set<string>();
  let last = 0;
  for (const m of source.matchAll(/\{([A-Za-z0-9_.-]+)\}/g)) {
    if (m.index > last) parts.push(source.slice(last, m.index));
    const name = m[1];
    const path = name.split('.');
    if (!(name in PLACEHOLDERS)) {
      if (path.length < 2 || path.some((p) => p === '')) return `unknown placeholder {${name}}: expected one of ${Object.keys(PLACEHOLDERS).map((k) => `{${k}}`).join(', ')}, {match.N}, {header.NAME} or {<plugin>.<field>}`;
      if (!FAMILIES.includes(path[0]) && !(path[0] in PLACEHOLDERS_ROOTS)) notes.add(path[0]);
      else if (path[0] in PLACEHOLDERS_ROOTS) return `unknown placeholder {${name}}: ${path[0]} has ${Object.keys(PLACEHOLDERS).filter((k) => k.startsWith(path[0] + '.') || k === path[0]).map((k) => `{${k}}`).join(', ')}`;
    }
    parts.push({ name, path });
    last = m.index + m[0].length;
  }
  if (last < source.length) parts.push(source.slice(last));
  return { source, parts, notes: [...notes] };
}

/** Roots of the fixed placeholders: `{sender.foo}` is a typo, not the note of a plugin called `sender`. */
const PLACEHOLDERS_ROOTS: Readonly<Record<string, true>> = Object.fromEntries(Object.keys(PLACEHOLDERS).map((k) => [k.split('.')[0], true]));

/** Fills a template: `lookup` answers each placeholder (undefined → empty). */
export function renderTemplate(t: Template, lookup: (name: string, path: readonly string[]) => string | undefined): string {
  let out = '';
  for (const part of t.parts) out += typeof part === 'string' ? part : (lookup(part.name, part.path) ?? '');
  return out;
}

/** Turns a note's value into text: scalars as written, arrays comma-joined, anything else empty. */
export function noteText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (Array.isArray(value)) return value.map(noteText).filter((v) => v !== undefined).join(', ');
  return undefined;
}

/** Reads `path` (after the plugin name) inside a note. */
export function notePath(note: unknown, path: readonly string[]): unknown {
  let v = note;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = v instanceof Map ? v.get(key) : (v as Record<string, unknown>)[key];
  }
  return v;
}

/** An RFC 5322 date (`Wed, 25 Nov 2026 16:15:40 +0000`), the form Date: and Received: use. */
export function rfc5322Date(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${d.getUTCDate()} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}
