/**
 * From a learned profile to a bound: the estimators (EWMA mean and deviation, or the median and the
 * MAD of the last active buckets), the prior that stands in for a new subject's missing history, and
 * the decision for one timeframe. Pure functions: the tests feed known series and read known bounds.
 * @module
 */

/** What the store learned for one timeframe (see the store's `profileUpdate`). */
export interface LearnedTimeframe {
  /** Window length, minutes. */
  minutes: number;
  /** Sliding-window count now, this message included. */
  count: number;
  /** Active buckets learned. */
  n: number;
  /** EW mean of active-bucket counts. */
  mean: number;
  /** EW variance of active-bucket counts. */
  variance: number;
  /** The last active-bucket counts, oldest first. */
  history: readonly number[];
}

/** How a bound is made. */
export interface BoundSettings {
  /** `ewma`: mean + k·sd; `robust`: median + k·1.4826·MAD (Iglewicz & Hoaglin's modified z-score). */
  estimator: 'ewma' | 'robust';
  /** Deviations above the center. */
  k: number;
  /** Multiplies the bound (per policy). */
  factor: number;
  /** Never act at or below this count. */
  floor: number;
  /** Active buckets needed before acting. */
  minHistory: number;
  /** What a subject with little history is assumed to do, blended in with `weight` pseudo-buckets. */
  prior: { mean: number; sd: number; weight: number };
}

/** The decision for one timeframe. */
export interface TimeframeDecision {
  /** Window length, minutes. */
  minutes: number;
  /** The count now. */
  count: number;
  /** The learned center ("normal"), prior blended in. */
  center: number;
  /** The learned spread, prior blended in. */
  spread: number;
  /** The bound, or null while the history is too short to act. */
  bound: number | null;
  /** Active buckets learned. */
  n: number;
  /** Over the bound (and above the floor, with enough history). */
  over: boolean;
}

/** The median of a list. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The median absolute deviation from the median. */
export function mad(xs: readonly number[]): number {
  const m = median(xs);
  return median(xs.map((x) => Math.abs(x - m)));
}

/** Center and spread of what was learned, before the prior. */
export function estimate(t: LearnedTimeframe, estimator: BoundSettings['estimator']): { center: number; spread: number } {
  if (t.n === 0) return { center: 0, spread: 0 };
  if (estimator === 'ewma') return { center: t.mean, spread: Math.sqrt(Math.max(0, t.variance)) };
  // 1.4826 makes the MAD a consistent estimate of the standard deviation for normal data. A MAD of
  // 0 (most buckets alike) would make any change an outlier: the EW deviation stands in then.
  const spread = 1.4826 * mad(t.history);
  return { center: median(t.history), spread: spread > 0 ? spread : Math.sqrt(Math.max(0, t.variance)) };
}

/** Decides one timeframe. */
export function decide(t: LearnedTimeframe, s: BoundSettings): TimeframeDecision {
  const e = estimate(t, s.estimator);
  // The prior counts as `weight` buckets: it dominates a new subject and fades as history builds up.
  const w = s.prior.weight;
  const n = Math.min(t.n, s.estimator === 'robust' ? t.history.length : t.n);
  const center = n + w > 0 ? (n * e.center + w * s.prior.mean) / (n + w) : 0;
  const spread = n + w > 0 ? Math.sqrt((n * e.spread ** 2 + w * s.prior.sd ** 2) / (n + w)) : 0;
  // A spread below one recipient says more about small numbers than about the subject.
  const bound = t.n >= s.minHistory ? Math.max(s.floor, s.factor * (center + s.k * Math.max(spread, 1))) : null;
  return { minutes: t.minutes, count: t.count, center, spread, bound, n: t.n, over: bound !== null && t.count > bound };
}

/**
 * A bound in words: whole from 10, one decimal from 1, two significant digits below (a bound the signals
 * divided by 680 is 0.029, not 0: `4 recipients, bound 0` would read as a bug).
 */
export function boundWords(x: number): string {
  if (x >= 10) return String(Math.round(x));
  if (x >= 1 || x === 0) return String(Math.round(x * 10) / 10);
  return String(Number(x.toPrecision(2)));
}

/** `37 recipients in 5 min, learned normal 4 ± 2, bound 12` — the trace's words for one timeframe. */
export function explain(d: TimeframeDecision, unit: string): string {
  const r = (x: number) => (x >= 10 ? Math.round(x) : Math.round(x * 10) / 10);
  const learned = `learned normal ${r(d.center)} ± ${r(d.spread)}`;
  return `${d.count} ${unit} in ${d.minutes} min, ${learned}, ${d.bound === null ? `not acting before ${d.n < 1 ? 'any' : 'more'} history (${d.n} buckets)` : `bound ${boundWords(d.bound)}`}`;
}
