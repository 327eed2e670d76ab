// The header block as the MTA delivered it, rebuilt for hashing. The plugin declares exactHeaders, so
// the kernel negotiates SMFIP_HDR_LEADSPC and each header carries `raw`, the exact text after the
// colon (folded lines joined by a bare LF): `Name:` + raw with CRLF folds is the header as written,
// which `simple` header canonicalisation needs. An MTA that does not offer HDR_LEADSPC (Postfix and
// Sendmail 8.14+ both do) leaves only `value`, without the one space after the colon: then
// `Name: value` is the best guess, exact for `relaxed` and for the usual one space.
import type { HeaderEvent } from 'themis-milter';

/** `Name: value` with CRLF folds, no final CRLF. */
export function headerLine(h: HeaderEvent): string {
  if (h.raw !== undefined) return `${h.name}:${h.raw.replace(/\r?\n/g, '\r\n')}`;
  const value = h.value.replace(/\r?\n/g, '\r\n');
  // An empty value, a value on the next line or one starting with a tab had no space eaten.
  const sep = value === '' || value.startsWith('\t') || value.startsWith('\r\n') ? ':' : ': ';
  return `${h.name}${sep}${value}`;
}

/** The whole header block, each line ending in CRLF, with the empty line that ends it. */
export function headerBlock(headers: readonly HeaderEvent[]): Buffer {
  return Buffer.from(`${headers.map((h) => `${headerLine(h)}\r\n`).join('')}\r\n`, 'utf8');
}

/** The tags of a DKIM-Signature value (`d=`, `s=`, `a=`, `b=`…), names lower-cased, whitespace removed. */
export function signatureTags(value: string): Map<string, string> {
  const tags = new Map<string, string>();
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim().toLowerCase();
    if (name && !tags.has(name)) tags.set(name, part.slice(eq + 1).replace(/\s+/g, ''));
  }
  return tags;
}

/** The DKIM-Signature headers of a message, as their `d=`, `s=`, `a=` and `b=` tags. */
export function signaturesOf(headers: readonly HeaderEvent[]): { domain: string; selector: string; algorithm: string; b: string }[] {
  return headers
    .filter((h) => h.name.toLowerCase() === 'dkim-signature')
    .map((h) => {
      const t = signatureTags(h.value);
      return { domain: (t.get('d') ?? '').toLowerCase(), selector: t.get('s') ?? '', algorithm: (t.get('a') ?? '').toLowerCase(), b: t.get('b') ?? '' };
    });
}

/** The first mailbox of the (first) From header (`local@domain`, the domain lower-cased); undefined without one. */
export function fromAddress(headers: readonly HeaderEvent[]): string | undefined {
  const from = headers.find((h) => h.name.toLowerCase() === 'from');
  if (!from) return undefined;
  // Comments out, then the first angle-addr, else the first addr-spec of the list.
  const value = from.value.replace(/\r?\n/g, ' ').replace(/\((?:[^()\\]|\\.)*\)/g, ' ');
  const angle = /<([^<>]*)>/.exec(value);
  const spec = angle ? angle[1] : (value.split(',')[0] ?? '');
  const at = spec.lastIndexOf('@');
  if (at < 0) return undefined;
  const domain = spec.slice(at + 1).trim().replace(/[>;\s].*$/, '').replace(/\.$/, '').toLowerCase();
  if (!domain) return undefined;
  // The local part as written, without a display name's leftovers (`Name alice` → `alice`).
  const local = spec.slice(0, at).trim().split(/\s+/).pop() ?? '';
  return `${local}@${domain}`;
}

/** The domain of the first mailbox of the (first) From header, lower-cased; undefined without one. */
export function fromDomain(headers: readonly HeaderEvent[]): string | undefined {
  const address = fromAddress(headers);
  return address?.slice(address.lastIndexOf('@') + 1);
}
