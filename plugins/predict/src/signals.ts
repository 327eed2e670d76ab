/**
 * Signals beyond the rate (issue 23): what a message's origin and mail client say of its subject, as
 * learned traits of the subject's profile (`PREDICT.PROFILE`'s traits: the same store call as the rate),
 * each scored as how unusual this message is for the subject, and combined with the rate decision by
 * dividing every bound by how unusual the message is. Pure functions: the tests feed known profiles.
 * @module
 */
import { createHash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import type { TimeframeDecision } from './estimate.ts';
import type { ProfileTrait, ProfileTraitResult } from './store/types.ts';

/** The network trait: the client's /24 (IPv4) or /64 (IPv6). */
export const NETWORK_TRAIT = 'n';
/** The mail-client trait: a hash of the `User-Agent`/`X-Mailer` without its versions, or `none`. */
export const CLIENT_TRAIT = 'c';

/** Networks a subject's profile keeps at most (the least used go first). */
export const MAX_NETWORKS = 16;
/** Mail clients a subject's profile keeps at most. */
export const MAX_CLIENTS = 8;
/**
 * Active hours a trait learns before its counts are halved: a login's habits of the last months
 * weigh, older ones fade, so a user who moved re-learns (about 200 hours of mail: 1–3 months for most).
 */
export const TRAIT_CAP = 200;

/** The client's network, as learned: `a.b.c.0/24`, `2001:db8:1:2::/64`, or `unknown`. IPv4-mapped IPv6 is IPv4. */
export function clientNetwork(address: string | undefined): string {
  if (!address) return 'unknown';
  let a = address.trim();
  if (a.startsWith('[') && a.endsWith(']')) a = a.slice(1, -1);
  if (/^ipv6:/i.test(a)) a = a.slice(5);
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  if (isIPv4(a)) {
    const p = a.split('.');
    return `${Number(p[0])}.${Number(p[1])}.${Number(p[2])}.0/24`;
  }
  if (!isIPv6(a)) return 'unknown';
  const g = ipv6Groups(a);
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) return `${g[6] >> 8}.${g[6] & 255}.${g[7] >> 8}.0/24`;
  return `${g.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a trailing dotted quad read). */
function ipv6Groups(address: string): number[] {
  let a = address.toLowerCase();
  let tail: number[] = [];
  const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (quad) {
    tail = [(Number(quad[1]) << 8) | Number(quad[2]), (Number(quad[3]) << 8) | Number(quad[4])];
    a = a.slice(0, quad.index);
    if (a.endsWith(':') && !a.endsWith('::')) a = a.slice(0, -1);
  }
  const [head, rest] = a.split('::');
  const parse = (s: string | undefined) => (s ? s.split(':').map((x) => parseInt(x, 16)) : []);
  const h = parse(head);
  const r = parse(rest);
  const middle = rest === undefined ? [] : new Array<number>(8 - h.length - r.length - tail.length).fill(0);
  return [...h, ...middle, ...r, ...tail];
}

/** A header as the kernel hands it. */
interface HeaderLike {
  readonly name: string;
  readonly value: string;
}

/**
 * The mail client of a message: the first `User-Agent` or `X-Mailer` header, lower-cased, without
 * what is in parentheses and without any word holding a digit (versions, builds, dates), so an update
 * is the same client: `Microsoft Outlook 16.0` → `microsoft outlook`, `iPhone Mail (21H16)` →
 * `iphone mail`, `Mutt/2.2.12 (2023-09-09)` → `mutt`. No such header: `none` (scripts). `id` is what
 * the store keeps: 8 characters of its SHA-256.
 */
export function mailClient(headers: readonly HeaderLike[] | undefined): { id: string; label: string } {
  const h = headers?.find((x) => /^(user-agent|x-mailer)$/i.test(x.name));
  if (!h) return { id: 'none', label: 'none' };
  const label =
    h.value
      .toLowerCase()
      .replace(/\([^)]*\)/g, ' ')
      .split(/[\s/;,]+/)
      .filter((w) => w !== '' && !/\d/.test(w))
      .join(' ')
      .slice(0, 64) || 'unnamed';
  return { id: createHash('sha256').update(label).digest('base64url').slice(0, 8), label };
}

/** The traits a message teaches its subject's profile (both, whichever the policies score). */
export function messageTraits(network: string, client: { id: string }): ProfileTrait[] {
  return [
    { name: NETWORK_TRAIT, value: network, max: MAX_NETWORKS, cap: TRAIT_CAP },
    { name: CLIENT_TRAIT, value: client.id, max: MAX_CLIENTS, cap: TRAIT_CAP },
  ];
}

/**
 * The share of takeovers assumed to show the owner's own value of a trait (malware on the owner's
 * machine, the owner's webmail session, a copied mail client): 0.2, the simulation's share from the
 * victim's usual network; no published figure gives it.
 */
export const OWNER_SHARE = 0.2;

/**
 * How much more likely this message's value is from a thief than from the owner, in nats (a
 * log-likelihood ratio, never below 0):
 * - the owner's chance of showing a value not seen in an earlier hour is the rate at which it shows
 *   something new, with a prior of one new value in two observations: (distinct + 1) / (total + 2)
 *   (`distinct`: observations that brought a new value; `total`: active hours observed);
 * - a thief shows a new value with chance 1 − {@link OWNER_SHARE}, and the owner's values in proportion
 *   to the owner's own use (so a value seen in an earlier hour scores 0: no more likely from a thief);
 * - so a new value scores ln((1 − 0.2) × (total + 2) / (distinct + 1)): a login seen on one network for
 *   40 hours, 2.8 nats; a roaming one with 15 networks in 40 hours, 0.7; a known value, 0.
 * A value first counted in this same hour is still new (an attacker's first hour is all new). Before
 * `learning` active hours, 0: no judgement while learning.
 */
export function traitSurprise(t: ProfileTraitResult, learning: number): number {
  // This hour's own count is not history: take it out (the value, and the observation it made).
  const thisHour = t.count > 0 && t.hour >= t.now;
  const count = thisHour ? t.count - 1 : t.count;
  const total = thisHour ? Math.max(0, t.total - 1) : t.total;
  const distinct = thisHour && count === 0 ? Math.max(0, t.distinct - 1) : t.distinct;
  if (total < learning || count > 0) return 0;
  return Math.max(0, Math.log(((1 - OWNER_SHARE) * (total + 2)) / (distinct + 1)));
}

/** The `signals` settings of a policy (schema.ts). */
export interface SignalSettings {
  network: boolean;
  client: boolean;
  sensitivity: number;
  tolerance: number;
  learning: number;
  /** Networks never scored (the site's own relays). */
  trusted?: { has(ip: string): boolean };
}

/** What the signals say of one message for one policy. */
export interface SignalVerdict {
  /** Surprise of the scored signals, nats. */
  surprise: number;
  /** What every bound is divided by: exp(sensitivity × max(0, surprise − tolerance)); 1 for a usual message. */
  divisor: number;
  /** The signals that moved, in words (`new network 203.0.113.0/24 (login uses 1)`). */
  moved: string[];
}

/** One signal's words, when it says something (at least half a nat). */
function words(kind: 'network' | 'mail client', shown: string, t: ProfileTraitResult, surprise: number): string | undefined {
  if (surprise < 0.5) return undefined;
  const r = (x: number) => Math.round(x * 10) / 10;
  const uses = t.count > 0 ? t.size - 1 : t.size;
  return `new ${kind} ${shown} (login uses ${uses}, ${r(surprise)} nats)`;
}

/**
 * The combination: the surprise of the scored signals, less `tolerance` nats a message may show for
 * free (a trip's new network alone), times `sensitivity`, is the log of what the rate bounds are
 * divided by. The rate decision reads `count / bound` against 1; with signals it reads
 * `count / bound × exp(sensitivity × (surprise − tolerance))`: a message that is unusual in where it
 * comes from and what sends it is flagged at a much lower volume than one from the login's usual place.
 */
export function scoreSignals(s: SignalSettings, traits: readonly ProfileTraitResult[] | undefined, shown: { network: string; client: string; address?: string }): SignalVerdict {
  const trusted = shown.address !== undefined && s.trusted?.has(shown.address) === true;
  const moved: string[] = [];
  let surprise = 0;
  for (const t of traits ?? []) {
    const kind = t.name === NETWORK_TRAIT ? 'network' : t.name === CLIENT_TRAIT ? 'mail client' : undefined;
    if (kind === undefined || (kind === 'network' ? !s.network || trusted : !s.client)) continue;
    const x = traitSurprise(t, s.learning);
    surprise += x;
    const w = words(kind, kind === 'network' ? shown.network : `"${shown.client}"`, t, x);
    if (w) moved.push(w);
  }
  const divisor = Math.exp(s.sensitivity * Math.max(0, surprise - s.tolerance));
  return { surprise, divisor, moved };
}

/** A timeframe's decision with its bound divided by the signals' divisor (nothing changes for 1). */
export function withSignals(d: TimeframeDecision, divisor: number): TimeframeDecision {
  if (divisor === 1 || d.bound === null) return d;
  const bound = d.bound / divisor;
  return { ...d, bound, over: d.count > bound };
}
