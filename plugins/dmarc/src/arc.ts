// DMARC's local-policy override for mail an ARC (RFC 8617) sealer vouches for: RFC 8617 §7.2 lets a
// receiver whose DMARC evaluation fails use the Authentication-Results an intermediary it trusts
// recorded in its ARC set, and RFC 7489 §7 (PolicyOverrideType `trusted_forwarder`) lets it apply a
// disposition other than the published policy then. Here: the chain passes, its newest sealer (the
// last `ARC-Seal` d=) is a trusted one, and that sealer's ARC-Authentication-Results show the
// message authenticated for the From domain when it reached the sealer — `dmarc=pass` for it, or
// a passing DKIM `header.d` / SPF `smtp.mailfrom` aligned with it (the record's modes).
import type { ArcResult } from 'themis-plugin-dkim';
import { aligned, normalizeDomain, type DmarcEvaluation } from './dmarc.ts';

/** How a disposition was overridden (RFC 7489 appendix C, PolicyOverrideType): `trusted_forwarder` for a trusted ARC sealer. */
export interface DmarcOverride {
  /** `trusted_forwarder`: a trusted ARC sealer vouched for the message; `local_policy`: another local decision. */
  type: 'trusted_forwarder' | 'local_policy';
  /** What the override rests on: `arc=pass i=2 as=forwarder.example aar=dmarc=pass header.from=example.com`. */
  comment: string;
}

/** One resinfo of an Authentication-Results: `method=result` and its `ptype.property=value`s (lower-cased names). */
export interface AuthResultEntry {
  method: string;
  result: string;
  props: Record<string, string>;
}

/** Drops the RFC 5322 comments (nested parentheses, quoted pairs) outside quoted strings. */
function stripComments(text: string): string {
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && (quoted || depth > 0)) {
      if (depth === 0) out += c + (text[i + 1] ?? '');
      i++;
      continue;
    }
    if (depth === 0 && c === '"') quoted = !quoted;
    if (!quoted && c === '(') {
      depth++;
      out += ' ';
      continue;
    }
    if (!quoted && c === ')' && depth > 0) {
      depth--;
      continue;
    }
    if (depth === 0) out += c;
  }
  return out;
}

/** Splits on `sep` outside quoted strings. */
function splitOutside(text: string, sep: RegExp): string[] {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && quoted) {
      current += c + (text[i + 1] ?? '');
      i++;
      continue;
    }
    if (c === '"') quoted = !quoted;
    if (!quoted && sep.test(c)) {
      parts.push(current);
      current = '';
      continue;
    }
    current += c;
  }
  parts.push(current);
  return parts;
}

const unquote = (v: string) => (v.startsWith('"') && v.endsWith('"') && v.length >= 2 ? v.slice(1, -1).replace(/\\(.)/g, '$1') : v);

/** Parses an Authentication-Results payload (`authserv-id; method=result ptype.prop=value; …`, RFC 8601 §2.2), leniently. */
export function parseAuthResults(text: string): { authservId: string; results: AuthResultEntry[] } {
  const [head = '', ...resinfos] = splitOutside(stripComments(text), /;/);
  const results: AuthResultEntry[] = [];
  for (const resinfo of resinfos) {
    const tokens = splitOutside(resinfo.trim(), /[ \t\r\n]/).filter((t) => t !== '');
    const first = /^([A-Za-z0-9_-]+)(?:\/[0-9]+)?=([A-Za-z0-9_-]+)$/.exec(tokens[0] ?? '');
    if (!first) continue;
    const props: Record<string, string> = {};
    for (const t of tokens.slice(1)) {
      const m = /^([A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+)=(.*)$/.exec(t);
      if (m) props[m[1].toLowerCase()] ??= unquote(m[2]);
    }
    results.push({ method: first[1].toLowerCase(), result: first[2].toLowerCase(), props });
  }
  return { authservId: head.trim().split(/\s+/)[0] ?? '', results };
}

/** The domain of `local@domain`, `@domain` or `domain`. */
const domainOf = (v: string | undefined) => (v ? normalizeDomain(v.slice(v.lastIndexOf('@') + 1)) : undefined);

/** What of the sealer's results shows the message authenticated for `from`, or undefined. */
function evidence(aar: string, from: string, e: DmarcEvaluation): string | undefined {
  const { results } = parseAuthResults(aar);
  for (const r of results) {
    if (r.method !== 'dmarc' || r.result !== 'pass') continue;
    const hf = domainOf(r.props['header.from']);
    if (hf === undefined || hf === from) return `dmarc=pass${hf ? ` header.from=${hf}` : ''}`;
  }
  const adkim = e.record?.adkim ?? 'r';
  for (const r of results) {
    if (r.method !== 'dkim' || r.result !== 'pass') continue;
    const d = domainOf(r.props['header.d'] ?? r.props['header.i']);
    if (d && aligned(d, from, adkim)) return `dkim=pass header.d=${d}`;
  }
  const aspf = e.record?.aspf ?? 'r';
  for (const r of results) {
    if (r.method !== 'spf' || r.result !== 'pass') continue;
    const d = domainOf(r.props['smtp.mailfrom']);
    if (d && aligned(d, from, aspf)) return `spf=pass smtp.mailfrom=${d}`;
  }
  return undefined;
}

/** The newest sealer of a passing chain, lower-cased, or undefined. */
export function newestSealer(arc: ArcResult | undefined): string | undefined {
  if (arc?.result !== 'pass' || arc.sealers.length === 0) return undefined;
  return normalizeDomain(arc.sealers[arc.sealers.length - 1]);
}

/** Whether a policy's list trusts the sealer (exact names, case and a final dot ignored). */
export function trusts(trustedSealers: readonly string[], sealer: string | undefined): boolean {
  return sealer !== undefined && trustedSealers.some((d) => normalizeDomain(d) === sealer);
}

/**
 * The override a failing evaluation gets from a trusted sealer, or undefined: the chain passes, the
 * newest sealer is in `trustedSealers`, its ARC-Authentication-Results show `dmarc=pass` for the From
 * domain or an aligned DKIM or SPF pass, and the disposition is not `none` already.
 */
export function arcOverride(e: DmarcEvaluation, arc: ArcResult | undefined, trustedSealers: readonly string[]): DmarcOverride | undefined {
  if (e.result !== 'fail' || e.disposition === 'none' || !e.domain || !arc) return undefined;
  const sealer = newestSealer(arc);
  if (!sealer || !trusts(trustedSealers, sealer) || !arc.lastAuthResults) return undefined;
  const shown = evidence(arc.lastAuthResults, e.domain, e);
  if (!shown) return undefined;
  return { type: 'trusted_forwarder', comment: `arc=pass i=${arc.instances} as=${sealer} aar=${shown}` };
}
