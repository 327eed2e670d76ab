// SPF evaluation (RFC 7208) on top of mailauth's strict mode, with the two header values this
// project writes: Received-SPF (RFC 7208 §9.1) and the `spf=` resinfo of Authentication-Results
// (RFC 8601 §2.7.2). mailauth's own header strings are not used: they fold lines, embed the
// "Received-SPF:" name and put comments into Authentication-Results, and we want one exact,
// injection-safe format that we control and test.
import { resolve as dnsResolve } from 'node:dns/promises';
import { findMechanism, type Resolve } from './mechanism.ts';
import { spf } from 'mailauth';
import type { DnsResolver } from 'themis-milter/dns';

/** An SPF result as named by RFC 7208 §2.6. */
export type SpfResultName = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror';

/**
 * A DNS resolver with the shape of `dns.promises.resolve(name, rrtype)`: the same answers
 * (TXT → string[][], A/AAAA → string[], MX → {exchange, priority}[], PTR → string[]) and the
 * same error codes (ENOTFOUND, ENODATA, ETIMEOUT, ESERVFAIL, EREFUSED …).
 */
export type SpfResolver = DnsResolver;

/** The SMTP facts an SPF check needs. */
export interface SpfCheckInput {
  /** The client's IP address (IPv4, IPv6 or IPv4-mapped IPv6). */
  ip: string;
  /** The MAIL FROM address without angle brackets; '' is the null sender. */
  sender: string;
  /** The HELO/EHLO name the client gave. */
  helo: string;
}

/** How to run an SPF check. */
export interface SpfCheckOptions {
  /** DNS resolver; defaults to mailauth's default (`dns.promises.resolve`). */
  resolver?: SpfResolver;
  /** Overall deadline for the evaluation in milliseconds (default 5000); exceeding it is temperror. */
  timeoutMs?: number;
  /** Our host name, used in the header comments and `receiver=` (default 'localhost'). */
  receiver?: string;
  /**
   * Which identity to check. Default 'mailfrom', which for the null sender means
   * postmaster@<helo> and is reported as the HELO identity (RFC 7208 §2.4).
   */
  identity?: 'mailfrom' | 'helo';
}

/** The outcome of an SPF check, with ready-to-use header values. */
export interface SpfCheckResult {
  /** The SPF result. */
  result: SpfResultName;
  /** The identity that was checked. */
  identity: 'mailfrom' | 'helo';
  /** The domain whose policy was evaluated. */
  domain: string;
  /**
   * The term of the domain's record that decided (`ip4:192.0.2.0/24`, `-all`, `include:_spf.example.org`,
   * `redirect=…`), for pass, fail, softfail and neutral. Unset when it cannot be told for sure (a
   * `ptr`, `exists` or macro term came first), and for none, permerror and temperror.
   */
  mechanism?: string;
  /** The Received-SPF field value ({@link SpfCheckResult.receivedSpf}), under the name other tools use. */
  header: string;
  /** The domain owner's explanation (exp= modifier, RFC 7208 §6.2); only for fail. Third-party text. */
  explanation?: string;
  /** For permerror/temperror: what went wrong, sanitised to one line. */
  problem?: string;
  /**
   * Received-SPF field VALUE per RFC 7208 §9.1, e.g. `fail (mx.local: domain of a@example.org does
   * not designate 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="a@example.org";
   * helo=mx.example.org; receiver=mx.local; identity=mailfrom`
   */
  receivedSpf: string;
  /**
   * The `spf=` resinfo for Authentication-Results (RFC 8601 §2.7.2), e.g.
   * `spf=fail smtp.mailfrom=example.org` or `spf=pass smtp.helo=mx.example.org`.
   */
  authResult: string;
}

const RESULTS: ReadonlySet<string> = new Set(['pass', 'fail', 'softfail', 'neutral', 'none', 'permerror', 'temperror']);

// Header values come from the SMTP client (HELO, MAIL FROM) or from DNS (problem texts); a CR or
// LF would let them start a new header, other controls are invalid in header text (RFC 5322 §3.2).
// C1 controls and the Unicode line/paragraph separators are dropped too: some consumers treat
// them as line breaks.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

// No header value of ours needs to be longer; a bound keeps a hostile HELO from producing a line
// past RFC 5322's 998-octet limit (we do not fold).
const MAX_VALUE_LENGTH = 255;

function clean(value: string): string {
  const s = value.replace(CONTROL, '').trim();
  return s.length > MAX_VALUE_LENGTH ? `${s.slice(0, MAX_VALUE_LENGTH)}...` : s;
}

// RFC 5322 §3.2.3 dot-atom-text.
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*$/;

/** A dot-atom stays as is; anything else becomes a quoted-string with `"` and `\` escaped. */
function dotAtomOrQuoted(value: string): string {
  const s = clean(value);
  return DOT_ATOM.test(s) ? s : `"${s.replace(/["\\]/g, '\\$&')}"`;
}

/** Text inside a comment: parentheses and backslashes are quoted-pairs (RFC 5322 §3.2.2). */
function commentText(value: string): string {
  return clean(value).replace(/[()\\]/g, '\\$&');
}

// RFC 8601 §2.2 pvalue: a domain-name (or local-part@domain with a dot-atom local-part) may stand
// as is; everything else must be a quoted-string. The token/domain characters are a strict subset.
const PVALUE_PLAIN = /^(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*@)?[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?$/;

function pvalue(value: string): string {
  const s = clean(value);
  return PVALUE_PLAIN.test(s) ? s : `"${s.replace(/["\\]/g, '\\$&')}"`;
}

function comment(result: SpfResultName, receiver: string, who: string, ip: string, domain: string): string {
  switch (result) {
    case 'pass':
      return `${receiver}: domain of ${who} designates ${ip} as permitted sender`;
    case 'fail':
      return `${receiver}: domain of ${who} does not designate ${ip} as permitted sender`;
    case 'softfail':
      return `${receiver}: domain of transitioning ${who} does not designate ${ip} as permitted sender`;
    case 'neutral':
      return `${receiver}: ${ip} is neither permitted nor denied by domain of ${who}`;
    case 'none':
      return `${receiver}: ${domain} does not designate permitted sender hosts`;
    case 'permerror':
      return `${receiver}: permanent error in processing during lookup of ${who}`;
    case 'temperror':
      return `${receiver}: error in processing during lookup of ${who}`;
  }
}

/**
 * Checks SPF for one SMTP transaction. Never throws: anything unexpected (including DNS errors
 * and the deadline) is temperror, never fail, so a DNS outage cannot reject legitimate mail.
 */
export async function checkSpf(input: SpfCheckInput, options: SpfCheckOptions = {}): Promise<SpfCheckResult> {
  const receiver = clean(options.receiver ?? 'localhost') || 'localhost';
  const timeoutMs = options.timeoutMs ?? 5000;
  // An explicit HELO check is the null-sender path of mailauth: it then evaluates postmaster@<helo>
  // and reports the helo identity only (RFC 7208 §2.3).
  const identity: 'mailfrom' | 'helo' = options.identity === 'helo' || input.sender === '' ? 'helo' : 'mailfrom';
  const sender = identity === 'helo' ? '' : input.sender;

  let result: SpfResultName = 'temperror';
  let domain = '';
  let explanation: string | undefined;
  let problem: string | undefined;
  let checkedSender = sender || `postmaster@${input.helo}`;
  let smtpValue = identity === 'helo' ? input.helo : '';
  let record: string | undefined;

  try {
    const r = await spf({
      ip: input.ip,
      sender,
      helo: input.helo,
      mta: receiver,
      strict: true,
      // A non-positive value would disable mailauth's deadline; keep at least 1 ms.
      maxElapsedTime: Math.max(1, timeoutMs),
      ...(options.resolver ? { resolver: options.resolver as Parameters<typeof spf>[0]['resolver'] } : {}),
    });
    const name = r.status.result;
    result = RESULTS.has(name) ? (name as SpfResultName) : 'temperror';
    domain = r.domain;
    record = typeof (r as { rr?: unknown }).rr === 'string' ? (r as { rr: string }).rr : undefined;
    checkedSender = r['envelope-from'] ?? checkedSender;
    const smtp = r.status.smtp ?? {};
    smtpValue = (identity === 'helo' ? smtp.helo : smtp.mailfrom) ?? smtpValue;
    // Third-party text that may end up in an SMTP reply: no control characters.
    if (result === 'fail' && typeof r.explanation === 'string') explanation = r.explanation.replace(CONTROL, '');
    if ((result === 'permerror' || result === 'temperror') && r.status.comment) {
      // mailauth appends its reason to a fixed prefix; recover the reason as `problem`.
      const prefix = `${receiver}: ${result === 'permerror' ? 'permanent error' : 'error'} in processing during lookup of ${checkedSender}: `;
      if (r.status.comment.startsWith(prefix)) problem = clean(r.status.comment.slice(prefix.length)) || undefined;
    }
  } catch (err) {
    // mailauth reports errors as results; reaching this is a bug or a hostile resolver. Still
    // temperror: the message is deferred rather than rejected.
    result = 'temperror';
    problem = clean(err instanceof Error ? err.message : String(err)) || 'internal error';
  }

  if (!domain) {
    const at = checkedSender.lastIndexOf('@');
    domain = clean(checkedSender.slice(at + 1).toLowerCase());
  }

  const ip = clean(input.ip);
  const who = commentText(checkedSender);
  const pairs: string[] = [];
  if (ip) pairs.push(`client-ip=${dotAtomOrQuoted(ip)}`);
  // RFC 7208 §9.1: envelope-from only when the MAIL FROM identity was checked.
  if (identity === 'mailfrom') pairs.push(`envelope-from=${dotAtomOrQuoted(checkedSender)}`);
  if (clean(input.helo)) pairs.push(`helo=${dotAtomOrQuoted(input.helo)}`);
  pairs.push(`receiver=${dotAtomOrQuoted(receiver)}`);
  pairs.push(`identity=${identity}`);
  if (problem) pairs.push(`problem=${dotAtomOrQuoted(problem)}`);

  const receivedSpf = `${result} (${comment(result, commentText(receiver), who, commentText(ip), commentText(domain))}) ${pairs.join('; ')}`;
  const prop = identity === 'helo' ? 'smtp.helo' : 'smtp.mailfrom';
  const authResult = clean(smtpValue) ? `spf=${result} ${prop}=${pvalue(smtpValue)}` : `spf=${result}`;

  const out: SpfCheckResult = { result, identity, domain, receivedSpf, header: receivedSpf, authResult };
  if (record && domain) {
    const resolve: Resolve = options.resolver ?? ((n, t) => dnsResolve(n, t));
    const mechanism = await findMechanism(record, domain, input.ip, result, resolve, async (target) => (await checkSpf({ ip: input.ip, sender: `postmaster@${target}`, helo: input.helo }, { ...options, identity: 'mailfrom' })).result === 'pass');
    if (mechanism) out.mechanism = clean(mechanism);
  }
  if (explanation !== undefined) out.explanation = explanation;
  if (problem !== undefined) out.problem = problem;
  return out;
}
