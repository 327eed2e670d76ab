/**
 * Rate profiles' requests and results: what `profileUpdate` takes and gives.
 * @module
 */
/**
 * One subject's rate-profile update, or inspection ({@link profileUpdate}): the subject's
 * traffic is counted per minute, and per timeframe of T minutes the counts of its active (non-empty)
 * T-minute buckets are learned as an exponentially weighted mean and variance, and a short history.
 */
export interface ProfileRequest {
  /** One store key (a hash) per subject, e.g. `predict:saslUser:alice` (namespaced by the caller, prefixed by the store). */
  key: string;
  /** Units added to the current minute (an integer ≥ 0, e.g. a message's recipients); 0 counts nothing but still learns closed buckets. */
  amount: number;
  /** Window lengths, minutes: ascending, distinct integers 1..1440, e.g. `[1, 5, 10]`. */
  timeframes: readonly number[];
  /** EWMA span in buckets (≥ 1): alpha = 2 / (span + 1), or 1/n while that is larger (the first buckets weigh equally). */
  span: number;
  /** How many of the last learned bucket counts are kept per timeframe (1..200), for a median/MAD. */
  keep: number;
  /** Learning clip (0 = never): once n ≥ `clipAfter`, a bucket is learned as at most mean + clipK·√variance, so the burst to flag does not teach that bursts are normal. */
  clipK: number;
  /** Clip only once this many buckets were learned (an integer ≥ 0; with 0 or 1 the profile can hardly grow: use a few). */
  clipAfter: number;
  /** The key's expiry, ms (> 0, rounded up), set again by every call that is not an inspection. */
  ttlMs: number;
  /** The clock, ms since the epoch: honoured only by stores created with `testClock: true`; otherwise the store's own clock (Redis: `TIME`). */
  now?: number;
  /** Compute and return what the call would, but write nothing (no bucket learned for good, no amount counted, the expiry untouched). */
  inspect?: boolean;
}

/** One timeframe of a subject's profile after a {@link ProfileRequest}. */
export interface ProfileTimeframe {
  /** T, minutes. */
  minutes: number;
  /** The sliding count: the sum of the minutes (M − T, M], this call's amount included (M: the current minute). */
  count: number;
  /** Active buckets learned so far. */
  n: number;
  /** Exponentially weighted mean of the active buckets' counts. */
  mean: number;
  /** Exponentially weighted variance of the active buckets' counts. */
  variance: number;
  /** The last `keep` learned counts (clipped as learned), oldest first. */
  history: number[];
}

/** The outcome of one {@link ProfileRequest}: one entry per requested timeframe, in their order. */
export interface ProfileResult {
  timeframes: ProfileTimeframe[];
}

