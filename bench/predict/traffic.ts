/**
 * The traffic simulator of the predict evaluation: authenticated submission traffic of N senders over
 * D days, seeded and deterministic, with heavy-tailed volumes, diurnal and weekly patterns, sessions,
 * legitimate bursts, and compromised accounts injected after a learning period.
 *
 * Every parameter below was chosen to look like a company's submission traffic, not to help or hurt
 * any detector; bench/predict/README.md explains each. Events are columnar (typed arrays, sorted by
 * time) so millions of them stay cheap; {@link eventAt} and {@link events} give the
 * `{ t, login, recipients, compromise? }` view.
 * @module
 */
import { injectNewKinds, REPLY_TO_SHARE, type AttackOptions, type NewEvent } from './attacks.ts';
import { Rng, subSeed } from './rng.ts';
import { attackTraits, legitimateTraits, usualTraits, type TraitColumns, type Traits } from './traits.ts';

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** Monday 2025-01-06 00:00 UTC: day 0 of the simulation. */
export const DEFAULT_START = Date.UTC(2025, 0, 6);

/** What an event is: legitimate kinds below 10, compromise kinds from 10 on. */
export const KIND = {
  /** An ordinary message. */
  normal: 0,
  /** An ordinary message on a busy day (2–4× the sender's usual volume). */
  busy: 1,
  /** One message to a whole team (30–80 recipients). */
  team: 2,
  /** A newsletter or announcement: one message to 100–500 recipients, or a series to a list. */
  newsletter: 3,
  /** Compromise: a burst of many messages with many recipients. */
  burst: 10,
  /** Compromise: slow sustained spam. */
  slow: 11,
  /** Compromise: slow spam paced to stay under a plausible fixed hourly limit. */
  paced: 12,
  /** Compromise (issue 23): phishing the victim's own correspondents. */
  addressbook: 13,
  /** Compromise (issue 23): a working day at 1.5–3× the owner's hourly volume, to new outside addresses. */
  lowslow: 14,
  /** Compromise (issue 23): spear-phishing colleagues inside the victim's domain. */
  internal: 15,
  /** Compromise (issue 23): replies into the owner's recent threads. */
  hijack: 16,
} as const;

export const KIND_NAMES: Record<number, string> = { 0: 'normal', 1: 'busy day', 2: 'team mailing', 3: 'newsletter', 10: 'burst', 11: 'slow', 12: 'slow paced', 13: 'address book', 14: 'low and slow', 15: 'internal', 16: 'thread hijack' };

/** The compromise kinds of the original evaluation, unchanged. */
export type LegacyKind = 'burst' | 'slow' | 'paced';
/** The quiet kinds of issue 23 (attacks.ts). */
export type NewKind = 'addressbook' | 'lowslow' | 'internal' | 'hijack';
export type CompromiseKind = LegacyKind | NewKind;
export const COMPROMISE_KINDS: readonly LegacyKind[] = ['burst', 'slow', 'paced'];
export const NEW_KINDS: readonly NewKind[] = ['addressbook', 'lowslow', 'internal', 'hijack'];
/** Every kind, in report order. */
export const ALL_KINDS: readonly CompromiseKind[] = [...COMPROMISE_KINDS, ...NEW_KINDS];
/** A kind's name in the report. */
export const KIND_LABELS: Record<CompromiseKind, string> = { burst: 'burst', slow: 'slow', paced: 'slow paced', addressbook: 'address book', lowslow: 'low and slow', internal: 'internal', hijack: 'thread hijack' };

/** Settings of the legacy traffic (what `Traffic.options` reports). */
export interface BaseTrafficOptions {
  /** Seed (default 1). */
  seed?: number;
  /** Number of senders (default 2,000). */
  senders?: number;
  /** Number of days (default 14). */
  days?: number;
  /** Share of senders compromised once, after the learning period (default 0.05). */
  compromiseShare?: number;
  /** Days without compromises at the start, for learning (default half of the days, rounded down). */
  learnDays?: number;
  /** Start of day 0, ms since the epoch (default Monday 2025-01-06 00:00 UTC). */
  start?: number;
}

/** Settings of {@link generateTraffic}: the legacy traffic's, and the new kinds' (attacks.ts). */
export interface TrafficOptions extends BaseTrafficOptions {
  /** Incidents per new kind (default: a third of the legacy compromises, 33 for 2,000 senders; 0: the legacy traffic exactly). */
  newPerKind?: number;
  /** The new kinds injected (default all four). */
  newKinds?: NewKind[];
  /** Share of attacks from the victim's usual network with its client (default 0.2). */
  victimNetworkShare?: number;
  /** Share of new-kind attacks in the victim's working hours (default 0.5). */
  inHoursShare?: number;
}

/** A sender's habits, drawn once from the seed. */
export interface SenderProfile {
  index: number;
  login: string;
  /** `normal` (most people), `heavy` (sales, support: 70+ a day) or `role` (role accounts, 300+ a day). */
  cls: 'normal' | 'heavy' | 'role';
  /** Mean messages on a working day. */
  daily: number;
  /** Timezone offset, hours east of UTC. */
  tz: number;
  /** Local working hours. */
  workStart: number;
  workEnd: number;
  /** A weekend day's volume as a share of a working day's. */
  weekendShare: number;
  /** Mean extra recipients (beyond the first) of an ordinary message. */
  extraRcpt: number;
  /** Share of ordinary messages that go to a team (10–40 recipients). */
  teamShare: number;
  /** Sends newsletters/announcements a few times a month. */
  announcer: boolean;
  /** Mean messages per sending session. */
  sessionMean: number;
  /** Mean seconds between messages of a session. */
  gapMean: number;
}

/** An injected compromise. */
export interface Compromise {
  id: number;
  sender: number;
  login: string;
  kind: CompromiseKind;
  /** Time of the first spam message, ms. */
  start: number;
  /** Time of the last spam message, ms. */
  end: number;
  /** Spam messages and recipients. */
  messages: number;
  recipients: number;
}

/** The simulated traffic, columnar and sorted by time. */
export interface Traffic {
  options: Required<BaseTrafficOptions>;
  /** The new kinds' settings. */
  attacks: AttackOptions;
  /** Start and end of the simulation, ms. */
  start: number;
  end: number;
  /** End of the learning period (no compromise before it), ms. */
  learnEnd: number;
  senders: SenderProfile[];
  logins: string[];
  /** Number of events. */
  n: number;
  /** Per event: time (ms), sender index, recipients, compromise id (-1: legitimate), kind ({@link KIND}). */
  t: Float64Array;
  sender: Int32Array;
  recipients: Int32Array;
  compromise: Int32Array;
  kind: Uint8Array;
  compromises: Compromise[];
  /**
   * Who each message goes to: event i's recipients are `rcptIds[rcptStart[i] … rcptStart[i + 1] − 1]`.
   * An id below the number of senders is a colleague (that sender's login); above, an outside address.
   * See {@link assignRecipients}.
   */
  rcptStart: Int32Array;
  rcptIds: Int32Array;
  /** Every sender's and attacker's habits of network, client and identity, and the networks (traits.ts). */
  traits: Traits;
  /** Per event: client network, host, mail client, display name and Reply-To (traits.ts; `messageTraits` renders them). */
  net: Int32Array;
  host: Uint16Array;
  client: Uint8Array;
  name: Uint8Array;
  replyTo: Uint8Array;
}

/** One event, as the brief describes it. */
export interface TrafficEvent {
  t: number;
  login: string;
  recipients: number;
  compromise?: number;
}

/** Event i as an object. */
export function eventAt(tr: Traffic, i: number): TrafficEvent {
  const e: TrafficEvent = { t: tr.t[i], login: tr.logins[tr.sender[i]], recipients: tr.recipients[i] };
  if (tr.compromise[i] >= 0) e.compromise = tr.compromise[i];
  return e;
}

/** Every event as an object, in time order. */
export function* events(tr: Traffic): Generator<TrafficEvent> {
  for (let i = 0; i < tr.n; i++) yield eventAt(tr, i);
}

/**
 * Event i's recipients as addresses, each built once: a colleague is that sender's login
 * (`user<j>@example.com`), an outside recipient `x<id>@d<id mod 97>.example.net`.
 */
export function recipientAddresses(tr: Traffic): (i: number) => string[] {
  const addresses: (string | undefined)[] = [];
  return (i) => {
    const out: string[] = [];
    for (let j = tr.rcptStart[i]; j < tr.rcptStart[i + 1]; j++) {
      const id = tr.rcptIds[j];
      out.push((addresses[id] ??= id < tr.logins.length ? tr.logins[id] : `x${id}@d${id % 97}.example.net`));
    }
    return out;
  };
}

/** Growable columns. */
class Columns {
  n = 0;
  t = new Float64Array(1 << 16);
  sender = new Int32Array(1 << 16);
  recipients = new Int32Array(1 << 16);
  compromise = new Int32Array(1 << 16);
  kind = new Uint8Array(1 << 16);

  push(t: number, sender: number, recipients: number, compromise: number, kind: number): void {
    if (this.n === this.t.length) this.grow();
    const i = this.n++;
    this.t[i] = t;
    this.sender[i] = sender;
    this.recipients[i] = recipients;
    this.compromise[i] = compromise;
    this.kind[i] = kind;
  }

  private grow(): void {
    const size = this.t.length * 2;
    const g = <T extends Float64Array | Int32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.t = g(this.t, (n) => new Float64Array(n));
    this.sender = g(this.sender, (n) => new Int32Array(n));
    this.recipients = g(this.recipients, (n) => new Int32Array(n));
    this.compromise = g(this.compromise, (n) => new Int32Array(n));
    this.kind = g(this.kind, (n) => new Uint8Array(n));
  }
}

/** Timezones of the senders (hours east of UTC) and their weights: mostly Europe, some Americas and Asia. */
const TIMEZONES = [0, 1, 2, -5, -8, 5.5, 8];
const TZ_WEIGHTS = [0.2, 0.4, 0.1, 0.15, 0.05, 0.05, 0.05];
const BINS = 96; // quarter hours

/** Activity over a local day, per quarter hour, as a cumulative distribution. */
function dayProfile(p: SenderProfile, weekend: boolean): Float64Array {
  const w = new Float64Array(BINS);
  for (let b = 0; b < BINS; b++) {
    const x = (b + 0.5) / 4;
    let v: number;
    if (p.cls === 'role') {
      // Role accounts (helpdesk, orders, notifications): long days, some automated night traffic.
      v = x >= 7 && x < 20 ? 1 : x >= 20 && x < 23 ? 0.4 : 0.1;
    } else if (weekend) {
      v = x >= 9 && x < 12 ? 0.8 : x >= 12 && x < 18 ? 1 : x >= 18 && x < 22 ? 0.6 : 0.03;
    } else if (x < p.workStart - 1.5) v = 0.01;
    else if (x < p.workStart) v = 0.2; // checking mail before work
    else if (x < p.workEnd) v = x >= 12 && x < 13.5 ? 0.35 : x >= 9.5 && x < 11.5 ? 1.2 : 1; // lunch dip, mid-morning peak
    else if (x < p.workEnd + 1) v = 0.4;
    else if (x < 23) v = 0.1;
    else v = 0.02;
    w[b] = v;
  }
  for (let b = 1; b < BINS; b++) w[b] += w[b - 1];
  const total = w[BINS - 1];
  for (let b = 0; b < BINS; b++) w[b] /= total;
  return w;
}

/** A time of day (ms from local midnight) drawn from a profile. */
function sampleTime(rng: Rng, cdf: Float64Array): number {
  const u = rng.next();
  let lo = 0;
  let hi = BINS - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return (lo + rng.next()) * 15 * MINUTE;
}

function makeSender(seed: number, i: number): SenderProfile {
  const rng = new Rng(subSeed(seed, 1, i));
  const r = rng.next();
  const cls: SenderProfile['cls'] = r < 0.005 ? 'role' : r < 0.155 ? 'heavy' : 'normal';
  let daily: number;
  if (cls === 'role') daily = 300 + rng.lognormal(120, 0.8);
  else if (cls === 'heavy') daily = Math.min(280, rng.pareto(70, 2));
  else daily = Math.min(80, Math.max(1, rng.lognormal(13, 0.55)));
  const workStart = Math.min(11, Math.max(6, 8.5 + 0.75 * rng.normal()));
  const workEnd = Math.min(21, workStart + Math.max(6, 9 + 0.75 * rng.normal()));
  return {
    index: i,
    login: `user${i}@example.com`,
    cls,
    daily,
    tz: TIMEZONES[rng.weighted(TZ_WEIGHTS)],
    workStart,
    workEnd,
    weekendShare: cls === 'role' ? rng.uniform(0.3, 0.7) : rng.chance(0.7) ? rng.uniform(0, 0.1) : rng.uniform(0.1, 0.35),
    extraRcpt: cls === 'role' ? rng.uniform(0, 0.3) : rng.uniform(0.15, 1.2),
    // Most people rarely write to a whole team, a few (managers, assistants) often: heavy-tailed across
    // senders, and lower for heavy senders, whose volume is mostly one-to-one (sales, support).
    teamShare: cls === 'role' ? rng.uniform(0, 0.002) : cls === 'heavy' ? Math.min(0.03, rng.lognormal(0.002, 1)) : Math.min(0.06, rng.lognormal(0.006, 1)),
    announcer: rng.chance(0.03),
    sessionMean: cls === 'role' ? rng.uniform(2, 6) : rng.uniform(1.5, 4),
    gapMean: rng.uniform(20, 120),
  };
}

/** Recipients of a message to a team: 10–40, power-law (Pareto α = 1.5, truncated): small teams far more often than large. */
function teamSize(rng: Rng): number {
  // Inverse CDF of the Pareto truncated to [10, 41).
  const lo = Math.pow(10, -1.5);
  const hi = Math.pow(41, -1.5);
  return Math.min(40, Math.floor(Math.pow(lo - rng.next() * (lo - hi), -1 / 1.5)));
}

/** Probability, per working day, of a busy day (2–4× volume), a team mailing, and (announcers) a newsletter. */
const P_BUSY = 0.04;
const P_TEAM_MAILING = 0.01;
const P_NEWSLETTER = 3 / 21; // about three a month

function senderTraffic(out: Columns, seed: number, p: SenderProfile, start: number, end: number, days: number): void {
  const rng = new Rng(subSeed(seed, 4, p.index));
  const weekday = dayProfile(p, false);
  const weekend = dayProfile(p, true);
  const push = (t: number, rcpt: number, kind: number) => {
    if (t >= start && t < end) out.push(Math.floor(t), p.index, rcpt, -1, kind);
  };
  // Local days from the one before day 0 to the last: a timezone shifts them against UTC.
  for (let d = -1; d <= days; d++) {
    const dayStart = start + d * DAY - p.tz * HOUR;
    const dow = ((d % 7) + 7) % 7; // day 0 is a Monday
    const isWeekend = dow >= 5;
    const cdf = isWeekend ? weekend : weekday;
    const busy = !isWeekend && rng.chance(P_BUSY);
    const rate = isWeekend ? p.daily * p.weekendShare * rng.lognormal(1, 0.5) : p.daily * rng.lognormal(1, 0.3) * (busy ? rng.uniform(2, 4) : 1);
    let remaining = rng.poisson(rate);
    while (remaining > 0) {
      const size = Math.min(remaining, 1 + rng.geometric(p.sessionMean - 1));
      remaining -= size;
      let t = dayStart + sampleTime(rng, cdf);
      for (let m = 0; m < size; m++) {
        if (m > 0) t += 3_000 + rng.exp(p.gapMean * 1000);
        const rcpt = rng.chance(p.teamShare) ? teamSize(rng) : 1 + Math.min(8, rng.geometric(p.extraRcpt));
        push(t, rcpt, busy ? KIND.busy : KIND.normal);
      }
    }
    if (!isWeekend && rng.chance(P_TEAM_MAILING)) push(dayStart + sampleTime(rng, weekday), rng.int(30, 80), KIND.team);
    if (p.announcer && !isWeekend && rng.chance(P_NEWSLETTER)) {
      let t = dayStart + sampleTime(rng, weekday);
      if (rng.chance(0.5)) push(t, rng.int(100, 500), KIND.newsletter);
      else {
        // A series to a list, split by hand or by the client: 5–20 messages of 20–60 recipients.
        const m = rng.int(5, 20);
        for (let k = 0; k < m; k++) {
          push(t, rng.int(20, 60), KIND.newsletter);
          t += rng.uniform(10_000, 60_000);
        }
      }
    }
  }
}

function injectCompromise(out: Columns, seed: number, id: number, p: SenderProfile, learnEnd: number, end: number): Compromise {
  const rng = new Rng(subSeed(seed, 3, id));
  const kind = COMPROMISE_KINDS[rng.weighted([0.5, 0.25, 0.25])];
  const times: number[] = [];
  const rcpts: number[] = [];
  if (kind === 'burst') {
    // 20–100 messages of 10–50 recipients over 5–60 minutes.
    const m = rng.int(20, 100);
    const duration = rng.uniform(5, 60) * MINUTE;
    const start = rng.uniform(learnEnd, end - duration - MINUTE);
    times.push(start);
    for (let k = 1; k < m; k++) times.push(start + rng.next() * duration);
    times.sort((a, b) => a - b);
    for (let k = 0; k < m; k++) rcpts.push(rng.int(10, 50));
  } else {
    // Hours of one message every 1–5 minutes. Slow: 3–20 recipients each. Paced: 3–8 recipients, spaced
    // so that the hourly total stays under a plausible fixed limit of 90–180 recipients an hour.
    const duration = rng.uniform(2, 10) * HOUR;
    const start = rng.uniform(learnEnd, end - duration - MINUTE);
    const meanGap = rng.uniform(1, 5);
    const pace = rng.uniform(90, 180) / 60; // recipients per minute, paced kind
    let t = start;
    while (t <= start + duration) {
      const r = kind === 'slow' ? rng.int(3, 20) : rng.int(3, 8);
      times.push(t);
      rcpts.push(r);
      const gap = kind === 'slow' ? meanGap : Math.max(meanGap, r / pace);
      t += gap * rng.uniform(0.6, 1.4) * MINUTE;
    }
  }
  const k = kind === 'burst' ? KIND.burst : kind === 'slow' ? KIND.slow : KIND.paced;
  let recipients = 0;
  for (let j = 0; j < times.length; j++) {
    out.push(Math.floor(times[j]), p.index, rcpts[j], id, k);
    recipients += rcpts[j];
  }
  return { id, sender: p.index, login: p.login, kind, start: Math.floor(times[0]), end: Math.floor(times.at(-1)!), messages: times.length, recipients };
}

/** Generates the traffic for a seed: the same options always give the same events. */
export function generateTraffic(options: TrafficOptions = {}): Traffic {
  const o: Required<BaseTrafficOptions> = {
    seed: options.seed ?? 1,
    senders: options.senders ?? 2000,
    days: options.days ?? 14,
    compromiseShare: options.compromiseShare ?? 0.05,
    learnDays: options.learnDays ?? Math.floor((options.days ?? 14) / 2),
    start: options.start ?? DEFAULT_START,
  };
  if (o.days < 2 || o.learnDays < 1 || o.learnDays >= o.days) throw new Error(`need days ≥ 2 and 1 ≤ learnDays < days (days ${o.days}, learnDays ${o.learnDays})`);
  const start = o.start;
  const end = start + o.days * DAY;
  const learnEnd = start + o.learnDays * DAY;
  const senders: SenderProfile[] = [];
  for (let i = 0; i < o.senders; i++) senders.push(makeSender(o.seed, i));
  const cols = new Columns();
  for (const p of senders) senderTraffic(cols, o.seed, p, start, end, o.days);

  // Compromised senders: distinct, uniformly chosen; each compromise starts after the learning period.
  const pick = new Rng(subSeed(o.seed, 2, 0));
  const order = Array.from({ length: o.senders }, (_, i) => i);
  const count = Math.round(o.senders * o.compromiseShare);
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(pick.next() * (o.senders - i));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const compromises: Compromise[] = [];
  for (let c = 0; c < count; c++) compromises.push(injectCompromise(cols, o.seed, c, senders[order[c]], learnEnd, end));

  // Sort by time (ties: by sender, then by generation order) into fresh columns.
  const n = cols.n;
  const idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  const ct = cols.t;
  const cs = cols.sender;
  idx.sort((a, b) => ct[a] - ct[b] || cs[a] - cs[b] || a - b);
  const t = new Float64Array(n);
  const sender = new Int32Array(n);
  const recipients = new Int32Array(n);
  const compromise = new Int32Array(n);
  const kind = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const k = idx[i];
    t[i] = ct[k];
    sender[i] = cs[k];
    recipients[i] = cols.recipients[k];
    compromise[i] = cols.compromise[k];
    kind[i] = cols.kind[k];
  }
  const { rcptStart, rcptIds, nextOutside } = assignRecipients(o.seed, senders, t, sender, recipients, kind);
  const attacks: AttackOptions = {
    perKind: options.newPerKind ?? Math.round(count / 3),
    kinds: [...(options.newKinds ?? NEW_KINDS)],
    victimNetworkShare: options.victimNetworkShare ?? 0.2,
    inHoursShare: options.inHoursShare ?? 0.5,
  };

  // Traits (traits.ts), from streams of their own: the legitimate messages', then the legacy attackers'.
  const { traits, columns } = legitimateTraits(o.seed, senders, { n, t, sender, kind, compromise }, start, end);
  const byCompromise: number[][] = compromises.map(() => []);
  for (let i = 0; i < n; i++) if (compromise[i] >= 0) byCompromise[compromise[i]].push(i);
  const legacy: Traffic = { options: o, attacks, start, end, learnEnd, senders, logins: senders.map((s) => s.login), n, t, sender, recipients, compromise, kind, compromises, rcptStart, rcptIds, traits, ...columns };

  // The new kinds (attacks.ts), on top of the legacy traffic and for other victims.
  const injected = injectNewKinds(o.seed, senders, new Set(compromises.map((c) => c.sender)), legacy, count, nextOutside, start, learnEnd, end, attacks);
  const usual = usualBefore(legacy, [...compromises, ...injected.compromises]);
  for (const c of compromises) attackTraits(o.seed, traits, c, byCompromise[c.id], columns, usual.get(c.id)!, attacks.victimNetworkShare, REPLY_TO_SHARE[c.kind]);
  if (injected.events.length === 0) return legacy;
  return mergeInjected(legacy, injected.events, injected.compromises, usual);
}

/** Per compromise: what its victim used most (network, host, client) in its legitimate messages before the attack. */
function usualBefore(legacy: Traffic, compromises: Compromise[]): Map<number, import('./traits.ts').UsualTraits> {
  const victims = new Map<number, number[]>(compromises.map((c) => [c.sender, []]));
  for (let i = 0; i < legacy.n; i++) if (legacy.compromise[i] < 0) victims.get(legacy.sender[i])?.push(i);
  return new Map(compromises.map((c) => [c.id, usualTraits(legacy, victims.get(c.sender)!.filter((i) => legacy.t[i] < c.start), legacy.traits.senders[c.sender])]));
}

/** The legacy traffic with the new kinds' messages merged in by time (ties: by sender, legacy first), their traits drawn. */
function mergeInjected(legacy: Traffic, added: NewEvent[], newCompromises: Compromise[], usual: Map<number, import('./traits.ts').UsualTraits>): Traffic {
  const ev = added.map((e, k) => ({ e, k })).sort((a, b) => a.e.t - b.e.t || a.e.sender - b.e.sender || a.k - b.k).map((x) => x.e);
  const m = ev.length;
  const cols: TraitColumns = { net: new Int32Array(m), host: new Uint16Array(m), client: new Uint8Array(m), name: new Uint8Array(m), replyTo: new Uint8Array(m) };
  const byCompromise = new Map<number, number[]>(newCompromises.map((c) => [c.id, []]));
  ev.forEach((e, k) => byCompromise.get(e.compromise)!.push(k));
  for (const c of newCompromises) attackTraits(legacy.options.seed, legacy.traits, c, byCompromise.get(c.id)!, cols, usual.get(c.id)!, legacy.attacks.victimNetworkShare, REPLY_TO_SHARE[c.kind]);

  const n = legacy.n + m;
  let total = legacy.rcptIds.length;
  for (const e of ev) total += e.rcpt.length;
  const out: Traffic = {
    ...legacy,
    n,
    t: new Float64Array(n),
    sender: new Int32Array(n),
    recipients: new Int32Array(n),
    compromise: new Int32Array(n),
    kind: new Uint8Array(n),
    compromises: [...legacy.compromises, ...newCompromises],
    rcptStart: new Int32Array(n + 1),
    rcptIds: new Int32Array(total),
    net: new Int32Array(n),
    host: new Uint16Array(n),
    client: new Uint8Array(n),
    name: new Uint8Array(n),
    replyTo: new Uint8Array(n),
  };
  let a = 0;
  let b = 0;
  let at = 0;
  for (let i = 0; i < n; i++) {
    const takeLegacy = b >= m || (a < legacy.n && (legacy.t[a] < ev[b].t || (legacy.t[a] === ev[b].t && legacy.sender[a] <= ev[b].sender)));
    out.rcptStart[i] = at;
    if (takeLegacy) {
      out.t[i] = legacy.t[a];
      out.sender[i] = legacy.sender[a];
      out.recipients[i] = legacy.recipients[a];
      out.compromise[i] = legacy.compromise[a];
      out.kind[i] = legacy.kind[a];
      for (let j = legacy.rcptStart[a]; j < legacy.rcptStart[a + 1]; j++) out.rcptIds[at++] = legacy.rcptIds[j];
      out.net[i] = legacy.net[a];
      out.host[i] = legacy.host[a];
      out.client[i] = legacy.client[a];
      out.name[i] = legacy.name[a];
      out.replyTo[i] = legacy.replyTo[a];
      a++;
    } else {
      const e = ev[b];
      out.t[i] = e.t;
      out.sender[i] = e.sender;
      out.recipients[i] = e.rcpt.length;
      out.compromise[i] = e.compromise;
      out.kind[i] = e.kind;
      for (const r of e.rcpt) out.rcptIds[at++] = r;
      out.net[i] = cols.net[b];
      out.host[i] = cols.host[b];
      out.client[i] = cols.client[b];
      out.name[i] = cols.name[b];
      out.replyTo[i] = cols.replyTo[b];
      b++;
    }
  }
  out.rcptStart[n] = at;
  return out;
}

/** Outside addresses of an announcer's mailing list. */
const LIST_SIZE = 600;
/** Colleagues a sender writes to as a team. */
const TEAM_SIZE = 80;

/** A sender's correspondents as the recipient pass keeps them. */
interface Correspondents {
  rng: Rng;
  /** Share of an ordinary message's recipients that are new to the sender. */
  pNew: number;
  /** Past correspondents, the most frequent first. */
  contacts: number[];
  /** The team (colleagues' ids) and the announcer's list (outside ids), drawn when first needed. */
  team?: Int32Array;
  list?: Int32Array;
}

/**
 * Gives every message its recipients, in time order, from a sub-stream of its own (stream 5), so the
 * times, counts and kinds above are exactly what they were before recipients had identities.
 *
 * - **Ordinary mail** goes to past correspondents, the frequent ones more often (rank ⌊len·u²⌋), except
 *   that each recipient is someone new with the sender's probability `pNew`: lognormal across senders,
 *   median 10 % for most people, 25 % for heavy senders (sales and support write to new customers all
 *   the time), 50 % for role accounts; doubled on a busy day. Every sender starts with a past:
 *   20 + 2 × the daily volume correspondents, half of them colleagues.
 * - **Team messages** (10 or more recipients) and **team mailings** go to a random part of the sender's
 *   team of 80 colleagues; 5 % of them are someone new (a new hire, a guest).
 * - **Newsletters** go to a contiguous run of the announcer's list of 600 outside addresses, from a
 *   random place (a series continues where the last message stopped); 3 % of them are new subscribers.
 * - **Spam** goes to outside addresses the account never wrote to. (Phishing the victim's own address
 *   book is not simulated: the rate signals are what catches it.)
 */
function assignRecipients(seed: number, senders: SenderProfile[], t: Float64Array, sender: Int32Array, recipients: Int32Array, kind: Uint8Array): { rcptStart: Int32Array; rcptIds: Int32Array; nextOutside: number } {
  const n = t.length;
  const N = senders.length;
  let total = 0;
  for (let i = 0; i < n; i++) total += recipients[i];
  const rcptStart = new Int32Array(n + 1);
  const rcptIds = new Int32Array(total);
  let nextOutside = N;
  const fresh = () => nextOutside++;
  const colleague = (rng: Rng, self: number) => (N > 1 ? (self + 1 + Math.floor(rng.next() * (N - 1))) % N : fresh());
  const state: Correspondents[] = senders.map((p) => {
    const rng = new Rng(subSeed(seed, 5, p.index));
    const pNew = p.cls === 'role' ? Math.min(0.9, rng.lognormal(0.5, 0.3)) : p.cls === 'heavy' ? Math.min(0.7, rng.lognormal(0.25, 0.5)) : Math.min(0.5, rng.lognormal(0.1, 0.6));
    const contacts: number[] = [];
    const past = Math.round(20 + 2 * p.daily);
    for (let k = 0; k < past; k++) contacts.push(rng.chance(0.5) ? colleague(rng, p.index) : fresh());
    return { rng, pNew, contacts };
  });
  const lastNewsletter = new Int32Array(N).fill(-1);
  const listCursor = new Int32Array(N);
  let at = 0;
  for (let i = 0; i < n; i++) {
    rcptStart[i] = at;
    const s = sender[i];
    const c = state[s];
    const rng = c.rng;
    const r = recipients[i];
    const k = kind[i];
    const chosen = new Set<number>();
    const add = (id: number) => {
      if (chosen.has(id)) id = fresh();
      chosen.add(id);
      rcptIds[at++] = id;
    };
    if (k >= KIND.burst) {
      for (let j = 0; j < r; j++) add(fresh());
    } else if (k === KIND.newsletter) {
      if (!c.list) {
        c.list = new Int32Array(LIST_SIZE);
        for (let j = 0; j < LIST_SIZE; j++) c.list[j] = fresh();
      }
      // A message within a minute of the last newsletter continues the series; otherwise a new send.
      if (lastNewsletter[s] < 0 || t[i] - t[lastNewsletter[s]] > MINUTE) listCursor[s] = Math.floor(rng.next() * LIST_SIZE);
      lastNewsletter[s] = i;
      for (let j = 0; j < r; j++) {
        const slot = (listCursor[s] + j) % LIST_SIZE;
        if (rng.chance(0.03)) c.list[slot] = fresh();
        add(c.list[slot]);
      }
      listCursor[s] = (listCursor[s] + r) % LIST_SIZE;
    } else if (r >= 10 || k === KIND.team) {
      if (!c.team) {
        c.team = new Int32Array(TEAM_SIZE);
        for (let j = 0; j < TEAM_SIZE; j++) c.team[j] = colleague(rng, s);
      }
      // A random part of the team (a partial shuffle), with the odd newcomer.
      const members = Array.from(c.team);
      for (let j = 0; j < r; j++) {
        if (j < members.length) {
          const x = j + Math.floor(rng.next() * (members.length - j));
          [members[j], members[x]] = [members[x], members[j]];
          if (rng.chance(0.05)) {
            const id = fresh();
            c.team[c.team.indexOf(members[j])] = id;
            add(id);
          } else add(members[j]);
        } else add(fresh());
      }
    } else {
      const pNew = k === KIND.busy ? Math.min(0.9, 2 * c.pNew) : c.pNew;
      for (let j = 0; j < r; j++) {
        if (c.contacts.length === 0 || rng.chance(pNew)) {
          const id = fresh();
          c.contacts.push(id);
          add(id);
        } else {
          // Another frequent correspondent when this one is already on the message (a few tries).
          let id = -1;
          for (let tries = 0; tries < 5 && (id < 0 || chosen.has(id)); tries++) {
            const u = rng.next();
            id = c.contacts[Math.floor(c.contacts.length * u * u)];
          }
          add(id);
        }
      }
    }
  }
  rcptStart[n] = at;
  return { rcptStart, rcptIds, nextOutside };
}

/** What {@link summarize} tells. */
export interface TrafficSummary {
  senders: number;
  days: number;
  learnDays: number;
  seed: number;
  messages: number;
  recipients: number;
  legitimate: { messages: number; recipients: number };
  /** Legitimate messages by recipient count, % (`1`, `2-3`, `4-9`, `10-19`, `20-40`, `41+`). */
  recipientShare: Record<string, number>;
  byKind: Record<string, { messages: number; recipients: number }>;
  classes: Record<string, number>;
  /** Working-day messages per sender: percentiles of the mean daily volume. */
  dailyVolume: { p50: number; p90: number; p99: number; max: number };
  sendersOver100: number;
  sendersOver300: number;
  announcers: number;
  compromises: { total: number; byKind: Record<string, number>; messages: number; recipients: number };
}

/** Counts of the traffic, for the report. */
export function summarize(tr: Traffic): TrafficSummary {
  const byKind: Record<string, { messages: number; recipients: number }> = {};
  let recipients = 0;
  let legitM = 0;
  let legitR = 0;
  const RCPT_BINS = ['1', '2-3', '4-9', '10-19', '20-40', '41+'];
  const bins = [0, 0, 0, 0, 0, 0];
  for (let i = 0; i < tr.n; i++) {
    const name = KIND_NAMES[tr.kind[i]];
    const k = (byKind[name] ??= { messages: 0, recipients: 0 });
    k.messages++;
    k.recipients += tr.recipients[i];
    recipients += tr.recipients[i];
    if (tr.compromise[i] < 0) {
      legitM++;
      legitR += tr.recipients[i];
      const r = tr.recipients[i];
      bins[r === 1 ? 0 : r <= 3 ? 1 : r <= 9 ? 2 : r <= 19 ? 3 : r <= 40 ? 4 : 5]++;
    }
  }
  const classes: Record<string, number> = {};
  for (const s of tr.senders) classes[s.cls] = (classes[s.cls] ?? 0) + 1;
  const daily = tr.senders.map((s) => s.daily).sort((a, b) => a - b);
  const q = (p: number) => Math.round(daily[Math.min(daily.length - 1, Math.floor(p * daily.length))] ?? 0);
  const cByKind: Record<string, number> = {};
  for (const c of tr.compromises) cByKind[c.kind] = (cByKind[c.kind] ?? 0) + 1;
  return {
    senders: tr.senders.length,
    days: tr.options.days,
    learnDays: tr.options.learnDays,
    seed: tr.options.seed,
    messages: tr.n,
    recipients,
    legitimate: { messages: legitM, recipients: legitR },
    recipientShare: Object.fromEntries(RCPT_BINS.map((b, j) => [b, legitM === 0 ? 0 : (100 * bins[j]) / legitM])),
    byKind,
    classes,
    dailyVolume: { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: Math.round(daily.at(-1) ?? 0) },
    sendersOver100: daily.filter((d) => d >= 100).length,
    sendersOver300: daily.filter((d) => d >= 300).length,
    announcers: tr.senders.filter((s) => s.announcer).length,
    compromises: {
      total: tr.compromises.length,
      byKind: cByKind,
      messages: tr.compromises.reduce((a, c) => a + c.messages, 0),
      recipients: tr.compromises.reduce((a, c) => a + c.recipients, 0),
    },
  };
}
