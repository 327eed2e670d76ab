/**
 * Signals beyond the rate (issue 23): what a message's origin and mail client say of its subject, as
 * learned traits of the subject's profile (`PREDICT.PROFILE`'s traits: the same store call as the rate),
 * each scored as how unusual this message is for the subject, and combined with the rate decision by
 * dividing every bound by how unusual the message is. Pure functions: the tests feed known profiles.
 * @module
 */
import { createHash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
// Node's own: the build compiles without the DOM library, where the global TextDecoder is only a value.
import { TextDecoder } from 'node:util';
import type { TimeframeDecision } from './estimate.ts';
import type { ProfileTrait, ProfileTraitResult } from './store/types.ts';

/** The network trait: the client's /24 (IPv4) or /64 (IPv6). */
export const NETWORK_TRAIT = 'n';
/** The mail-client trait: a hash of the `User-Agent`/`X-Mailer` without its versions, or `none`. */
export const CLIENT_TRAIT = 'c';

/** The Reply-To trait: the `Reply-To` domain(s) outside the `From` domain (hashed), or `same`, or `none`. */
export const REPLY_TO_TRAIT = 'r';
/** The display-name trait: a hash of the `From` display name, normalised, or `none`. */
export const DISPLAY_NAME_TRAIT = 'd';
/** The TLS trait: a hash of the SASL mechanism, TLS version, cipher and whether a client certificate was shown. */
export const TLS_TRAIT = 's';

/** The time trait: the slot of the week (weekday or weekend, three-hour slot of the day, in the plugin's time zone). */
export const HOURS_TRAIT = 'h';

/** Networks a subject's profile keeps at most (the least used go first). */
export const MAX_NETWORKS = 16;
/** Mail clients a subject's profile keeps at most. */
export const MAX_CLIENTS = 8;
/** Reply-To settings (`none`, `same`, outside domains) a subject's profile keeps at most. */
export const MAX_REPLY_TO = 8;
/** Display names a subject's profile keeps at most. */
export const MAX_DISPLAY_NAMES = 8;
/** TLS fingerprints a subject's profile keeps at most. */
export const MAX_TLS = 8;
/** Slots of the week a subject's profile keeps: all of them (8 three-hour slots × weekday, weekend). */
export const MAX_HOURS = 16;
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

/** A shown value: what the store keeps (`id`, ≤ 64 characters, no space, comma or semicolon) and what the words say (`label`). */
export interface TraitValue {
  id: string;
  label: string;
}

const hashOf = (text: string) => createHash('sha256').update(text).digest('base64url').slice(0, 8);

/**
 * RFC 2047 encoded words (`=?utf-8?B?…?=`, `=?iso-8859-1?Q?…?=`) decoded; whitespace between two
 * encoded words dropped; an unknown charset read as UTF-8; a malformed word left as it is.
 */
export function decodeWords(text: string): string {
  return text
    .replace(/(=\?[^?\s]+\?[bq]\?[^?\s]*\?=)\s+(?==\?[^?\s]+\?[bq]\?[^?\s]*\?=)/gi, '$1')
    .replace(/=\?([^?\s]+)\?([bq])\?([^?\s]*)\?=/gi, (word, charset: string, encoding: string, data: string) => {
      let bytes: Buffer;
      if (encoding.toLowerCase() === 'b') bytes = Buffer.from(data, 'base64');
      else bytes = Buffer.from(data.replace(/_/g, ' ').replace(/=([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
      let decoder: TextDecoder;
      try {
        decoder = new TextDecoder(charset.split('*')[0].toLowerCase());
      } catch {
        decoder = new TextDecoder('utf-8');
      }
      try {
        return decoder.decode(bytes);
      } catch {
        return word;
      }
    });
}

/** Specials inside quoted strings, hidden from the address parsing (`"Smith, A"`): `,;<:@` as U+0001–U+0005. */
const SPECIALS = ',;<:@';
const hide = (ch: string) => {
  const i = SPECIALS.indexOf(ch);
  return i >= 0 ? String.fromCharCode(1 + i) : ch;
};
const reveal = (text: string) => text.replace(/[\u0001-\u0005]/g, (c) => SPECIALS[c.charCodeAt(0) - 1]);

/** A header's text without quoted strings' quotes and without comments: `"Smith, A" (x) <a@b>` → `Smith, A <a@b>` (quoted specials hidden, {@link reveal}). */
function unquote(value: string): { text: string; comments: string[] } {
  let text = '';
  const comments: string[] = [];
  let depth = 0;
  let comment = '';
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === '\\' && (quoted || depth > 0) && i + 1 < value.length) {
      const next = value[++i];
      if (depth > 0) comment += next;
      else text += hide(next);
      continue;
    }
    if (depth > 0) {
      if (ch === '(') depth++;
      else if (ch === ')' && --depth === 0) {
        comments.push(comment);
        comment = '';
        continue;
      }
      comment += ch;
    } else if (quoted) {
      if (ch === '"') quoted = false;
      else text += hide(ch);
    } else if (ch === '"') quoted = true;
    else if (ch === '(') depth = 1;
    else text += ch;
  }
  return { text, comments };
}

/** The domains of an address header (`From`, `Reply-To`): lists, groups, angle brackets, comments; lower-case; those without a domain left out. */
export function addressDomains(value: string | undefined): string[] {
  if (value === undefined) return [];
  const out: string[] = [];
  for (let part of unquote(value).text.split(/[,;]/)) {
    const colon = part.indexOf(':'); // a group's name: `team: a@b, c@d;`
    if (colon >= 0 && !part.slice(0, colon).includes('<') && !part.slice(0, colon).includes('@')) part = part.slice(colon + 1);
    const angle = /<([^>]*)>?/.exec(part);
    const address = (angle ? angle[1] : part).trim();
    const at = address.lastIndexOf('@');
    if (at < 0) continue;
    const domain = address.slice(at + 1).replace(/^\[|\]$/g, '').replace(/\.$/, '').trim().toLowerCase();
    if (/^[^\s@<>]+$/.test(domain)) out.push(domain);
  }
  return out;
}

/** A header's first value (names compared without case). */
function headerOf(headers: readonly HeaderLike[] | undefined, name: string): string | undefined {
  return headers?.find((x) => x.name.toLowerCase() === name)?.value;
}

/** Whether `a` is `b` or one under the other (`eu.example.com` and `example.com`). */
const sameDomain = (a: string, b: string) => a === b || a.endsWith(`.${b}`) || b.endsWith(`.${a}`);

/**
 * The Reply-To of a message, as learned: `none` without a `Reply-To` (or one without any address),
 * `same` when every address of it is in the `From` domain (or under it, or it under them), else the
 * outside domains, sorted, space-separated (`evil.example`), stored as 8 characters of their SHA-256.
 * Without a `From` address, `fallback` (the envelope sender's domain) is the `From` domain.
 */
export function replyToDomain(headers: readonly HeaderLike[] | undefined, fallback?: string): TraitValue {
  const domains = addressDomains(headerOf(headers, 'reply-to'));
  if (domains.length === 0) return { id: 'none', label: 'none' };
  const from = addressDomains(headerOf(headers, 'from'))[0] ?? fallback?.toLowerCase();
  const outside = [...new Set(domains.filter((d) => from === undefined || from === '' || !sameDomain(d, from)))].sort();
  if (outside.length === 0) return { id: 'same', label: 'same' };
  const label = outside.join(' ').slice(0, 128);
  return { id: hashOf(label), label };
}

/**
 * The `From` display name, as learned: the phrase before the first `<` (or the old-style comment,
 * `a@b (Alice)`) of the first `From`, encoded words decoded, quotes and backslashes dropped, NFKC,
 * lower-case, spaces collapsed, at most 64 characters — `"Smith,  Alice"` and `=?utf-8?Q?smith,_alice?=`
 * are the same name. No `From` or no name: `none`. Stored as 8 characters of its SHA-256.
 */
export function displayName(headers: readonly HeaderLike[] | undefined): TraitValue {
  const from = headerOf(headers, 'from');
  if (from === undefined) return { id: 'none', label: 'none' };
  const decoded = decodeWords(from);
  const { text, comments } = unquote(decoded);
  const angle = text.indexOf('<');
  // `Alice <a@b>`; the old style `a@b (Alice)`; a bare address has no name.
  const phrase = angle >= 0 ? text.slice(0, angle) : (comments[0] ?? '');
  const label = reveal(phrase)
    .normalize('NFKC')
    .replace(/["\\]/g, '')
    .toLowerCase()
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 64);
  if (label === '') return { id: 'none', label: 'none' };
  return { id: hashOf(label), label };
}

/** The macros of the TLS fingerprint (Postfix sends them by default: `{auth_type}` at MAIL, the TLS ones at HELO). */
export const TLS_MACROS = { helo: ['{tls_version}', '{cipher}', '{cert_subject}'], mailFrom: ['{auth_type}'] } as const;

/**
 * The SASL mechanism and TLS of the session, as one fingerprint: `{auth_type}` (upper-case),
 * `{tls_version}`, `{cipher}`, and `cert` when the client presented a certificate (`{cert_subject}`);
 * `-` for what the MTA did not send (plain text, no login). Stored as 8 characters of its SHA-256.
 */
export function tlsFingerprint(macros: { get(name: string): string | undefined } | undefined): TraitValue {
  const get = (name: string) => macros?.get(name)?.trim() || undefined;
  const parts = [get('{auth_type}')?.toUpperCase() ?? '-', get('{tls_version}') ?? '-', get('{cipher}') ?? '-'];
  if (get('{cert_subject}')) parts.push('cert');
  const label = parts.join(' ').slice(0, 128);
  return { id: hashOf(label), label };
}

/** Hours of the week in each kind of slot: a weekday slot is 15 of the week's 168 hours, a weekend one 6. */
const SLOT_SHARE = { w: 15 / 168, e: 6 / 168 } as const;
const WEEKDAYS: Readonly<Record<string, boolean>> = { Mon: true, Tue: true, Wed: true, Thu: true, Fri: true, Sat: false, Sun: false };

/**
 * The slot of the week a message is sent in, in a time zone: `w3` (a weekday, 09:00–12:00), `e7` (a
 * weekend day, 21:00–24:00). Three-hour slots: fine enough to tell the office from the night, coarse
 * enough that a login's habits fill them in a few weeks. The zone is the site's (the plugin's `timeZone`):
 * a login's habits are learned in it, wherever the user is.
 */
export class WeekSlots {
  readonly #format: Intl.DateTimeFormat;
  // The last quarter hour asked and its slot: messages come in time order, and zones have 30- and 45-minute offsets.
  #quarter = NaN;
  #slot: TraitValue = { id: 'w0', label: '' };

  /** @param timeZone an IANA zone (`Europe/Paris`), or undefined for the process's own. */
  constructor(timeZone?: string) {
    this.#format = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: 'numeric', hourCycle: 'h23' });
  }

  /** The slot of `ms` (ms since 1970). */
  of(ms: number): TraitValue {
    const quarter = Math.floor(ms / 900_000);
    if (quarter === this.#quarter) return this.#slot;
    let weekday = 'Mon';
    let hour = 0;
    for (const part of this.#format.formatToParts(ms)) {
      if (part.type === 'weekday') weekday = part.value;
      else if (part.type === 'hour') hour = Number(part.value) % 24;
    }
    const slot = Math.floor(hour / 3);
    const working = WEEKDAYS[weekday] ?? true;
    const from = String(slot * 3).padStart(2, '0');
    const to = String(slot * 3 + 3).padStart(2, '0');
    this.#quarter = quarter;
    this.#slot = { id: `${working ? 'w' : 'e'}${slot}`, label: `${working ? 'weekday' : 'weekend'} ${from}–${to} h` };
    return this.#slot;
  }
}

/** The optional traits of a message (each learned when a policy on the subject scores it). */
export interface ExtraTraits {
  replyTo?: { id: string };
  displayName?: { id: string };
  tls?: { id: string };
  hours?: { id: string };
}

/**
 * The traits a message teaches its subject's profile: the network and the mail client always
 * (whichever the policies score), and each of `extra` given (those a policy on the subject scores);
 * with `young` hours (the plugin's `youngHours`), the identity traits count the values that appeared
 * within them.
 */
export function messageTraits(network: string, client: { id: string }, extra: ExtraTraits = {}, young = 0): ProfileTrait[] {
  // The identity traits count their young values (the plugin's `youngHours`); the hours of the week are usual or not, never new.
  const y = young > 0 ? { young } : {};
  const out: ProfileTrait[] = [
    { name: NETWORK_TRAIT, value: network, max: MAX_NETWORKS, cap: TRAIT_CAP, ...y },
    { name: CLIENT_TRAIT, value: client.id, max: MAX_CLIENTS, cap: TRAIT_CAP, ...y },
  ];
  if (extra.replyTo) out.push({ name: REPLY_TO_TRAIT, value: extra.replyTo.id, max: MAX_REPLY_TO, cap: TRAIT_CAP, ...y });
  if (extra.displayName) out.push({ name: DISPLAY_NAME_TRAIT, value: extra.displayName.id, max: MAX_DISPLAY_NAMES, cap: TRAIT_CAP, ...y });
  if (extra.tls) out.push({ name: TLS_TRAIT, value: extra.tls.id, max: MAX_TLS, cap: TRAIT_CAP, ...y });
  if (extra.hours) out.push({ name: HOURS_TRAIT, value: extra.hours.id, max: MAX_HOURS, cap: TRAIT_CAP });
  return out;
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
 *
 * With `young` hours (the plugin's `youngHours`; the trait must have been learned with them), a value
 * that appeared within them is still new, and is judged against the settled habits only — the young
 * values' hours and their new-value observations taken out of `total` and `distinct` — so a thief's own
 * network does not become the login's after its first hour, nor do the networks it rotates through make
 * the login look roaming. A settled value still scores 0. (Multiplying the surprise by the young values,
 * for rotations, was measured and dropped: logins with more networks than the profile keeps see evicted
 * ones come back as new, and the false positives tripled.)
 *
 * The Reply-To is judged on its own terms ({@link REPLY_TO_CHANGE}).
 */
export function traitSurprise(t: ProfileTraitResult, learning: number, young = 0): number {
  let total: number;
  let distinct: number;
  if (young > 0) {
    if (t.count > 0 && !(t.first > 0 && t.now - t.first < young)) return 0;
    total = Math.max(0, t.total - t.youngHours - t.count);
    distinct = Math.max(0, t.distinct - t.youngValues - (t.count > 0 ? 1 : 0));
  } else {
    // This hour's own count is not history: take it out (the value, and the observation it made).
    const thisHour = t.count > 0 && t.hour >= t.now;
    const count = thisHour ? t.count - 1 : t.count;
    if (count > 0) return 0;
    total = thisHour ? Math.max(0, t.total - 1) : t.total;
    distinct = thisHour ? Math.max(0, t.distinct - 1) : t.distinct;
  }
  if (total < learning) return 0;
  if (t.name === REPLY_TO_TRAIT) {
    const r = REPLY_TO_CHANGE;
    return Math.max(0, Math.log((r.thief * (total + r.priorHours)) / (Math.max(0, distinct - 1) + r.priorChanges)));
  }
  return Math.max(0, Math.log(((1 - OWNER_SHARE) * (total + 2)) / (distinct + 1)));
}

/**
 * How a new Reply-To setting is judged. Unlike a network or a mail client, which an owner changes with
 * every trip or new phone, a mail program's Reply-To is set once (a shared mailbox, a list) and kept: the
 * owner's chance of a change is counted from the changes after its first setting, with a prior of 0.2
 * changes in 10 hours, and a thief brings a new one with `thief` = 0.3 (the share of takeovers the
 * simulation gives an outside Reply-To; invoice fraud and thread hijacks use one to keep the answers).
 * A login that kept `none` for 40 active hours: ln(0.3 × 50 / 0.2) = 4.3 nats; one that changed once
 * already, 2.5; after 10 hours, 3.4.
 */
export const REPLY_TO_CHANGE = { thief: 0.3, priorHours: 10, priorChanges: 0.2 } as const;

/**
 * The share of takeovers assumed to send in the owner's own hours (the thief who waits for the office
 * to open, or works the owner's day); the others send at any hour of the week. 0.5, the simulation's
 * share; no published figure gives it.
 */
export const IN_HOURS_SHARE = 0.5;

/** Pseudo-hours of the week's prior in the owner's time habits: spread over the slots by their length. */
const HOURS_PRIOR = 2;
/**
 * The share of the owner's own mail sent at an hour unlike its habits (the evening at home, a weekend's
 * catch-up), at any hour of the week: without it a login's first late evening scored 3.3 nats after 100
 * active hours, and added to its home network's, tripled the evaluation's false positives (1.19 % of
 * senders a day instead of 0.49 %). With it, no slot scores more than ln(0.5 + 0.5 / 0.1) = 1.7 nats.
 */
export const OFF_HOURS_SHARE = 0.1;

/**
 * How much more likely this message's slot of the week is from a thief than from the owner, in nats
 * (never below 0). Unlike the identity traits, a time is not new or known: it is usual or not. So:
 * - the owner sends in a slot in proportion to its active hours there, with {@link HOURS_PRIOR}
 *   pseudo-hours spread over the week, and {@link OFF_HOURS_SHARE} of the time at any hour:
 *   p = 0.9 × (count + 2 × share) / (total + 2) + 0.1 × share, share the slot's part of the week's 168
 *   hours (15 for a weekday slot, 6 for a weekend one);
 * - a thief sends in the owner's hours ({@link IN_HOURS_SHARE}) or at any hour: 0.5 × p + 0.5 × share;
 * - so a slot the owner never used scores ln(0.5 + 0.5 / (1.8 / (total + 2) + 0.1)): 0.9 nats after 10
 *   active hours, 1.4 after 50, 1.6 after 100, 1.7 at most — a modest addition to a new network or a new
 *   Reply-To, never a reason alone; a slot used in 3 of 100 hours, 0.5; the owner's office hours, 0.
 * This hour's own count is left out, like {@link traitSurprise}; before `learning` active hours, 0.
 */
export function hoursSurprise(t: ProfileTraitResult, weekend: boolean, learning: number): number {
  const thisHour = t.count > 0 && t.hour >= t.now;
  const count = thisHour ? t.count - 1 : t.count;
  const total = thisHour ? Math.max(0, t.total - 1) : t.total;
  if (total < learning) return 0;
  const share = weekend ? SLOT_SHARE.e : SLOT_SHARE.w;
  const owner = (1 - OFF_HOURS_SHARE) * ((count + HOURS_PRIOR * share) / (total + HOURS_PRIOR)) + OFF_HOURS_SHARE * share;
  const thief = IN_HOURS_SHARE * owner + (1 - IN_HOURS_SHARE) * share;
  return Math.max(0, Math.log(thief / owner));
}

/** The `signals` settings of a policy (schema.ts). */
export interface SignalSettings {
  network: boolean;
  client: boolean;
  /** Score the Reply-To domain (absent: not scored; the policy field's default is true). */
  replyTo?: boolean;
  /** Score the From display name, with the device (absent: not scored; the policy field's default is true). */
  displayName?: boolean;
  /** Score the SASL mechanism and TLS fingerprint (default false). */
  tls?: boolean;
  /** Score the slot of the week (default false). */
  hours?: boolean;
  sensitivity: number;
  tolerance: number;
  learning: number;
  /** Networks never scored (the site's own relays). */
  trusted?: { has(ip: string): boolean };
}

/** The optional traits a policy's settings score (what the message must teach its subject's profile). */
export function extraTraitsOf(s: SignalSettings, shown: { replyTo: TraitValue; displayName: TraitValue; tls: TraitValue; hours?: TraitValue }): ExtraTraits {
  return { ...(s.replyTo ? { replyTo: shown.replyTo } : {}), ...(s.displayName ? { displayName: shown.displayName } : {}), ...(s.tls ? { tls: shown.tls } : {}), ...(s.hours && shown.hours ? { hours: shown.hours } : {}) };
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

/** What a message showed, in words (labels: the network, the mail client, and the optional traits when read). */
export interface ShownTraits {
  network: string;
  client: string;
  address?: string;
  replyTo?: string;
  displayName?: string;
  tls?: string;
  /** The slot of the week, in words (`weekend 21–24 h`). */
  hours?: string;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/** One signal's words, when it says something (at least half a nat). */
function words(name: string, shown: ShownTraits, t: ProfileTraitResult, surprise: number): string | undefined {
  if (surprise < 0.5) return undefined;
  const uses = t.count > 0 ? t.size - 1 : t.size;
  const tail = `(login uses ${uses}, ${round1(surprise)} nats)`;
  switch (name) {
    case NETWORK_TRAIT:
      return `new network ${shown.network} ${tail}`;
    case CLIENT_TRAIT:
      return `new mail client "${shown.client}" ${tail}`;
    case REPLY_TO_TRAIT: {
      // What the login used is only counted (`none`, its own domain, outside ones): `uses 1` is mostly `none`.
      const r = shown.replyTo ?? '?';
      const settings = `(login uses ${uses} other Reply-To setting${uses === 1 ? '' : 's'}, ${round1(surprise)} nats)`;
      return r === 'none' ? `no Reply-To ${settings}` : r === 'same' ? `new Reply-To in the From domain ${settings}` : `new Reply-To domain ${r} ${settings}`;
    }
    case DISPLAY_NAME_TRAIT:
      return shown.displayName === 'none' ? `no display name ${tail}` : `new display name "${shown.displayName ?? '?'}" ${tail}`;
    case TLS_TRAIT:
      return `new SASL/TLS "${shown.tls ?? '?'}" ${tail}`;
    case HOURS_TRAIT: {
      const thisHour = t.count > 0 && t.hour >= t.now;
      const count = thisHour ? t.count - 1 : t.count;
      const total = thisHour ? Math.max(0, t.total - 1) : t.total;
      return `unusual time ${shown.hours ?? '?'} (login active then in ${Math.round(count)} of ${Math.round(total)} hours, ${round1(surprise)} nats)`;
    }
  }
  return undefined;
}

/** Whether a policy's settings score a trait (the network not from a trusted relay). */
function scored(s: SignalSettings, name: string, trusted: boolean): boolean {
  switch (name) {
    case NETWORK_TRAIT:
      return s.network && !trusted;
    case CLIENT_TRAIT:
      return s.client;
    case REPLY_TO_TRAIT:
      return s.replyTo === true;
    case DISPLAY_NAME_TRAIT:
      return s.displayName === true;
    case TLS_TRAIT:
      return s.tls === true;
    case HOURS_TRAIT:
      return s.hours === true;
  }
  return false;
}

/**
 * The combination: the surprise of the scored signals (each one's {@link traitSurprise}, added), less
 * `tolerance` nats a message may show for free (a trip's new network alone), times `sensitivity`, is the
 * log of what the rate bounds are divided by. The rate decision reads `count / bound` against 1; with
 * signals it reads `count / bound × exp(sensitivity × (surprise − tolerance))`: a message that is unusual
 * in where it comes from and what sends it is flagged at a much lower volume than one from the login's
 * usual place. `young`: the plugin's `youngHours`, how long a value stays new ({@link traitSurprise}).
 */
export function scoreSignals(s: SignalSettings, traits: readonly ProfileTraitResult[] | undefined, shown: ShownTraits, young = 0): SignalVerdict {
  const trusted = shown.address !== undefined && s.trusted?.has(shown.address) === true;
  const moved: string[] = [];
  let surprise = 0;
  // The mail client, the SASL/TLS fingerprint and the display name are one device: another machine brings
  // all three (a phone's mail app has its own client, its own TLS and the name typed into it), so they
  // count once (the larger). Counted apart, a user's new phone on a carrier's network was three or four
  // surprises for one change: most of the evaluation's false positives with signals.
  let device = 0;
  for (const t of traits ?? []) {
    if (!scored(s, t.name, trusted)) continue;
    const x = t.name === HOURS_TRAIT ? hoursSurprise(t, shown.hours?.startsWith('weekend') === true, s.learning) : traitSurprise(t, s.learning, young);
    if (t.name === CLIENT_TRAIT || t.name === TLS_TRAIT || t.name === DISPLAY_NAME_TRAIT) device = Math.max(device, x);
    else surprise += x;
    const w = words(t.name, shown, t, x);
    if (w) moved.push(w);
  }
  surprise += device;
  const divisor = Math.exp(s.sensitivity * Math.max(0, surprise - s.tolerance));
  return { surprise, divisor, moved };
}

/** A timeframe's decision with its bound divided by the signals' divisor (nothing changes for 1). */
export function withSignals(d: TimeframeDecision, divisor: number): TimeframeDecision {
  if (divisor === 1 || d.bound === null) return d;
  const bound = d.bound / divisor;
  return { ...d, bound, over: d.count > bound };
}
