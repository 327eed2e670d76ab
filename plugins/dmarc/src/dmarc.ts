// DMARC (RFC 7489) evaluation, independent of the kernel: the RFC5322.From domain of a header list,
// the policy record's discovery (`_dmarc.<from domain>`, else `_dmarc.<organizational domain>`, the
// organizational domain from the public suffix list), its parsing (§6.3: unknown tags ignored, bad
// values replaced by their defaults), identifier alignment (relaxed or strict) and the disposition,
// `pct` sampling included. Never throws: every failure is a result.
import type { DnsResolver } from 'themis-milter/dns';
import { getDomain } from 'tldts';

/** The DMARC results (RFC 8601 §2.7.1 `dmarc=`). */
export type DmarcResultName = 'pass' | 'fail' | 'none' | 'temperror' | 'permerror';

/** The five results. */
export const DMARC_RESULTS: readonly DmarcResultName[] = ['pass', 'fail', 'none', 'temperror', 'permerror'];

/** A policy a record asks for, or the disposition applied to a message. */
export type DmarcPolicyName = 'none' | 'quarantine' | 'reject';

/** A policy record after parsing, its defaults applied (RFC 7489 §6.3). */
export interface DmarcRecord {
  /** The record as published (TXT strings joined). */
  raw: string;
  /** Where it was found: the From domain or its organizational domain. */
  domain: string;
  /** `p=`: the policy of the domain (`none` when the record has no valid `p` but a `rua`, §6.6.3 step 6). */
  p: DmarcPolicyName;
  /** `sp=`: the policy of subdomains (default: `p`). */
  sp: DmarcPolicyName;
  /** `adkim=`: `r` relaxed (default) or `s` strict. */
  adkim: 'r' | 's';
  /** `aspf=`: `r` relaxed (default) or `s` strict. */
  aspf: 'r' | 's';
  /** `pct=`: the percentage of failing messages the policy applies to, 0–100 (default 100). */
  pct: number;
}

/** What to evaluate. */
export interface DmarcInput {
  /** The message's header fields in order (name and value as the MTA sent them). */
  headers: readonly { name: string; value: string }[];
  /** The SPF result of the message and the domain it was for (MAIL FROM, or HELO for a bounce); undefined when SPF was not checked. */
  spf?: { result: string; domain?: string };
  /** The DKIM signatures of the message: their `d=` and result. */
  dkim: readonly { domain: string; result: string }[];
}

/** How to evaluate. */
export interface DmarcOptions {
  /** The DNS resolver (`dns.promises.resolve` shape). */
  resolver: DnsResolver;
  /** A draw in [0, 1) for `pct` sampling (default `Math.random`). */
  random?: () => number;
}

/** The outcome. */
export interface DmarcEvaluation {
  /** The result. */
  result: DmarcResultName;
  /** The RFC5322.From domain (lower-cased); empty when there is none. */
  domain: string;
  /** The policy the record asks for this domain (`p`, or `sp` for a subdomain under its organizational domain's record); `none` without a record. */
  policy: DmarcPolicyName;
  /** What applies to this message: `none` for a pass; for a fail the policy, one step lower when `pct` sampling left the message out. */
  disposition: DmarcPolicyName;
  /** Which identifiers aligned with the From domain. */
  alignment: { spf: boolean; dkim: boolean };
  /** The SPF domain that passed and aligned (or, failing that, passed). */
  spfDomain?: string;
  /** The `d=` domains of the passing signatures that align. */
  dkimDomains: string[];
  /** The record applied. */
  record?: DmarcRecord;
  /** The record's `pct`, when it has a record. */
  pct?: number;
  /** Why, for anything but a plain pass or fail (`arc` when a trusted ARC sealer overrode the disposition). */
  reason?: string;
  /** Set by the plugin when a trusted ARC sealer overrode a failing message's disposition to `none` (RFC 7489 `trusted_forwarder`). */
  override?: { type: 'trusted_forwarder' | 'local_policy'; comment: string };
}

const POLICIES = new Set<string>(['none', 'quarantine', 'reject']);
const LOWER: Record<DmarcPolicyName, DmarcPolicyName> = { reject: 'quarantine', quarantine: 'none', none: 'none' };
/** DNS answers that mean "no record" (the name or the type does not exist), as opposed to a failure. */
const NO_RECORD = new Set(['ENOTFOUND', 'ENODATA', 'EBADNAME']);
const VERSION = /^v[ \t]*=[ \t]*DMARC1[ \t]*(;|$)/;
// A reporting URI (RFC 7489 §6.4 dmarc-uri): a scheme and the rest.
const URI = /^[a-z][a-z0-9+.-]*:\S+$/i;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const clean = (s: string, max = 200) => {
  const v = s.replace(CONTROL, ' ').trim();
  return v.length > max ? `${v.slice(0, max)}...` : v;
};

/** A domain name as compared: lower case, no final dot; undefined when it cannot be one. */
export function normalizeDomain(value: string): string | undefined {
  const d = value.trim().toLowerCase().replace(/\.$/, '');
  if (!d || d.length > 253 || /[\s"<>(),;:\\@[\]]/.test(d)) return undefined;
  if (d.split('.').some((l) => l.length === 0 || l.length > 63)) return undefined;
  return d;
}

/**
 * The organizational domain (RFC 7489 §3.2): the public suffix (the ICANN section of the public suffix
 * list, through `tldts`) and one label more; the domain itself when it is a public suffix or no name.
 */
export function organizationalDomain(domain: string): string {
  return getDomain(domain, { allowPrivateDomains: false, extractHostname: false, validateHostname: false }) ?? domain;
}

/** Whether an identifier aligns with the From domain: strict, the same name; relaxed, the same organizational domain (§3.1). */
export function aligned(identifier: string, from: string, mode: 'r' | 's'): boolean {
  const id = normalizeDomain(identifier);
  if (!id) return false;
  if (id === from) return true;
  return mode === 'r' && organizationalDomain(id) === organizationalDomain(from);
}

/** The `<…>` of one mailbox, outside quoted strings (a quoted local-part inside the brackets kept). */
function angleAddrs(mailbox: string): string[] {
  const found: string[] = [];
  let quoted = false;
  let start = -1;
  for (let i = 0; i < mailbox.length; i++) {
    const c = mailbox[i];
    if (quoted) {
      if (c === '\\') i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === '<' && start < 0) start = i + 1;
    else if (c === '<') return [...found, mailbox.slice(start), ''];
    else if (c === '>' && start >= 0) {
      found.push(mailbox.slice(start, i));
      start = -1;
    }
  }
  if (start >= 0) found.push(mailbox.slice(start));
  return found;
}

/** The addresses of one From field's value: comments and display names out, each mailbox's domain (undefined for a mailbox without one). */
export function mailboxDomains(value: string): (string | undefined)[] {
  const text = value.replace(/\r?\n/g, ' ');
  // Split at the commas outside quoted strings, comments and angle brackets.
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  let depth = 0;
  let angle = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '\\') current += c + (text[++i] ?? '');
      else {
        if (c === '"') quoted = false;
        current += c;
      }
      continue;
    }
    if (depth > 0) {
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')') depth--;
      continue;
    }
    if (c === '"') quoted = true;
    else if (c === '(') {
      depth++;
      continue;
    } else if (c === '<') angle = true;
    else if (c === '>') angle = false;
    else if (c === ',' && !angle) {
      parts.push(current);
      current = '';
      continue;
    }
    current += c;
  }
  parts.push(current);
  const domains: (string | undefined)[] = [];
  for (const part of parts) {
    // A group (`Undisclosed:;`, `team: a@x, b@y;`) keeps its mailboxes.
    let p = part.trim();
    if (!p) continue;
    // The angle-addr is the `<…>` outside quoted strings: a display name `"<a@evil.example>"` is not
    // the address. Two of them in one mailbox do not parse: which one a reader sees is unknown.
    const angles = angleAddrs(p);
    if (angles.length > 1) {
      domains.push(undefined);
      continue;
    }
    if (angles.length === 1) p = angles[0];
    else p = p.replace(/^[^"@]*:/, '').replace(/;$/, '').trim();
    if (!p) continue;
    // An obsolete route (`@relay:user@domain`) is not the domain.
    p = p.replace(/^@[^:]*:/, '');
    const at = p.lastIndexOf('@');
    domains.push(at < 0 ? undefined : normalizeDomain(p.slice(at + 1)));
  }
  return domains;
}

/**
 * The RFC5322.From domain (§6.6.1): one From field whose mailboxes share one domain. Several From
 * fields or several domains are a `permerror`; no From field or no domain in it, `none`.
 */
export function authorDomain(headers: readonly { name: string; value: string }[]): { domain: string } | { result: 'none' | 'permerror'; reason: string; domain: string } {
  const from = headers.filter((h) => h.name.toLowerCase() === 'from');
  if (from.length === 0) return { result: 'none', reason: 'no From header', domain: '' };
  if (from.length > 1) return { result: 'permerror', reason: `${from.length} From headers`, domain: '' };
  const all = mailboxDomains(from[0].value);
  const domains = [...new Set(all.filter((d): d is string => d !== undefined))];
  if (domains.length === 0) return { result: 'none', reason: 'no domain in From', domain: '' };
  if (domains.length > 1) return { result: 'permerror', reason: `several From domains (${domains.slice(0, 5).join(', ')})`, domain: domains[0] };
  if (all.some((d) => d === undefined)) return { result: 'permerror', reason: 'a From mailbox without a domain, or that does not parse', domain: domains[0] };
  return { domain: domains[0] };
}

/**
 * Parses one DMARC record (§6.3, §6.4): tag names case-insensitive, unknown tags ignored, a bad
 * `adkim`, `aspf` or `pct` replaced by its default; undefined when it gets no DMARC processing
 * (no valid `p`, or an invalid `sp`, and no `rua` to report to — §6.6.3 step 6).
 */
export function parseRecord(raw: string, domain: string): DmarcRecord | undefined {
  const tags = new Map<string, string>();
  for (const part of raw.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim().toLowerCase();
    if (name && !tags.has(name)) tags.set(name, part.slice(eq + 1).trim());
  }
  const p = tags.get('p')?.toLowerCase();
  const sp = tags.get('sp')?.toLowerCase();
  const valid = p !== undefined && POLICIES.has(p) && (sp === undefined || POLICIES.has(sp));
  let policy: DmarcPolicyName;
  let sub: DmarcPolicyName;
  if (valid) {
    policy = p as DmarcPolicyName;
    sub = (sp ?? p) as DmarcPolicyName;
  } else {
    const rua = (tags.get('rua') ?? '').split(',').some((u) => URI.test(u.trim()));
    if (!rua) return undefined;
    policy = 'none';
    sub = 'none';
  }
  const mode = (v: string | undefined) => (v?.toLowerCase() === 's' ? 's' : 'r');
  const pctText = tags.get('pct');
  const pct = pctText !== undefined && /^\d{1,3}$/.test(pctText) && Number(pctText) <= 100 ? Number(pctText) : 100;
  return { raw: clean(raw, 500), domain, p: policy, sp: sub, adkim: mode(tags.get('adkim')), aspf: mode(tags.get('aspf')), pct };
}

type Lookup = { records: string[] } | { error: string };

async function lookup(resolver: DnsResolver, domain: string): Promise<Lookup> {
  const name = `_dmarc.${domain}`;
  if (name.length > 253) return { records: [] };
  try {
    const answer = await resolver(name, 'TXT');
    const rows = Array.isArray(answer) ? answer : [];
    const records = rows.map((r) => (Array.isArray(r) ? r.join('') : String(r)).trim()).filter((r) => VERSION.test(r));
    return { records };
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    if (typeof code === 'string' && NO_RECORD.has(code)) return { records: [] };
    return { error: `${name}: ${typeof code === 'string' ? code : clean(String((err as Error)?.message ?? err))}` };
  }
}

/**
 * Policy discovery (§6.6.3): the From domain's record, else its organizational domain's. Records not
 * starting with `v=DMARC1` are discarded; none left, or several, means no policy.
 */
export async function discoverRecord(resolver: DnsResolver, domain: string): Promise<{ record?: DmarcRecord; error?: string; reason?: string }> {
  let found = await lookup(resolver, domain);
  let at = domain;
  if ('error' in found) return { error: found.error };
  if (found.records.length === 0) {
    const org = organizationalDomain(domain);
    if (org === domain) return { reason: 'no DMARC record' };
    found = await lookup(resolver, org);
    at = org;
    if ('error' in found) return { error: found.error };
    if (found.records.length === 0) return { reason: 'no DMARC record' };
  }
  if (found.records.length > 1) return { reason: `${found.records.length} DMARC records at _dmarc.${at}` };
  const record = parseRecord(found.records[0], at);
  if (!record) return { reason: `DMARC record at _dmarc.${at} has no valid policy` };
  return { record };
}

/** Evaluates DMARC for one message. Never throws. */
export async function evaluateDmarc(input: DmarcInput, options: DmarcOptions): Promise<DmarcEvaluation> {
  const base = { alignment: { spf: false, dkim: false }, dkimDomains: [] as string[] };
  const author = authorDomain(input.headers);
  if ('result' in author) return { ...base, result: author.result, domain: author.domain, policy: 'none', disposition: 'none', reason: author.reason };
  const domain = author.domain;
  let discovery: Awaited<ReturnType<typeof discoverRecord>>;
  try {
    discovery = await discoverRecord(options.resolver, domain);
  } catch (err) {
    discovery = { error: clean(String((err as Error)?.message ?? err)) };
  }
  if (discovery.error) return { ...base, result: 'temperror', domain, policy: 'none', disposition: 'none', reason: `DNS: ${discovery.error}` };
  const record = discovery.record;
  if (!record) return { ...base, result: 'none', domain, policy: 'none', disposition: 'none', reason: discovery.reason };

  const policy = record.domain === domain ? record.p : record.sp;
  const spfPass = input.spf?.result === 'pass' && input.spf.domain ? normalizeDomain(input.spf.domain) : undefined;
  const spfAligned = spfPass !== undefined && aligned(spfPass, domain, record.aspf);
  const dkimDomains = [...new Set(input.dkim.filter((s) => s.result === 'pass' && aligned(s.domain, domain, record.adkim)).map((s) => s.domain.toLowerCase()))];
  const alignment = { spf: spfAligned, dkim: dkimDomains.length > 0 };
  const common = { domain, policy, alignment, ...(spfPass ? { spfDomain: spfPass } : {}), dkimDomains, record, pct: record.pct };
  if (alignment.spf || alignment.dkim) return { ...common, result: 'pass', disposition: 'none' };

  // Nothing aligned, but an identifier that would have aligned could not be checked (a DNS failure of
  // SPF or of a DKIM key): the result is not known, it is not a failure.
  const spfTemp = input.spf?.result === 'temperror' && input.spf.domain !== undefined && aligned(input.spf.domain, domain, record.aspf);
  const dkimTemp = input.dkim.some((s) => s.result === 'temperror' && aligned(s.domain, domain, record.adkim));
  if (spfTemp || dkimTemp) return { ...common, result: 'temperror', disposition: 'none', reason: `${spfTemp ? 'SPF' : 'DKIM'} temperror for an aligned domain` };

  // pct (§6.3): the policy applies to that share of the failing messages; the others get the next lower one.
  let disposition = policy;
  let reason: string | undefined;
  if (record.pct < 100) {
    const draw = (options.random ?? Math.random)();
    if (!(draw * 100 < record.pct)) {
      disposition = LOWER[policy];
      reason = `not sampled (pct=${record.pct})`;
    }
  }
  return { ...common, result: 'fail', disposition, ...(reason ? { reason } : {}) };
}
