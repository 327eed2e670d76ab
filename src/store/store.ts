/**
 * The store plugins share: the in-memory implementation serves one process; the Redis one
 * (`redis.ts`) serves a pool. Only what plugins need today is here; atomic operations
 * such as multi-window counters are added as methods, implemented natively by each store.
 * @module
 */
import { StoreError } from './errors.ts';
import { profileCompute, profileTtl, validateProfileRequest } from './profile.ts';
import { seenCompute, validateSeenAdd, type SeenAddOptions, type SeenAddResult } from './seen.ts';
import { rateAdminHash, rateDecide, rateInspectHash, rateRefundHash, validateRateAdminChange, validateRateRequest, validateRateReservation, validateRateWindows, type RateExpiry, type RateHash } from './ratelimit.ts';

/** One window of a rate limit: at most `limit` units in any `windowMs` interval. */
export interface RateWindow {
  /** Length of the window, ms (> 0). */
  windowMs: number;
  /**
   * Slots of the ring the window is counted in (N, 1..1000). Usage is kept per slot of
   * g = ⌈windowMs / N⌉ ms, and a decision counts the current slot and the N before it, the oldest
   * whole: every unit admitted in the last N·g ≥ `windowMs` ms. So the limit is never exceeded in any
   * interval of `windowMs`; in exchange a request is denied only when the units admitted in the last
   * (N + 1)·g ms plus its cost exceed the limit — under-admission of at most one slot's traffic (and
   * under N ms of rounding when N does not divide `windowMs`).
   */
  slots: number;
  /** Most units admitted in any interval of `windowMs` (≥ 0; 0 always denies). */
  limit: number;
}

/** One subject's rate-limit decision. */
export interface RateRequest {
  /** The subject's key (namespaced by the caller, prefixed by the store). Callers hash addresses out of it. */
  key: string;
  /** Units to add when every window has room (integer ≥ 0; 0 only checks). */
  cost: number;
  /** The windows, all checked and all counted together: all or nothing. */
  windows: readonly RateWindow[];
  /** On a denial, keep the subject denied this long (a penalty block), ms. */
  jailMs?: number;
  /** Stored once with the subject (not in the key name) so admin tools can show who it is. */
  label?: string;
  /** The clock, ms since the epoch: honoured only by stores created with `testClock: true`; otherwise the store's own clock (Redis: `TIME`). */
  now?: number;
}

/** Usage of one window after a decision. */
export interface RateWindowState {
  /** Units counted in the window (including this decision's cost when allowed). */
  used: number;
  /** The effective limit (an administrator's per-subject override, or the request's). */
  limit: number;
  /** `max(0, limit - used)`. */
  remaining: number;
  /** Time until the oldest counted unit leaves the window, ms (0 when empty). */
  resetMs: number;
}

/** What a {@link Store.rateRefund} needs to undo an allowed decision exactly. */
export interface RateReservation {
  /** The subject's key. */
  key: string;
  /** Units that were added. */
  cost: number;
  /** The windows as they were requested. */
  windows: readonly RateWindow[];
  /** For each window, the slot epoch the cost went into. */
  epochs: readonly number[];
}

/** The outcome of one {@link RateRequest}. */
export interface RateResult {
  /**
   * `allowed` (counted), `denied` (a window is full: nothing counted), `jailed` (still in a penalty
   * block), `blocked` (an administrator blocked the subject), `bypassed` (an administrator exempted it:
   * nothing counted).
   */
  outcome: 'allowed' | 'denied' | 'jailed' | 'blocked' | 'bypassed';
  /** Index of the window that denied, else -1. */
  failing: number;
  /**
   * When a denied or jailed subject may try again, ms; -1 when the cost exceeds the limit (never). 0
   * otherwise. For a denial: the time until every full window has room for this cost (if nothing else
   * is counted meanwhile), and at least the penalty block when one was set.
   */
  retryAfterMs: number;
  /** Every window's usage after the decision (empty for blocked and bypassed). */
  windows: RateWindowState[];
  /** Present when allowed with a cost > 0: hand it to {@link Store.rateRefund} to undo. */
  reservation?: RateReservation;
}

/** A subject's state, for admin tools. */
export interface RateInspection {
  /** The label stored with it. */
  label: string | undefined;
  /** Usage per window (as with a cost-0 request). */
  windows: RateWindowState[];
  /** Remaining penalty block, ms (0 when not jailed). */
  jailedForMs: number;
  /** Blocked by an administrator. */
  blocked: boolean;
  /** Exempted by an administrator. */
  bypass: boolean;
  /** Per-subject limit overrides by window length (ms → limit). */
  limits: Record<number, number> | undefined;
  /** False when the store has nothing for this key. */
  exists: boolean;
}

/** An administrator's change to a subject. Fields left out are left as they are. */
export interface RateAdminChange {
  /** Forget the usage and the penalty block (flags and overrides stay). */
  reset?: boolean;
  /** End the penalty block only. */
  unjail?: boolean;
  /**
   * Put the subject in a penalty block for this many ms from now (a longer block already running is
   * kept): how another plugin (predict) hands a subject to the rate limiter. Applied after `unjail`.
   */
  jailMs?: number;
  /** Block (true) or unblock (false) the subject until changed again. */
  block?: boolean;
  /** Exempt the subject (true) or not (false). */
  bypass?: boolean;
  /** Per-subject limits by window length (ms → limit); null removes them. */
  limits?: Record<number, number> | null;
  /** Label to store if none is. */
  label?: string;
}

/**
 * One subject's rate-profile update, or inspection ({@link Store.profileUpdate}): the subject's
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

/** A key/value store with expiry. Keys are namespaced by the caller. */
export interface Store {
  /** The value of a key, or undefined when absent or expired. */
  get(key: string): Promise<string | undefined>;
  /** Sets a key, optionally expiring after `ttlMs`. */
  set(key: string, value: string, ttlMs?: number): Promise<void>;
  /** Deletes a key; resolves true when it existed. */
  delete(key: string): Promise<boolean>;
  /** Adds `by` to an integer key (created at 0), sets its expiry when given, returns the new value. */
  increment(key: string, by?: number, ttlMs?: number): Promise<number>;
  /**
   * Adds each field's amount to a hash of integer counters (Redis HINCRBY; the hash and its fields are
   * created at 0), all in one atomic operation on one key (Redis: one script call, Cluster-safe). A
   * positive `ttlMs` (re)sets the key's expiry, otherwise it keeps the one it had. Fields whose amount
   * is 0 are skipped; when none is left nothing is done (no round trip, the expiry is left alone).
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when an amount is not a safe integer or `ttlMs` is
   * not finite (nothing is counted), `THEMIS_ERR_STORE_WRONGTYPE` when the key holds a string or a
   * ranking (in memory, a rate-limit subject too; in Redis that is a hash as well: keep them apart by
   * namespace).
   */
  counterAdd(key: string, fields: Readonly<Record<string, number>>, ttlMs?: number): Promise<void>;
  /**
   * Each key's counters as numbers, in the order of `keys` (`{}` for a missing key), in one round trip
   * (Redis: one pipeline of HGETALL; on a Cluster, the reads are sent together, one per key).
   * @throws StoreError `THEMIS_ERR_STORE_WRONGTYPE` when a key holds something else than counters.
   */
  counterRead(keys: readonly string[]): Promise<Record<string, number>[]>;
  /**
   * Adds members to a bounded ranking (a Redis sorted set), in one atomic operation on one key (Redis:
   * one script call, Cluster-safe). Mode `add` (the default) adds each amount to the member's score
   * (ZINCRBY); mode `max` keeps the higher of its score and the amount (ZADD GT). Then only the `keep`
   * highest-scored members stay (ZREMRANGEBYRANK 0 -(keep+1): among equal scores, the members that sort
   * first byte-wise go first), and a positive `ttlMs` (re)sets the key's expiry. An empty `members` does
   * nothing (no round trip).
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when an amount is not finite, `keep` not an integer
   * ≥ 1, `mode` unknown or `ttlMs` not finite (nothing is changed), `THEMIS_ERR_STORE_WRONGTYPE` when
   * the key holds something else than a ranking.
   */
  rankAdd(key: string, members: Readonly<Record<string, number>>, options: RankAddOptions): Promise<void>;
  /**
   * For each key, in the order of `keys`, its `limit` highest-scored members with their scores, highest
   * first, equal scores in reverse byte order of the members (Redis ZREVRANGE … WITHSCORES); `[]` for a
   * missing key. One round trip, as {@link Store.counterRead}.
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when `limit` is not an integer ≥ 0,
   * `THEMIS_ERR_STORE_WRONGTYPE` when a key holds something else than a ranking.
   */
  rankRead(keys: readonly string[], limit: number): Promise<[member: string, score: number][][]>;
  /**
   * Sends a message to every subscriber of `channel` in every process that shares this store (Redis
   * pub/sub; in memory, the subscribers of this process). Delivery is best-effort: a subscriber that
   * was disconnected misses it, so callers pair it with a versioned key they can poll.
   */
  publish(channel: string, message: string): Promise<void>;
  /** Subscribes to `channel`; resolves once subscribed, with a function that unsubscribes. */
  subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;
  /**
   * Rate-limit decisions for several subjects in one round trip (Redis: one pipeline, one script call
   * per subject on one key). Each subject is decided on its own (all windows or none); callers that
   * need all subjects or none refund the allowed ones when another was denied.
   */
  rateLimit(requests: readonly RateRequest[]): Promise<RateResult[]>;
  /** Undoes allowed decisions exactly (a slot that has rolled over since is left alone), in one round trip. */
  rateRefund(reservations: readonly RateReservation[]): Promise<void>;
  /** A subject's usage and flags, counting nothing. */
  rateInspect(key: string, windows: readonly RateWindow[], now?: number): Promise<RateInspection>;
  /** Applies an administrator's change to a subject (flags persist until changed; usage expires as usual). */
  rateAdmin(key: string, change: RateAdminChange): Promise<void>;
  /**
   * Updates (or, with `inspect`, reads) each subject's rate profile, in one round trip (Redis: one
   * script call per request on its one key, all sent together: one pipeline on a standalone or Sentinel
   * connection; Cluster-safe). Each request is atomic; they run in order (a key may appear twice).
   * The algorithm and the storage are described in `profile.ts`; memory and Redis compute the same
   * doubles. An empty batch does nothing.
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when a request is invalid (checked first: nothing is
   * written), `THEMIS_ERR_STORE_WRONGTYPE` when a key holds a string, counters or a ranking (a profile is
   * a hash, as a rate-limit subject is: keep them apart by namespace). Such an error rejects the
   * whole call; in memory nothing is written then, in Redis the other requests may have been applied.
   */
  profileUpdate(requests: readonly ProfileRequest[]): Promise<ProfileResult[]>;
  /**
   * Remembers `members` in a bounded memory of the most recently seen (one string on one key: see
   * `seen.ts`) and tells which were new to it, atomically, in one round trip (Redis: one script call,
   * Cluster-safe). Used to tell a subject's usual correspondents from addresses it never wrote to.
   * Memory and Redis give the same answers. With no members nothing is read or written (size 0).
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when a member or an option is invalid (nothing is
   * changed), `THEMIS_ERR_STORE_WRONGTYPE` when the key holds something else than a string.
   */
  seenAdd(key: string, members: readonly string[], options: SeenAddOptions): Promise<SeenAddResult>;
  /** Keys (without the store's prefix) that start with `prefix`, for admin listings. */
  scanKeys(prefix: string): AsyncIterable<string>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}

/** Options of {@link Store.rankAdd}. */
export interface RankAddOptions {
  /** How many of the highest-scored members stay (an integer ≥ 1): the ranking never holds more. */
  keep: number;
  /** A positive value (re)sets the key's expiry, ms; otherwise the key keeps the one it had. */
  ttlMs?: number;
  /** `add` (default): the amount is added to the member's score; `max`: the score becomes the higher of the two. */
  mode?: 'add' | 'max';
}

const invalidArgument = (command: string, reason: string) => new StoreError('THEMIS_ERR_STORE_ARGUMENT', { command, reason });

/**
 * A counter or ranking write's `ttlMs` checked: the expiry to set, ms (rounded up), or 0 to leave it.
 * Shared by the stores.
 * @internal
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when it is not a finite number.
 */
export function validateStoreTtl(command: string, ttlMs: number | undefined): number {
  if (ttlMs === undefined) return 0;
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs)) throw invalidArgument(command, `ttlMs ${String(ttlMs)} is not a finite number`);
  return ttlMs > 0 ? Math.ceil(ttlMs) : 0;
}

/**
 * The arguments of {@link Store.counterAdd} checked: the fields to add, those with amount 0 left out,
 * and the expiry. Shared by the stores.
 * @internal
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateCounterAdd(fields: Readonly<Record<string, number>>, ttlMs: number | undefined): { fields: [field: string, amount: number][]; ttlMs: number } {
  const out: [string, number][] = [];
  for (const [field, amount] of Object.entries(fields)) {
    if (!Number.isSafeInteger(amount)) throw invalidArgument('COUNTERADD', `field ${JSON.stringify(field)}: amount ${String(amount)} is not a safe integer`);
    if (amount !== 0) out.push([field, amount]);
  }
  return { fields: out, ttlMs: validateStoreTtl('COUNTERADD', ttlMs) };
}

/**
 * The arguments of {@link Store.rankAdd} checked (-0 becomes 0, as Redis stores it). Shared by the stores.
 * @internal
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateRankAdd(members: Readonly<Record<string, number>>, options: RankAddOptions): { members: [member: string, amount: number][]; keep: number; ttlMs: number; mode: 'add' | 'max' } {
  const { keep, mode = 'add' } = options;
  if (!Number.isSafeInteger(keep) || keep < 1) throw invalidArgument('RANKADD', `keep ${String(keep)} is not an integer ≥ 1`);
  if (mode !== 'add' && mode !== 'max') throw invalidArgument('RANKADD', `mode ${JSON.stringify(mode)} is neither "add" nor "max"`);
  const out: [string, number][] = [];
  for (const [member, amount] of Object.entries(members)) {
    if (typeof amount !== 'number' || !Number.isFinite(amount)) throw invalidArgument('RANKADD', `member ${JSON.stringify(member)}: amount ${String(amount)} is not a finite number`);
    out.push([member, amount === 0 ? 0 : amount]);
  }
  return { members: out, keep, ttlMs: validateStoreTtl('RANKADD', options.ttlMs), mode };
}

/**
 * The `limit` of {@link Store.rankRead} checked. Shared by the stores.
 * @internal
 * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT`.
 */
export function validateRankLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 0) throw invalidArgument('RANKREAD', `limit ${String(limit)} is not an integer ≥ 0`);
  return limit;
}

/**
 * Redis' order of strings (memcmp of their UTF-8 bytes, which is code point order): UTF-16 code unit
 * order except that a surrogate pair (a code point ≥ U+10000) comes after U+E000–U+FFFF.
 */
function byteOrder(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys && (x >= 0xe000 || y >= 0xe000)) return xs ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

/** Redis' order of a sorted set: by score, then by member byte-wise. */
const rankOrder = (a: [string, number], b: [string, number]) => (a[1] !== b[1] ? (a[1] < b[1] ? -1 : 1) : byteOrder(a[0], b[0]));

/** A hash of integer counters ({@link Store.counterAdd}): a kind of value of its own. */
class Counters {
  readonly fields = new Map<string, number>();
}

/** A bounded ranking ({@link Store.rankAdd}), the in-memory sorted set. */
class Ranking {
  readonly scores = new Map<string, number>();

  /** Keeps the `keep` highest members, dropping the lowest first (ZREMRANGEBYRANK 0 -(keep+1)). */
  trim(keep: number): void {
    if (this.scores.size <= keep) return;
    const ascending = [...this.scores].sort(rankOrder);
    for (let i = 0; i < ascending.length - keep; i++) this.scores.delete(ascending[i][0]);
  }

  /** The `limit` highest members, highest first (ZREVRANGE 0 limit-1 WITHSCORES). */
  top(limit: number): [string, number][] {
    if (limit === 0) return [];
    return [...this.scores].sort((a, b) => rankOrder(b, a)).slice(0, limit);
  }
}

interface Entry {
  /** A string, a hash (a rate-limit subject's or a profile's), counters or a ranking: one key space, as in Redis. */
  value: string | RateHash | Counters | Ranking;
  /** Date.now() at which the key expires; 0 for never. */
  expires: number;
}

/** Settings of a {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** How often expired keys nobody reads again are dropped, ms (default 60,000). */
  sweepIntervalMs?: number;
  /** Honour the `now` of rate-limit and profile requests and rate inspections instead of `Date.now()` (tests). Expiry always follows the real clock, as in Redis. */
  testClock?: boolean;
}

const wrongType = (command: string) => new StoreError('THEMIS_ERR_STORE_WRONGTYPE', { command });

/**
 * The embedded in-memory store (the default): one process, nothing persisted. Rate limits run the
 * algorithm of `ratelimit.ts`, the one the Redis store's scripts mirror; each decision is atomic
 * because it runs synchronously.
 */
export class MemoryStore implements Store {
  private readonly data = new Map<string, Entry>();
  private readonly channels = new Map<string, Set<(message: string) => void>>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly testClock: boolean;

  /** @param options the settings, or (as before) the sweep interval alone, ms. */
  constructor(options: number | MemoryStoreOptions = {}) {
    const o = typeof options === 'number' ? { sweepIntervalMs: options } : options;
    this.testClock = o.testClock ?? false;
    // Expired keys are also dropped on read; the sweep bounds memory for keys nobody reads again.
    this.sweeper = setInterval(() => this.sweep(), o.sweepIntervalMs ?? 60_000);
    this.sweeper.unref();
  }

  private live(key: string): Entry | undefined {
    const e = this.data.get(key);
    if (e === undefined) return undefined;
    if (e.expires !== 0 && e.expires <= Date.now()) {
      this.data.delete(key);
      return undefined;
    }
    return e;
  }

  /** @throws StoreError `THEMIS_ERR_STORE_WRONGTYPE` when the key is a rate-limit subject, counters or a ranking. */
  async get(key: string): Promise<string | undefined> {
    const value = this.live(key)?.value;
    if (value !== undefined && typeof value !== 'string') throw wrongType('GET');
    return value;
  }

  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    this.data.set(key, { value, expires: ttlMs ? Date.now() + ttlMs : 0 });
  }

  async delete(key: string): Promise<boolean> {
    return this.live(key) !== undefined && this.data.delete(key);
  }

  /** @throws StoreError `THEMIS_ERR_STORE_WRONGTYPE` when the key is a rate-limit subject, counters or a ranking. */
  async increment(key: string, by = 1, ttlMs?: number): Promise<number> {
    const e = this.live(key);
    if (e !== undefined && typeof e.value !== 'string') throw wrongType('INCRBY');
    const next = (e ? Number(e.value) || 0 : 0) + by;
    this.data.set(key, { value: String(next), expires: ttlMs ? Date.now() + ttlMs : (e?.expires ?? 0) });
    return next;
  }

  /** Adds the counters synchronously, so atomically (all fields checked first). */
  async counterAdd(key: string, fields: Readonly<Record<string, number>>, ttlMs?: number): Promise<void> {
    const add = validateCounterAdd(fields, ttlMs);
    if (add.fields.length === 0) return;
    const e = this.kind(key, Counters, 'COUNTERADD');
    const counters = e?.value ?? new Counters();
    for (const [field, amount] of add.fields) counters.fields.set(field, (counters.fields.get(field) ?? 0) + amount);
    this.data.set(key, { value: counters, expires: add.ttlMs > 0 ? Date.now() + add.ttlMs : (e?.expires ?? 0) });
  }

  async counterRead(keys: readonly string[]): Promise<Record<string, number>[]> {
    const found = keys.map((key) => this.kind(key, Counters, 'COUNTERREAD'));
    return found.map((e) => (e ? Object.fromEntries(e.value.fields) : {}));
  }

  /** Adds the members and trims synchronously, so atomically (all arguments checked first). */
  async rankAdd(key: string, members: Readonly<Record<string, number>>, options: RankAddOptions): Promise<void> {
    const add = validateRankAdd(members, options);
    if (add.members.length === 0) return;
    const e = this.kind(key, Ranking, 'RANKADD');
    const ranking = e?.value ?? new Ranking();
    for (const [member, amount] of add.members) {
      const old = ranking.scores.get(member);
      if (add.mode === 'add') ranking.scores.set(member, (old ?? 0) + amount);
      else if (old === undefined || old < amount) ranking.scores.set(member, amount);
    }
    ranking.trim(add.keep);
    this.data.set(key, { value: ranking, expires: add.ttlMs > 0 ? Date.now() + add.ttlMs : (e?.expires ?? 0) });
  }

  async rankRead(keys: readonly string[], limit: number): Promise<[member: string, score: number][][]> {
    validateRankLimit(limit);
    const found = keys.map((key) => this.kind(key, Ranking, 'RANKREAD'));
    return found.map((e) => (e ? e.value.top(limit) : []));
  }

  /** Runs {@link seenCompute} synchronously, so atomically (all arguments checked first). */
  async seenAdd(key: string, members: readonly string[], options: SeenAddOptions): Promise<SeenAddResult> {
    const width = validateSeenAdd(members, options);
    if (members.length === 0) return { fresh: [], size: 0 };
    const e = this.live(key);
    if (e !== undefined && typeof e.value !== 'string') throw wrongType('SEENADD');
    const stored = e?.value as string | undefined;
    if (members.length === 0) return { fresh: [], size: 0 };
    const { text, result } = seenCompute(stored, members, options.keep, width);
    if (!options.inspect) this.data.set(key, { value: text, expires: Date.now() + Math.ceil(options.ttlMs) });
    return result;
  }

  async publish(channel: string, message: string): Promise<void> {
    const subscribers = this.channels.get(channel);
    if (!subscribers) return;
    // Delivered on a later tick, as over a network: a subscriber never runs inside the publisher's call.
    // A subscriber that throws must not take the process down: its error is reported, not raised.
    for (const fn of subscribers)
      queueMicrotask(() => {
        try {
          fn(message);
        } catch (err) {
          process.emitWarning(`store subscriber for ${channel} failed: ${(err as Error).message}`, { code: 'THEMIS_ERR_STORE_SUBSCRIBER' });
        }
      });
  }

  async subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>> {
    let subscribers = this.channels.get(channel);
    if (!subscribers) this.channels.set(channel, (subscribers = new Set()));
    // A wrapper per call, so subscribing one function twice gives two independent subscriptions.
    const fn = (m: string) => onMessage(m);
    subscribers.add(fn);
    return async () => {
      subscribers.delete(fn);
    };
  }

  /** Decides each request in turn (see `rateDecide` in `ratelimit.ts`). */
  async rateLimit(requests: readonly RateRequest[]): Promise<RateResult[]> {
    for (const r of requests) validateRateRequest(r);
    return requests.map((r) => {
      const entry = this.hashEntry(r.key, 'RATELIMIT');
      const hash = entry?.value ?? new Map<string, string>();
      const { result, expiry } = rateDecide(hash, r, this.clock(r.now));
      this.store(r.key, hash, entry?.expires ?? 0, expiry);
      return result;
    });
  }

  /** Undoes reservations (all validated first, so a bad one changes nothing). */
  async rateRefund(reservations: readonly RateReservation[]): Promise<void> {
    for (const r of reservations) validateRateReservation(r);
    for (const r of reservations) {
      // A subject that expired meanwhile is not brought back.
      const entry = this.hashEntry(r.key, 'RATEREFUND');
      if (entry) rateRefundHash(entry.value, r);
    }
  }

  async rateInspect(key: string, windows: readonly RateWindow[], now?: number): Promise<RateInspection> {
    validateRateWindows(windows, false);
    return rateInspectHash(this.hashEntry(key, 'RATEINSPECT')?.value, windows, this.clock(now));
  }

  /** Applies an administrator's change on the real clock (the penalty block's remaining time sets the expiry). */
  async rateAdmin(key: string, change: RateAdminChange): Promise<void> {
    validateRateAdminChange(change);
    const entry = this.hashEntry(key, 'RATEADMIN');
    const hash = entry?.value ?? new Map<string, string>();
    const pttl = entry === undefined || entry.expires === 0 ? -1 : entry.expires - Date.now();
    const expiry = rateAdminHash(hash, change, Date.now(), pttl);
    this.store(key, hash, entry?.expires ?? 0, expiry);
  }

  /**
   * Runs each request in turn (see `profileCompute` in `profile.ts`): every request is validated and
   * every key's kind checked first, so an error writes nothing. A profile is stored as the same kind of
   * hash as a rate-limit subject (both are hashes in Redis).
   */
  async profileUpdate(requests: readonly ProfileRequest[]): Promise<ProfileResult[]> {
    for (let i = 0; i < requests.length; i++) validateProfileRequest(requests[i], i);
    for (const r of requests) this.hashEntry(r.key, 'PROFILEUPDATE');
    return requests.map((r) => {
      const entry = this.hashEntry(r.key, 'PROFILEUPDATE');
      const { result, fields } = profileCompute(entry?.value, r, this.clock(r.now));
      if (!r.inspect) {
        const hash = entry?.value ?? new Map<string, string>();
        for (const [field, value] of fields) hash.set(field, value);
        this.data.set(r.key, { value: hash, expires: Date.now() + profileTtl(r) });
      }
      return result;
    });
  }

  /** Keys starting with `prefix`, from a snapshot: keys set while the caller iterates are not visited, as with a SCAN that has passed them. */
  async *scanKeys(prefix: string): AsyncIterable<string> {
    for (const key of [...this.data.keys()]) if (key.startsWith(prefix) && this.live(key)) yield key;
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.channels.clear();
  }

  /** The request's `now` with `testClock`, else the real clock. */
  private clock(now: number | undefined): number {
    return this.testClock && now !== undefined ? Math.floor(now) : Date.now();
  }

  /** The live value of one kind at `key`, if any; another kind there is an error, as in Redis. */
  private kind<T extends Counters | Ranking>(key: string, type: new () => T, command: string): { value: T; expires: number } | undefined {
    const e = this.live(key);
    if (e === undefined) return undefined;
    if (!(e.value instanceof type)) throw wrongType(command);
    return { value: e.value, expires: e.expires };
  }

  /** The live rate-limit hash at `key`, if any; a string there is an error, as in Redis. */
  private hashEntry(key: string, command: string): { value: RateHash; expires: number } | undefined {
    const e = this.live(key);
    if (e === undefined) return undefined;
    if (!(e.value instanceof Map)) throw wrongType(command);
    return { value: e.value, expires: e.expires };
  }

  /** Stores a hash after an operation with its new expiry; an empty hash is deleted, as Redis does. */
  private store(key: string, hash: RateHash, expires: number, expiry: RateExpiry): void {
    if (hash.size === 0) {
      this.data.delete(key);
      return;
    }
    const at = expiry.action === 'persist' ? 0 : expiry.action === 'expire' ? Date.now() + expiry.ms : expires;
    this.data.set(key, { value: hash, expires: at });
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.data) if (e.expires !== 0 && e.expires <= now) this.data.delete(k);
  }
}
