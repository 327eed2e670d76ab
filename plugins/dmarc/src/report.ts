/**
 * DMARC aggregate report data (RFC 7489 §7.2, Appendix C): for each evaluated message whose From
 * domain publishes a policy record, one count in the shared store — per UTC day, per header-from
 * domain, per row (source IP, disposition, aligned DKIM and SPF results, the sampling reason and the
 * auth_results detail: the DKIM domains, selectors and results, the SPF domain, scope and result) —
 * with the policy published. One hash per day and domain, written by one atomic operation
 * (`DMARC.REPORTROW`, Lua on Redis and its in-memory twin), so every daemon of a pool adds to the same
 * report. Bounded: at most `maxRowsPerDay` rows per hash (the rest is counted per disposition and
 * aligned results in an overflow field), every key expires `retentionDays` + 1 day after its last write.
 * @module
 */
import { isIP } from 'node:net';
import { defineAtomicOperation, invalidAtomicArgument, replyText, type Store } from 'themis-milter';
import type { SpfNote } from 'themis-plugin-spf';
import type { DkimNote } from 'themis-plugin-dkim';
import type { DmarcEvaluation, DmarcPolicyName } from './dmarc.ts';

/** The `reports` plugin option, validated. */
export interface ReportOptions {
  /** Record aggregate report data (default false). */
  enabled: boolean;
  /** Days of data kept; every key expires this many days and one more after its last write (default 31). */
  retentionDays: number;
  /** Most rows per header-from domain and day (default 10,000); beyond, messages are counted in the overflow. */
  maxRowsPerDay: number;
}

/** One day in ms. */
export const DAY_MS = 86_400_000;
/** Most DKIM signatures of one message kept in its row. */
const MAX_SIGNATURES = 8;
/** Store key prefix of the report data (the store adds its own `keyPrefix`). */
export const REPORT_PREFIX = 'dmarc:rpt:';

/** Store key of one day (`YYYY-MM-DD`, UTC) and header-from domain. */
export const reportKey = (day: string, domain: string) => `${REPORT_PREFIX}${day}:${domain}`;

/** The UTC day (`YYYY-MM-DD`) of a time in ms. */
export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** The policy published, as the report's `policy_published` gives it. */
export interface PublishedPolicy {
  /** Where the record was found (the From domain or its organizational domain). */
  domain: string;
  adkim: 'r' | 's';
  aspf: 'r' | 's';
  p: DmarcPolicyName;
  sp: DmarcPolicyName;
  pct: number;
  /** The record's `rua=` (where the domain wants aggregate reports), when it has one. */
  rua?: string;
}

/** RFC 7489 Appendix C DKIMResultType. */
export type ReportDkimResult = 'none' | 'pass' | 'fail' | 'policy' | 'neutral' | 'temperror' | 'permerror';
/** RFC 7489 Appendix C SPFResultType. */
export type ReportSpfResult = 'none' | 'neutral' | 'pass' | 'fail' | 'softfail' | 'temperror' | 'permerror';

/** RFC 7489 Appendix C PolicyOverrideType. */
export type ReportReasonType = 'forwarded' | 'sampled_out' | 'trusted_forwarder' | 'mailing_list' | 'local_policy' | 'other';
const REASONS = new Set<string>(['forwarded', 'sampled_out', 'trusted_forwarder', 'mailing_list', 'local_policy', 'other']);

/** One row of a report: what is counted together. */
export interface ReportRow {
  sourceIp: string;
  disposition: DmarcPolicyName;
  /** The DMARC-aligned DKIM result. */
  dkim: 'pass' | 'fail';
  /** The DMARC-aligned SPF result. */
  spf: 'pass' | 'fail';
  /**
   * Why the disposition is not the policy (PolicyOverrideReason): `sampled_out` when `pct` left the message
   * out, the override's type (`trusted_forwarder`, `local_policy`) and comment when one applied (ARC).
   */
  reason?: { type: ReportReasonType; comment?: string };
  /** auth_results: each DKIM signature's domain, selector and result. */
  dkimResults: { domain: string; selector: string; result: ReportDkimResult }[];
  /** auth_results: the SPF domain, scope and result (absent when SPF gave no domain). */
  spfResult?: { domain: string; scope: 'mfrom' | 'helo'; result: ReportSpfResult };
}

/** Messages counted beyond the row cap: per disposition and aligned results, without source IP. */
export interface OverflowRow {
  disposition: DmarcPolicyName;
  dkim: 'pass' | 'fail';
  spf: 'pass' | 'fail';
  count: number;
}

const DKIM_RESULTS = new Set<string>(['none', 'pass', 'fail', 'policy', 'neutral', 'temperror', 'permerror']);
const SPF_RESULTS = new Set<string>(['none', 'neutral', 'pass', 'fail', 'softfail', 'temperror', 'permerror']);
const POLICIES = new Set<string>(['none', 'quarantine', 'reject']);
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const text = (v: unknown, max: number) => String(v ?? '').replace(CONTROL, '').slice(0, max);

/** The row field of a hash: `r:` and the row as a JSON array. */
export function rowField(row: ReportRow): string {
  const spf = row.spfResult ? [row.spfResult.domain, row.spfResult.scope, row.spfResult.result] : null;
  return `r:${JSON.stringify([row.sourceIp, row.disposition, row.dkim, row.spf, row.reason ? (row.reason.comment ? `${row.reason.type}:${row.reason.comment}` : row.reason.type) : '', row.dkimResults.map((d) => [d.domain, d.selector, d.result]), spf])}`;
}

/** The overflow field of a row: `o:` and its disposition and aligned results. */
export const overflowField = (row: Pick<ReportRow, 'disposition' | 'dkim' | 'spf'>) => `o:${row.disposition},${row.dkim},${row.spf}`;

/** A row back from its field; undefined when it is not one (corrupt or foreign data is skipped). */
export function parseRowField(field: string): ReportRow | undefined {
  if (!field.startsWith('r:')) return undefined;
  try {
    const a = JSON.parse(field.slice(2)) as unknown[];
    if (!Array.isArray(a) || a.length !== 7) return undefined;
    const [ip, disposition, dkim, spf, reason, sigs, spfR] = a as [string, string, string, string, string, unknown[], unknown[] | null];
    if (typeof ip !== 'string' || isIP(ip) === 0 || !POLICIES.has(disposition) || (dkim !== 'pass' && dkim !== 'fail') || (spf !== 'pass' && spf !== 'fail') || !Array.isArray(sigs)) return undefined;
    const row: ReportRow = { sourceIp: ip, disposition: disposition as DmarcPolicyName, dkim, spf, dkimResults: [] };
    if (typeof reason === 'string' && reason) {
      const colon = reason.indexOf(':');
      const type = colon < 0 ? reason : reason.slice(0, colon);
      if (REASONS.has(type)) row.reason = colon < 0 ? { type: type as ReportReasonType } : { type: type as ReportReasonType, comment: reason.slice(colon + 1) };
    }
    for (const s of sigs) {
      if (!Array.isArray(s) || typeof s[0] !== 'string' || !s[0] || typeof s[1] !== 'string' || !DKIM_RESULTS.has(s[2])) continue;
      row.dkimResults.push({ domain: s[0], selector: s[1], result: s[2] as ReportDkimResult });
    }
    if (Array.isArray(spfR) && typeof spfR[0] === 'string' && spfR[0] && (spfR[1] === 'mfrom' || spfR[1] === 'helo') && SPF_RESULTS.has(spfR[2] as string)) row.spfResult = { domain: spfR[0], scope: spfR[1], result: spfR[2] as ReportSpfResult };
    return row;
  } catch {
    return undefined;
  }
}

/** The `rua=` of a raw record, if any. */
export function ruaOf(raw: string): string | undefined {
  const m = /(?:^|;)[ \t]*rua[ \t]*=[ \t]*([^;]*)/i.exec(raw);
  const v = m?.[1]?.trim();
  return v ? text(v, 500) : undefined;
}

/** Arguments of one {@link REPORT_ROW} call. */
export interface ReportRowArgs {
  /** The row's field ({@link rowField}). */
  field: string;
  /** Its overflow field ({@link overflowField}), used when the hash holds `cap` rows already. */
  overflow: string;
  /** Most rows in the hash. */
  cap: number;
  /** Expiry of the key, ms (set on every write). */
  ttlMs: number;
  /** The policy published, JSON (the latest seen is kept). */
  policy: string;
}

/**
 * Counts one message in a day-and-domain hash: its row (a new row only while fewer than `cap` rows are
 * there; otherwise its overflow field, and `dropped`), the policy published, the expiry. Returns 1 when
 * the message went to the overflow, else 0. Fields: `r:<row>` counts, `o:<d,dkim,spf>` overflow
 * counts, `rows` the number of `r:` fields, `dropped` the messages in the overflow, `p` the policy.
 */
export const REPORT_ROW = defineAtomicOperation({
  name: 'DMARC.REPORTROW',
  type: 'hash',
  lua: `local f = ARGV[1]
local dropped = 0
if redis.call('HEXISTS', KEYS[1], f) == 0 then
  local rows = tonumber(redis.call('HGET', KEYS[1], 'rows') or '0') or 0
  if rows >= tonumber(ARGV[3]) then
    f = ARGV[2]
    dropped = 1
    redis.call('HINCRBY', KEYS[1], 'dropped', 1)
  else
    redis.call('HINCRBY', KEYS[1], 'rows', 1)
  end
end
redis.call('HINCRBY', KEYS[1], f, 1)
redis.call('HSET', KEYS[1], 'p', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return dropped`,
  validate(a: ReportRowArgs) {
    if (!Number.isSafeInteger(a.cap) || a.cap < 1) throw invalidAtomicArgument('DMARC.REPORTROW', 'cap must be an integer ≥ 1');
    if (!Number.isSafeInteger(a.ttlMs) || a.ttlMs <= 0) throw invalidAtomicArgument('DMARC.REPORTROW', 'ttlMs must be an integer > 0');
    if (!a.field.startsWith('r:') || !a.overflow.startsWith('o:')) throw invalidAtomicArgument('DMARC.REPORTROW', 'field must start with r: and overflow with o:');
  },
  encode: (a) => [a.field, a.overflow, a.cap, a.ttlMs, a.policy],
  decode: (reply) => Number(reply),
  memory(key, a) {
    let f = a.field;
    let dropped = 0;
    const add = (name: string, n: number) => key.fields.set(name, String((Number(key.fields.get(name) ?? 0) || 0) + n));
    if (!key.fields.has(f)) {
      const rows = Number(key.fields.get('rows') ?? '0') || 0;
      if (rows >= a.cap) {
        f = a.overflow;
        dropped = 1;
        add('dropped', 1);
      } else add('rows', 1);
    }
    add(f, 1);
    key.fields.set('p', a.policy);
    key.pexpire(a.ttlMs);
    return dropped;
  },
});

/** What {@link REPORT_READ} gives: the hash's fields and the key's remaining time to live, ms (-2: no key). */
export interface ReportHash {
  fields: Record<string, string>;
  ttlMs: number;
}

/** Reads one day-and-domain hash with its expiry. */
export const REPORT_READ = defineAtomicOperation({
  name: 'DMARC.REPORTREAD',
  type: 'hash',
  lua: `return {redis.call('PTTL', KEYS[1]), redis.call('HGETALL', KEYS[1])}`,
  encode: () => [],
  decode(reply): ReportHash {
    if (!Array.isArray(reply) || reply.length !== 2 || !Array.isArray(reply[1])) throw new Error('expected {pttl, hgetall}');
    const flat = reply[1] as unknown[];
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) fields[replyText(flat[i])] = replyText(flat[i + 1]);
    return { fields, ttlMs: Number(reply[0]) };
  },
  memory(key, _args: Record<string, never>): ReportHash {
    return { fields: Object.fromEntries(key.fields), ttlMs: key.pttl() };
  },
});

const dkimResult = (r: string): ReportDkimResult => (DKIM_RESULTS.has(r) ? (r as ReportDkimResult) : 'none');
const spfResultOf = (r: string): ReportSpfResult => (SPF_RESULTS.has(r) ? (r as ReportSpfResult) : 'none');

/**
 * The row of one evaluated message, with its policy; undefined when the message has no report to go
 * in (no From domain, no policy record, no client address).
 */
export async function reportRowOf(e: DmarcEvaluation, clientIp: string | undefined, spf: SpfNote | undefined, dkim: DkimNote | undefined): Promise<{ row: ReportRow; policy: PublishedPolicy } | undefined> {
  if (!e.domain || !e.record || !clientIp || isIP(clientIp) === 0) return undefined;
  let spfResult: ReportRow['spfResult'];
  try {
    const r = spf?.mailFrom ? await spf.mailFrom : spf?.result ? { result: spf.result, domain: spf.domain, identity: spf.identity } : undefined;
    if (r?.domain) spfResult = { domain: text(r.domain, 253).toLowerCase(), scope: r.identity === 'helo' ? 'helo' : 'mfrom', result: spfResultOf(r.result) };
  } catch {
    if (spf?.domain) spfResult = { domain: text(spf.domain, 253).toLowerCase(), scope: 'mfrom', result: 'temperror' };
  }
  // An override (ARC's trusted sealer, set on the evaluation by the plugin) says why; else a failing
  // message whose disposition is below its policy was left out by pct.
  const override = (e as { override?: { type?: unknown; comment?: unknown } }).override;
  const reason: ReportRow['reason'] =
    override && typeof override.type === 'string' && REASONS.has(override.type)
      ? { type: override.type as ReportReasonType, ...(override.comment ? { comment: text(override.comment, 100) } : {}) }
      : e.result === 'fail' && e.disposition !== e.policy
        ? { type: 'sampled_out' }
        : undefined;
  const dkimResults = (dkim?.results ?? [])
    .filter((s) => s.domain)
    .slice(0, MAX_SIGNATURES)
    .map((s) => ({ domain: text(s.domain, 253).toLowerCase(), selector: text(s.selector, 63), result: dkimResult(s.result) }));
  const row: ReportRow = {
    sourceIp: clientIp.toLowerCase(),
    disposition: e.disposition,
    dkim: e.alignment.dkim ? 'pass' : 'fail',
    spf: e.alignment.spf ? 'pass' : 'fail',
    ...(reason ? { reason } : {}),
    dkimResults,
    ...(spfResult ? { spfResult } : {}),
  };
  const rua = ruaOf(e.record.raw);
  const policy: PublishedPolicy = { domain: e.record.domain, adkim: e.record.adkim, aspf: e.record.aspf, p: e.record.p, sp: e.record.sp, pct: e.record.pct, ...(rua ? { rua } : {}) };
  return { row, policy };
}

/**
 * Counts rows in the store: one atomic call each, in one round trip. Returns how many went to the
 * overflow (beyond `maxRowsPerDay`).
 */
export async function recordRows(store: Store, options: Pick<ReportOptions, 'retentionDays' | 'maxRowsPerDay'>, entries: readonly { domain: string; row: ReportRow; policy: PublishedPolicy; now?: number }[]): Promise<number> {
  const ttlMs = (options.retentionDays + 1) * DAY_MS;
  const calls = entries.map((x) => ({ key: reportKey(utcDay(x.now ?? Date.now()), x.domain), args: { field: rowField(x.row), overflow: overflowField(x.row), cap: options.maxRowsPerDay, ttlMs, policy: JSON.stringify(x.policy) } }));
  const dropped = await store.atomic(REPORT_ROW, calls);
  return dropped.reduce((a, b) => a + b, 0);
}

/** Records in flight (for {@link settleReports}). */
const inFlight = new Set<Promise<void>>();
/** When each store's last failure was logged: at most one warning a minute. */
const lastWarning = new WeakMap<Store, number>();

/**
 * Counts one evaluated message in the report data, in the background: never throws, never waits on the
 * store for the caller; a failure is logged (at most once a minute per store) and the message is not counted.
 */
export function recordReport(store: Store, options: Pick<ReportOptions, 'retentionDays' | 'maxRowsPerDay'>, e: DmarcEvaluation, clientIp: string | undefined, spf: SpfNote | undefined, dkim: DkimNote | undefined, log: { warn(obj: object, msg: string): void }): Promise<void> {
  const p = reportRowOf(e, clientIp, spf, dkim)
    .then((r) => (r ? recordRows(store, options, [{ domain: e.domain, ...r }]) : 0))
    .then(
      () => undefined,
      (err: unknown) => {
        const now = Date.now();
        if (now - (lastWarning.get(store) ?? 0) < 60_000) return;
        lastWarning.set(store, now);
        log.warn({ err: (err as Error)?.message ?? String(err) }, 'DMARC report data not recorded (store failure); further failures within a minute are not logged');
      },
    )
    .finally(() => inFlight.delete(p));
  inFlight.add(p);
  return p;
}

/** Resolves once every record started so far is written (tests). */
export async function settleReports(): Promise<void> {
  while (inFlight.size > 0) await Promise.all([...inFlight]);
}

/** The data of one header-from domain over a range of days, rows merged. */
export interface DomainReport {
  domain: string;
  policy: PublishedPolicy;
  rows: { row: ReportRow; count: number }[];
  overflow: OverflowRow[];
  /** Messages counted in the overflow (beyond the row cap). */
  dropped: number;
  /** Days that had data. */
  days: string[];
}

/** Every day (`YYYY-MM-DD`) from `from` to `to`, inclusive. */
export function daysBetween(from: string, to: string): string[] {
  const out: string[] = [];
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`); t += DAY_MS) out.push(utcDay(t));
  return out;
}

/**
 * Reads the report data of the days given, per header-from domain (all of them, or `domain` only).
 * @throws whatever the store throws.
 */
export async function readReports(store: Store, days: readonly string[], domain?: string): Promise<DomainReport[]> {
  const byDomain = new Map<string, DomainReport & { rowMap: Map<string, { row: ReportRow; count: number }>; overflowMap: Map<string, OverflowRow> }>();
  for (const day of days) {
    const keys: string[] = [];
    if (domain !== undefined) keys.push(reportKey(day, domain));
    else for await (const k of store.scanKeys(`${REPORT_PREFIX}${day}:`)) keys.push(k);
    if (keys.length === 0) continue;
    const hashes = await store.atomic(REPORT_READ, keys.map((key) => ({ key, args: {} })));
    hashes.forEach((h, i) => {
      const d = keys[i].slice(`${REPORT_PREFIX}${day}:`.length);
      let policy: PublishedPolicy | undefined;
      try {
        policy = h.fields.p ? (JSON.parse(h.fields.p) as PublishedPolicy) : undefined;
      } catch {
        policy = undefined;
      }
      if (!policy) return;
      let r = byDomain.get(d);
      if (!r) byDomain.set(d, (r = { domain: d, policy, rows: [], overflow: [], dropped: 0, days: [], rowMap: new Map(), overflowMap: new Map() }));
      r.policy = policy; // days come in order: the latest policy seen wins
      r.days.push(day);
      r.dropped += Number(h.fields.dropped ?? 0) || 0;
      for (const [field, value] of Object.entries(h.fields)) {
        const count = Number(value) || 0;
        if (count <= 0) continue;
        if (field.startsWith('r:')) {
          const row = parseRowField(field);
          if (!row) continue;
          const seen = r.rowMap.get(field);
          if (seen) seen.count += count;
          else r.rowMap.set(field, { row, count });
        } else if (field.startsWith('o:')) {
          const [disposition, dkim, spf] = field.slice(2).split(',');
          if (!POLICIES.has(disposition) || (dkim !== 'pass' && dkim !== 'fail') || (spf !== 'pass' && spf !== 'fail')) continue;
          const seen = r.overflowMap.get(field);
          if (seen) seen.count += count;
          else r.overflowMap.set(field, { disposition: disposition as DmarcPolicyName, dkim, spf, count });
        }
      }
    });
  }
  return [...byDomain.values()]
    .map(({ rowMap, overflowMap, ...r }) => ({ ...r, rows: [...rowMap.values()].sort((a, b) => b.count - a.count || a.row.sourceIp.localeCompare(b.row.sourceIp)), overflow: [...overflowMap.values()] }))
    .sort((a, b) => a.domain.localeCompare(b.domain));
}

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
/** Text or attribute content, XML-escaped (characters XML 1.0 forbids dropped). */
export const xmlEscape = (v: string | number) =>
  // eslint-disable-next-line no-control-regex
  String(v).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '').replace(/[&<>"']/g, (c) => XML_ESCAPES[c]);

/**
 * An address as the schema's IPAddress pattern takes it: IPv4 as is, IPv6 as its eight groups (the
 * RFC 7489 pattern has no `::`).
 */
export function fullIp(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  let [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(tail ?? head);
  if (v4) {
    const groups = `${((+v4[1] << 8) | +v4[2]).toString(16)}:${((+v4[3] << 8) | +v4[4]).toString(16)}`;
    if (tail !== undefined) tail = tail.replace(v4[0], groups);
    else head = head.replace(v4[0], groups);
  }
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.map((g) => g.toLowerCase()).join(':');
}

/** What the report's `report_metadata` says. */
export interface ReportMetadata {
  orgName: string;
  email: string;
  reportId: string;
  /** Unix times, s. */
  begin: number;
  end: number;
}

/** One RFC 7489 Appendix C `<feedback>` document. */
export function reportXml(r: DomainReport, meta: ReportMetadata): string {
  const x = xmlEscape;
  const el = (name: string, value: string | number, indent: string) => `${indent}<${name}>${x(value)}</${name}>`;
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<feedback xmlns="http://dmarc.org/dmarc-xml/0.1">',
    '  <version>1.0</version>',
    '  <report_metadata>',
    el('org_name', meta.orgName, '    '),
    el('email', meta.email, '    '),
    el('report_id', meta.reportId, '    '),
    '    <date_range>',
    el('begin', meta.begin, '      '),
    el('end', meta.end, '      '),
    '    </date_range>',
    '  </report_metadata>',
    '  <policy_published>',
    el('domain', r.policy.domain, '    '),
    el('adkim', r.policy.adkim, '    '),
    el('aspf', r.policy.aspf, '    '),
    el('p', r.policy.p, '    '),
    el('sp', r.policy.sp, '    '),
    el('pct', r.policy.pct, '    '),
    '  </policy_published>',
  ];
  for (const { row, count } of r.rows) {
    lines.push(
      '  <record>',
      '    <row>',
      el('source_ip', fullIp(row.sourceIp), '      '),
      el('count', count, '      '),
      '      <policy_evaluated>',
      el('disposition', row.disposition, '        '),
      el('dkim', row.dkim, '        '),
      el('spf', row.spf, '        '),
      ...(row.reason ? ['        <reason>', el('type', row.reason.type, '          '), ...(row.reason.comment ? [el('comment', row.reason.comment, '          ')] : []), '        </reason>'] : []),
      '      </policy_evaluated>',
      '    </row>',
      '    <identifiers>',
      // The MAIL FROM domain: SPF's domain when it checked MAIL FROM (empty for a bounce).
      el('envelope_from', row.spfResult?.scope === 'mfrom' ? row.spfResult.domain : '', '      '),
      el('header_from', r.domain, '      '),
      '    </identifiers>',
      '    <auth_results>',
    );
    for (const d of row.dkimResults) lines.push('      <dkim>', el('domain', d.domain, '        '), ...(d.selector ? [el('selector', d.selector, '        ')] : []), el('result', d.result, '        '), '      </dkim>');
    // The schema wants one spf element: without an SPF domain, the header-from domain with result none.
    const s = row.spfResult ?? { domain: r.domain, scope: 'mfrom' as const, result: 'none' as const };
    lines.push('      <spf>', el('domain', s.domain, '        '), el('scope', s.scope, '        '), el('result', s.result, '        '), '      </spf>', '    </auth_results>', '  </record>');
  }
  lines.push('</feedback>', '');
  return lines.join('\n');
}
