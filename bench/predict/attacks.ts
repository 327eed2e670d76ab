/**
 * The attack kinds of issue 23: the quiet takeovers that look like their owner. Each is injected into
 * the legacy traffic for its own victims — senders distinct from the legacy compromises' and from each
 * other (stream 8) — with its own draws (stream 9, per kind and incident), after the legacy traffic and
 * its recipients are complete. The legacy events, their recipients and the legacy compromises are
 * therefore exactly what they are without these kinds; outside addresses these attacks invent are
 * numbered after the legacy traffic's last.
 *
 * | kind | pattern | shape |
 * |---|---|---|
 * | `addressbook` | phishing the victim's own correspondents | 30–250 addresses from the victim's sent mail, one or two a message (55 %) or 5–20 in Bcc, over 0.5–3 h |
 * | `lowslow` | a working day at 1.5–3× the owner's hourly volume, to new outside addresses | 8–10 h, messages like the owner's (its recipients per message), Poisson in time |
 * | `internal` | spear-phishing colleagues | 20–150 colleagues (three quarters never written to), 1–3 a message (60 %) or 5–15, over 0.5–4 h |
 * | `hijack` | replies into the owner's recent threads | 5–30 replies to the recipients of the owner's messages of the last 7 days (1–4 recipients), over 2–8 h |
 *
 * bench/predict/README.md ("The quiet attacks of issue 23") gives the reasons.
 * @module
 */
import { Rng, subSeed } from './rng.ts';
import type { Compromise, NewKind, SenderProfile } from './traffic.ts';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Settings of the new kinds. */
export interface AttackOptions {
  /** Incidents per new kind (0: none, the legacy traffic exactly). */
  perKind: number;
  /** The new kinds injected. */
  kinds: NewKind[];
  /** Share of all attacks (legacy kinds included) sent from the victim's usual network with its client (malware on its PC, or the attacker in the webmail). */
  victimNetworkShare: number;
  /** Share of new-kind attacks placed in the victim's working hours on a working day (the others start at any time). */
  inHoursShare: number;
}

/** Share of attacks whose messages carry a Reply-To to an outside address, per kind. */
export const REPLY_TO_SHARE: Record<string, number> = { burst: 0.3, slow: 0.3, paced: 0.3, addressbook: 0.25, lowslow: 0.3, internal: 0.2, hijack: 0.5 };

/** Event codes of the new kinds (see KIND in traffic.ts). */
export const NEW_KIND_CODES: Record<NewKind, number> = { addressbook: 13, lowslow: 14, internal: 15, hijack: 16 };

/** One injected message. */
export interface NewEvent {
  t: number;
  sender: number;
  kind: number;
  compromise: number;
  rcpt: number[];
}

/** What the injection reads of the legacy traffic (sorted by time). */
export interface LegacyView {
  n: number;
  t: Float64Array;
  sender: Int32Array;
  kind: Uint8Array;
  compromise: Int32Array;
  rcptStart: Int32Array;
  rcptIds: Int32Array;
}

/** An attack's start: in the victim's working hours on a working day (a share of them), else uniform over the attack period. */
function placeStart(rng: Rng, p: SenderProfile, duration: number, start: number, learnEnd: number, end: number, inHours: boolean): number {
  const latest = end - duration - MINUTE;
  if (inHours) {
    const span = p.workEnd - p.workStart;
    const firstDay = Math.floor((learnEnd - start) / DAY);
    const lastDay = Math.ceil((end - start) / DAY);
    for (let tries = 0; tries < 100; tries++) {
      const day = rng.int(firstDay, lastDay);
      if (((day % 7) + 7) % 7 >= 5) continue;
      const offset = duration / HOUR >= span ? 0 : rng.uniform(0, span - duration / HOUR);
      const s = start + day * DAY - p.tz * HOUR + (p.workStart + offset) * HOUR + MINUTE;
      if (s >= learnEnd && s <= latest) return s;
    }
  }
  return rng.uniform(learnEnd, latest);
}

/** `count` times: the first at `t0`, the others uniform over `duration`, sorted. */
function spread(rng: Rng, t0: number, duration: number, count: number): number[] {
  const times = [t0];
  for (let k = 1; k < count; k++) times.push(t0 + rng.next() * duration);
  return times.sort((a, b) => a - b);
}

/** Picks k distinct items uniformly (a partial shuffle of a copy). */
function sample<T>(rng: Rng, items: readonly T[], k: number): T[] {
  const a = [...items];
  const m = Math.min(k, a.length);
  for (let j = 0; j < m; j++) {
    const x = j + Math.floor(rng.next() * (a.length - j));
    [a[j], a[x]] = [a[x], a[j]];
  }
  return a.slice(0, m);
}

/** Splits recipients into messages of `size()` recipients each. */
function batches(ids: number[], size: () => number): number[][] {
  const out: number[][] = [];
  for (let j = 0; j < ids.length; ) {
    const m = Math.max(1, size());
    out.push(ids.slice(j, j + m));
    j += m;
  }
  return out;
}

/**
 * Injects `perKind` incidents of each new kind. `legacyVictims` are excluded; compromise ids start at
 * `firstId`, new outside addresses at `firstOutside`.
 */
export function injectNewKinds(seed: number, senders: SenderProfile[], legacyVictims: ReadonlySet<number>, legacy: LegacyView, firstId: number, firstOutside: number, start: number, learnEnd: number, end: number, o: AttackOptions): { events: NewEvent[]; compromises: Compromise[] } {
  const events: NewEvent[] = [];
  const compromises: Compromise[] = [];
  if (o.perKind <= 0 || o.kinds.length === 0) return { events, compromises };
  const N = senders.length;
  // Victims: distinct, uniform among the senders the legacy compromises left.
  const candidates: number[] = [];
  for (let s = 0; s < N; s++) if (!legacyVictims.has(s)) candidates.push(s);
  const pick = new Rng(subSeed(seed, 8, 0));
  const total = Math.min(candidates.length, o.perKind * o.kinds.length);
  for (let j = 0; j < total; j++) {
    const x = j + Math.floor(pick.next() * (candidates.length - j));
    [candidates[j], candidates[x]] = [candidates[x], candidates[j]];
  }
  const victims = candidates.slice(0, total);
  // Their legacy messages, in time order.
  const history = new Map<number, number[]>(victims.map((v) => [v, []]));
  for (let i = 0; i < legacy.n; i++) history.get(legacy.sender[i])?.push(i);
  const rcptOf = (i: number) => Array.from(legacy.rcptIds.subarray(legacy.rcptStart[i], legacy.rcptStart[i + 1]));
  let nextOutside = firstOutside;

  for (let j = 0; j < total; j++) {
    const kindIndex = Math.floor(j / o.perKind);
    const kind = o.kinds[kindIndex];
    const s = victims[j];
    const p = senders[s];
    const id = firstId + j;
    const rng = new Rng(subSeed(seed, 9, (NEW_KIND_CODES[kind] << 16) + (j % o.perKind)));
    const inHours = rng.chance(o.inHoursShare);
    const messages: { t: number; rcpt: number[] }[] = [];
    // The victim's sent mail before the attack: correspondents (most frequent first) and recent threads.
    const before = (t0: number) => (history.get(s) ?? []).filter((i) => legacy.t[i] < t0 && legacy.compromise[i] < 0);
    const addressBook = (t0: number) => {
      const count = new Map<number, number>();
      for (const i of before(t0)) for (const r of rcptOf(i)) count.set(r, (count.get(r) ?? 0) + 1);
      return [...count.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).map(([r]) => r);
    };
    if (kind === 'addressbook') {
      const duration = rng.uniform(0.5, 3) * HOUR;
      const t0 = placeStart(rng, p, duration, start, learnEnd, end, inHours);
      const book = addressBook(t0);
      const targets = sample(rng, book.length > 0 ? book : [(s + 1) % N], rng.int(30, 250));
      const single = rng.chance(0.55);
      const groups = batches(targets, () => (single ? (rng.chance(0.8) ? 1 : 2) : rng.int(5, 20)));
      const times = spread(rng, t0, duration, groups.length);
      groups.forEach((g, k) => messages.push({ t: times[k], rcpt: g }));
    } else if (kind === 'lowslow') {
      const duration = rng.uniform(8, 10) * HOUR;
      const t0 = placeStart(rng, p, duration, start, learnEnd, end, inHours);
      const hourly = p.daily / Math.max(1, p.workEnd - p.workStart);
      const rate = Math.max(1, rng.uniform(1.5, 3) * hourly); // messages an hour
      for (let t = t0; t <= t0 + duration; t += rng.exp(HOUR / rate)) {
        const r = 1 + Math.min(8, rng.geometric(p.extraRcpt));
        const rcpt: number[] = [];
        for (let k = 0; k < r; k++) rcpt.push(nextOutside++);
        messages.push({ t, rcpt });
      }
    } else if (kind === 'internal') {
      const duration = rng.uniform(0.5, 4) * HOUR;
      const t0 = placeStart(rng, p, duration, start, learnEnd, end, inHours);
      const known = addressBook(t0).filter((r) => r < N);
      const knownSet = new Set(known);
      const count = rng.int(20, 150);
      const fromKnown = sample(rng, known, Math.round(0.25 * count));
      const strangers: number[] = [];
      const taken = new Set<number>([s, ...fromKnown]);
      // Colleagues never written to, from the directory; known ones when the company is too small.
      for (let tries = 0; strangers.length < count - fromKnown.length && tries < 20 * count; tries++) {
        const c = rng.int(0, N - 1);
        if (taken.has(c) || (knownSet.has(c) && tries < 10 * count)) continue;
        taken.add(c);
        strangers.push(c);
      }
      const targets = sample(rng, [...fromKnown, ...strangers], fromKnown.length + strangers.length);
      const single = rng.chance(0.6);
      const groups = batches(targets, () => (single ? rng.int(1, 3) : rng.int(5, 15)));
      const times = spread(rng, t0, duration, groups.length);
      groups.forEach((g, k) => messages.push({ t: times[k], rcpt: g }));
    } else {
      // hijack
      const duration = rng.uniform(2, 8) * HOUR;
      const t0 = placeStart(rng, p, duration, start, learnEnd, end, inHours);
      const sent = before(t0).filter((i) => legacy.rcptStart[i + 1] - legacy.rcptStart[i] <= 4 && legacy.kind[i] <= 1);
      let threads = sent.filter((i) => legacy.t[i] >= t0 - 7 * DAY);
      if (threads.length === 0) threads = sent;
      const replies = rng.int(5, 30);
      const times = spread(rng, t0, duration, replies);
      // Threads with someone outside the company first (supplier and customer threads: invoice fraud), three to one.
      const weights = threads.map((i) => (rcptOf(i).some((r) => r >= N) ? 3 : 1));
      const pool = threads.map((_, k) => k);
      for (let k = 0; k < replies; k++) {
        let rcpt: number[];
        if (threads.length === 0) rcpt = [(s + 1) % N];
        else {
          if (pool.length === 0) pool.push(...threads.map((_, x) => x)); // every thread used: again
          const w = pool.map((x) => weights[x]);
          const at = rng.weighted(w);
          rcpt = rcptOf(threads[pool[at]]);
          pool.splice(at, 1);
        }
        messages.push({ t: times[k], rcpt });
      }
    }
    const code = NEW_KIND_CODES[kind];
    let recipients = 0;
    for (const m of messages) {
      events.push({ t: Math.floor(m.t), sender: s, kind: code, compromise: id, rcpt: m.rcpt });
      recipients += m.rcpt.length;
    }
    compromises.push({ id, sender: s, login: p.login, kind, start: Math.floor(messages[0].t), end: Math.floor(messages.at(-1)!.t), messages: messages.length, recipients });
  }
  return { events, compromises };
}
