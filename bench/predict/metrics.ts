/**
 * Metrics of the predict evaluation, and the fixed-limit baseline.
 *
 * - A compromise is **detected** when any message of its sender sent in its window (first spam
 *   message → last) is flagged; time to detection = first such flag − start.
 * - A **false positive** is a legitimate sender-day with a flagged message: a message of a sender not
 *   under compromise at that time (nor within `graceMs` after one ended: the windows still hold the
 *   spam then). Per evaluated day (the learning days excluded), flagged legitimate senders ÷ senders
 *   active that day; the report gives the mean over days and the total.
 * - The **fixed limit** is a per-sender exact sliding window — recipients in the last T minutes, this
 *   message included, over the limit → flagged — like the ratelimit plugin's exact windows, computed
 *   from the events directly. Its limits are tuned on the same traffic to a target false-positive
 *   rate: the smallest limit whose rate is at most the target.
 * @module
 */
import { ALL_KINDS, DAY, KIND_NAMES, MINUTE, type CompromiseKind, type Traffic } from './traffic.ts';

/** Detection and false positives of one detector. */
export interface Evaluation {
  detected: number;
  compromises: number;
  /** Detected share, %. */
  detectedPct: number;
  /** Times to detection of the detected compromises, minutes. */
  medianTtd: number | null;
  p95Ttd: number | null;
  byKind: Record<string, { detected: number; total: number; medianTtd: number | null }>;
  /** Mean over evaluated days of flagged legitimate senders ÷ active senders, %. */
  fpPerDayPct: number;
  /** Flagged legitimate sender-days over the evaluated days. */
  fpTotal: number;
  /** The same over the learning days (for information). */
  fpLearningPerDayPct: number;
  fpLearningTotal: number;
  /** Flagged legitimate messages (evaluated days). */
  fpMessages: number;
  /** Flagged legitimate sender-days (evaluated days) by what their first flagged message was, and by sender class. */
  fpCauses: Record<string, number>;
  fpClasses: Record<string, number>;
  /** Of those, how many start with a single message of more than {@link LARGE_MESSAGE} recipients. */
  fpLargeMessage: number;
  /** Per compromise: time to detection, minutes, or null. */
  perCompromise: { id: number; kind: CompromiseKind; ttd: number | null }[];
}

/** A "large" single message for the false-positive causes: more recipients than the plugin's default 1-minute floor. */
export const LARGE_MESSAGE = 20;

/** Per-event facts shared by every evaluation of one traffic. */
export interface EvalIndex {
  traffic: Traffic;
  graceMs: number;
  /** Day of each event (0-based). */
  day: Int32Array;
  /** 1 when the event is legitimate for false-positive counting (sender not under compromise, nor in the grace after). */
  legit: Uint8Array;
  /** Active senders per day. */
  active: Int32Array;
  /** Events per sender, in time order: offsets into `bySender`. */
  offsets: Int32Array;
  bySender: Int32Array;
}

/** Builds the index: days, legitimacy, active senders, events per sender. */
export function buildIndex(traffic: Traffic, graceMs: number): EvalIndex {
  const { n, t, sender } = traffic;
  const days = traffic.options.days;
  const compStart = new Float64Array(traffic.senders.length).fill(Infinity);
  const compEnd = new Float64Array(traffic.senders.length).fill(-Infinity);
  for (const c of traffic.compromises) {
    compStart[c.sender] = c.start;
    compEnd[c.sender] = c.end + graceMs;
  }
  const day = new Int32Array(n);
  const legit = new Uint8Array(n);
  const active = new Int32Array(days);
  const lastDay = new Int32Array(traffic.senders.length).fill(-1);
  const counts = new Int32Array(traffic.senders.length + 1);
  for (let i = 0; i < n; i++) {
    const s = sender[i];
    const d = Math.min(days - 1, Math.floor((t[i] - traffic.start) / DAY));
    day[i] = d;
    legit[i] = t[i] >= compStart[s] && t[i] <= compEnd[s] ? 0 : 1;
    if (lastDay[s] !== d) {
      lastDay[s] = d;
      active[d]++;
    }
    counts[s + 1]++;
  }
  const offsets = new Int32Array(traffic.senders.length + 1);
  for (let s = 0; s < traffic.senders.length; s++) offsets[s + 1] = offsets[s] + counts[s + 1];
  const fill = offsets.slice(0, traffic.senders.length);
  const bySender = new Int32Array(n);
  for (let i = 0; i < n; i++) bySender[fill[sender[i]]++] = i;
  return { traffic, graceMs, day, legit, active, offsets, bySender };
}

/** The q-quantile (0..1) of sorted numbers (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** First flagged event of each compromise's sender within its window. */
function detections(ix: EvalIndex, isFlagged: (i: number) => boolean): Evaluation['perCompromise'] {
  const { traffic, offsets, bySender } = ix;
  return traffic.compromises.map((c) => {
    let lo = offsets[c.sender];
    let hi = offsets[c.sender + 1];
    // First event of the sender at or after the start.
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (traffic.t[bySender[mid]] < c.start) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; k < offsets[c.sender + 1]; k++) {
      const i = bySender[k];
      if (traffic.t[i] > c.end) break;
      if (isFlagged(i)) return { id: c.id, kind: c.kind, ttd: (traffic.t[i] - c.start) / MINUTE };
    }
    return { id: c.id, kind: c.kind, ttd: null };
  });
}

/** Evaluates a detector from its per-event flags. */
export function evaluate(ix: EvalIndex, flagged: Uint8Array): Evaluation {
  const { traffic, day, legit, active } = ix;
  const days = traffic.options.days;
  const learnDays = traffic.options.learnDays;
  const per = detections(ix, (i) => flagged[i] === 1);
  // Flagged legitimate sender-days.
  const seen = new Set<number>();
  const fpDay = new Int32Array(days);
  let fpMessages = 0;
  const fpCauses: Record<string, number> = {};
  const fpClasses: Record<string, number> = {};
  let fpLargeMessage = 0;
  for (let i = 0; i < traffic.n; i++) {
    if (flagged[i] !== 1 || legit[i] !== 1) continue;
    if (day[i] >= learnDays) fpMessages++;
    const key = day[i] * traffic.senders.length + traffic.sender[i];
    if (seen.has(key)) continue;
    seen.add(key);
    fpDay[day[i]]++;
    if (day[i] >= learnDays) {
      const cause = KIND_NAMES[traffic.kind[i]];
      fpCauses[cause] = (fpCauses[cause] ?? 0) + 1;
      const cls = traffic.senders[traffic.sender[i]].cls;
      fpClasses[cls] = (fpClasses[cls] ?? 0) + 1;
      if (traffic.recipients[i] > LARGE_MESSAGE) fpLargeMessage++;
    }
  }
  return { ...summarizeEvaluation(traffic, per, fpDay, active, learnDays, days, fpMessages), fpCauses, fpClasses, fpLargeMessage };
}

function summarizeEvaluation(traffic: Traffic, per: Evaluation['perCompromise'], fpDay: Int32Array, active: Int32Array, learnDays: number, days: number, fpMessages: number): Omit<Evaluation, 'fpCauses' | 'fpClasses' | 'fpLargeMessage'> {
  const ttds = per.filter((p) => p.ttd !== null).map((p) => p.ttd!).sort((a, b) => a - b);
  const byKind: Evaluation['byKind'] = {};
  for (const kind of ALL_KINDS) {
    const of = per.filter((p) => p.kind === kind);
    if (of.length === 0) continue;
    const k = of.filter((p) => p.ttd !== null).map((p) => p.ttd!).sort((a, b) => a - b);
    byKind[kind] = { detected: k.length, total: of.length, medianTtd: quantile(k, 0.5) };
  }
  const pct = (from: number, to: number) => {
    let sum = 0;
    let count = 0;
    for (let d = from; d < to; d++) {
      if (active[d] === 0) continue;
      sum += fpDay[d] / active[d];
      count++;
    }
    return count === 0 ? 0 : (100 * sum) / count;
  };
  const total = (from: number, to: number) => {
    let s = 0;
    for (let d = from; d < to; d++) s += fpDay[d];
    return s;
  };
  return {
    detected: ttds.length,
    compromises: traffic.compromises.length,
    detectedPct: traffic.compromises.length === 0 ? 0 : (100 * ttds.length) / traffic.compromises.length,
    medianTtd: quantile(ttds, 0.5),
    p95Ttd: quantile(ttds, 0.95),
    byKind,
    fpPerDayPct: pct(learnDays, days),
    fpTotal: total(learnDays, days),
    fpLearningPerDayPct: pct(0, learnDays),
    fpLearningTotal: total(0, learnDays),
    fpMessages,
    perCompromise: per,
  };
}

// ---------------------------------------------------------------------------------------------
// The fixed-limit baseline.

/**
 * Per event and timeframe: the amounts (default: recipients) of its sender in the last T minutes, this
 * message included.
 */
export function windowSums(ix: EvalIndex, minutes: readonly number[], amounts: Int32Array = ix.traffic.recipients): Int32Array[] {
  const { traffic, offsets, bySender } = ix;
  return minutes.map((m) => {
    const w = new Int32Array(traffic.n);
    const span = m * MINUTE;
    for (let s = 0; s < traffic.senders.length; s++) {
      let sum = 0;
      let tail = offsets[s];
      for (let k = offsets[s]; k < offsets[s + 1]; k++) {
        const i = bySender[k];
        sum += amounts[i];
        while (traffic.t[bySender[tail]] <= traffic.t[i] - span) sum -= amounts[bySender[tail++]];
        w[i] = sum;
      }
    }
    return w;
  });
}

/**
 * Per event: its recipients new to the sender — not among the `keep` distinct recipients it wrote to
 * most recently (the plugin's recipient memory, without the hashing) — leaving out colleagues (the
 * company's domain, as `internalDomains` does). For the fixed new-recipient baseline.
 */
export function newRecipientCounts(traffic: Traffic, keep: number): Int32Array {
  const out = new Int32Array(traffic.n);
  const memory: Map<number, true>[] = traffic.senders.map(() => new Map());
  const colleagues = traffic.senders.length;
  for (let i = 0; i < traffic.n; i++) {
    const m = memory[traffic.sender[i]];
    let fresh = 0;
    for (let j = traffic.rcptStart[i]; j < traffic.rcptStart[i + 1]; j++) {
      const id = traffic.rcptIds[j];
      // Most recent last: a known recipient moves to the end, the oldest beyond keep is forgotten.
      if (m.delete(id)) m.set(id, true);
      else {
        m.set(id, true);
        if (id >= colleagues) fresh++;
        if (m.size > keep) m.delete(m.keys().next().value!);
      }
    }
    out[i] = fresh;
  }
  return out;
}

/** A fixed limit: recipients per T minutes, per timeframe (absent: not limited). */
export interface FixedLimit {
  label: string;
  /** minutes → limit (flagged when the window holds more). */
  limits: Record<number, number>;
}

/** The legitimate sender-days of the evaluated days, with the largest window sum of each. */
interface SenderDays {
  day: Int32Array;
  /** Per timeframe: the largest sum over the sender-day's legitimate messages. */
  max: Int32Array[];
}

function senderDays(ix: EvalIndex, sums: Int32Array[]): SenderDays {
  const { traffic, day, legit } = ix;
  const learnDays = traffic.options.learnDays;
  const where = new Map<number, number>();
  const days: number[] = [];
  const max: number[][] = sums.map(() => []);
  for (let i = 0; i < traffic.n; i++) {
    if (legit[i] !== 1 || day[i] < learnDays) continue;
    const key = day[i] * traffic.senders.length + traffic.sender[i];
    let e = where.get(key);
    if (e === undefined) {
      where.set(key, (e = days.length));
      days.push(day[i]);
      for (const m of max) m.push(0);
    }
    for (let j = 0; j < sums.length; j++) if (sums[j][i] > max[j][e]) max[j][e] = sums[j][i];
  }
  return { day: Int32Array.from(days), max: max.map((m) => Int32Array.from(m)) };
}

/** False-positive rate (mean over evaluated days, %) of "flagged when score > threshold". */
function fpRate(ix: EvalIndex, sd: SenderDays, score: (e: number) => number, threshold: number): number {
  const { traffic, active } = ix;
  const fp = new Int32Array(traffic.options.days);
  for (let e = 0; e < sd.day.length; e++) if (score(e) > threshold) fp[sd.day[e]]++;
  let sum = 0;
  let count = 0;
  for (let d = traffic.options.learnDays; d < traffic.options.days; d++) {
    if (active[d] === 0) continue;
    sum += fp[d] / active[d];
    count++;
  }
  return count === 0 ? 0 : (100 * sum) / count;
}

/** The smallest threshold among the candidates (ascending) whose rate is at most the target. */
function tune(ix: EvalIndex, sd: SenderDays, score: (e: number) => number, candidates: number[], targetPct: number): number {
  let lo = 0;
  let hi = candidates.length - 1; // the largest candidate flags nothing
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (fpRate(ix, sd, score, candidates[mid]) <= targetPct + 1e-12) hi = mid;
    else lo = mid + 1;
  }
  return candidates[lo];
}

/** The flags a fixed limit raises. */
export function fixedFlags(ix: EvalIndex, minutes: readonly number[], sums: Int32Array[], limit: FixedLimit): Uint8Array {
  const f = new Uint8Array(ix.traffic.n);
  for (let j = 0; j < minutes.length; j++) {
    const l = limit.limits[minutes[j]];
    if (l === undefined) continue;
    const w = sums[j];
    for (let i = 0; i < f.length; i++) if (w[i] > l) f[i] = 1;
  }
  return f;
}

/**
 * Fixed limits tuned to a target false-positive rate (% of active senders per day): one limit per
 * single timeframe, and all timeframes together with one scale over the single-timeframe limits.
 */
export function tuneFixedLimits(ix: EvalIndex, minutes: readonly number[], sums: Int32Array[], targetPct: number): FixedLimit[] {
  const sd = senderDays(ix, sums);
  const out: FixedLimit[] = [];
  const single: number[] = [];
  for (let j = 0; j < minutes.length; j++) {
    const values = [...new Set([0, ...sd.max[j]])].sort((a, b) => a - b);
    const l = tune(ix, sd, (e) => sd.max[j][e], values, targetPct);
    single.push(l);
    out.push({ label: `fixed ${minutes[j]} min`, limits: { [minutes[j]]: l } });
  }
  if (minutes.length > 1) {
    // Together: flagged when any window is over s × its single limit; s tuned to the target.
    const base = single.map((l) => Math.max(1, l));
    const score = (e: number) => {
      let x = 0;
      for (let j = 0; j < minutes.length; j++) x = Math.max(x, sd.max[j][e] / base[j]);
      return x;
    };
    const values = [0];
    for (let e = 0; e < sd.day.length; e++) values.push(score(e));
    const sorted = [...new Set(values)].sort((a, b) => a - b);
    const s = tune(ix, sd, score, sorted, targetPct);
    const limits: Record<number, number> = {};
    // Window sums are integers: "sum > s × base" is "sum > ⌊s × base⌋".
    for (let j = 0; j < minutes.length; j++) limits[minutes[j]] = Math.floor(s * base[j] + 1e-9);
    out.push({ label: `fixed ${minutes.join('/')} min`, limits });
  }
  return out;
}

/** A limit set in words: `1m>27 5m>60`. */
export function describeLimit(l: FixedLimit): string {
  return Object.entries(l.limits)
    .map(([m, v]) => `${v}/${m}m`)
    .join(' ');
}
