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
  /**
   * Traits learned in the same call, on the same key (at most {@link PROFILE_MAX_TRAITS}): each a bounded
   * map of the values the subject showed (its client networks, its mail clients…) with decayed counts of
   * the hours it showed them in. Left out: the call is exactly what it was without traits.
   */
  traits?: readonly ProfileTrait[];
}

/** Most traits per request. */
export const PROFILE_MAX_TRAITS = 8;

/**
 * One trait of a {@link ProfileRequest}: this message's value, learned into the field `t<name>` of the
 * subject's hash. Counts are of **active hours**: a value's count grows by one at most once per clock
 * hour (⌊now / 3,600,000⌋), so a burst from one network teaches as much as one message.
 */
export interface ProfileTrait {
  /** The trait's name, 1–8 lower-case letters (`n` for networks, `c` for mail clients): field `t<name>`. */
  name: string;
  /** This message's value: 1–64 printable ASCII characters, no space, comma or semicolon (`203.0.113.0/24`). */
  value: string;
  /** Values kept at most (1–64): a new value beyond it evicts the least counted (then the least recently seen). */
  max: number;
  /** When the total passes it (2–1,000,000), every count and the total are halved (rounded up): old habits fade, a moved user re-learns. */
  cap: number;
  /**
   * Hours (0–8,760) a value stays young after it entered the map: the result counts the other young
   * values ({@link ProfileTraitResult.youngValues}), so a caller can judge a value against the subject's
   * settled habits, not against what a thief brought in the last hours. 0 or absent: none counted.
   */
  young?: number;
}

/** What a trait looked like before this call learned from it. */
export interface ProfileTraitResult {
  name: string;
  /** Active hours observed (decayed): the sum of every value's count, evicted ones included. */
  total: number;
  /** How many of them brought a value new to the map (decayed with the total): how often the subject shows something new. */
  distinct: number;
  /** This value's count (0: new to the subject). */
  count: number;
  /** The hour (⌊ms / 3,600,000⌋) this value was last counted in (0: new to the subject): equal to the call's hour when it was already counted this hour. */
  hour: number;
  /** Values in the map. */
  size: number;
  /** The call's hour, ⌊now / 3,600,000⌋. */
  now: number;
  /** The hour this value entered the map (0: new to the subject, or entered before first hours were stored). */
  first: number;
  /** Other values that entered within the trait's `young` hours before this call's hour (0 without `young`). */
  youngValues: number;
  /** Their counts, summed: the active hours of {@link youngValues} (0 without `young`). */
  youngHours: number;
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
  /** Per requested trait, in order (only when the request had traits). */
  traits?: ProfileTraitResult[];
}

