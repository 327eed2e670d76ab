/**
 * The store plugins share: the in-memory implementation serves one process; the Redis one
 * (`redis.ts`) serves a pool. It offers general primitives (strings with expiry, set-if-absent,
 * counters, rankings, publish/subscribe, scan); what a plugin needs done atomically beyond them it
 * defines as an atomic one-key operation (`atomic.ts`: a Lua script and its in-memory twin), run by
 * {@link Store.atomic} — the core holds no plugin's algorithm.
 * @module
 */
import { StoreError } from './errors.ts';
import { checkAtomicCalls, type AtomicCall, type AtomicHashKey, type AtomicKey, type AtomicKeyType, type AtomicOperation, type AtomicStringKey } from './atomic.ts';

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
   * ranking (in memory, an atomic operation's hash too; in Redis that is a hash as well: keep them apart by
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
   * Runs an atomic one-key operation a plugin defined ({@link defineAtomicOperation}) for each call,
   * in one round trip: standalone and Sentinel, every call in one socket write (EVALSHA; EVAL after
   * NOSCRIPT); Cluster, all sent at once. Each call is atomic; they run in order (a key may appear
   * twice). Every call is validated, and (in memory) every key's type checked, before anything runs.
   * An empty batch does nothing. Results come in the order of `calls`.
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` from the operation's `validate` (nothing is run),
   * `THEMIS_ERR_STORE_WRONGTYPE` when a key holds another kind of value (in memory nothing is run; in
   * Redis the other calls may have been applied), the connection errors, and
   * `THEMIS_ERR_STORE_COMMAND` for a script error or a reply `decode` refused.
   */
  atomic<Args, Result, Type extends AtomicKeyType>(op: AtomicOperation<Args, Result, Type>, calls: readonly AtomicCall<Args>[]): Promise<Result[]>;
  /**
   * Sets a key only when it does not exist (Redis `SET NX`, with `PX` when `ttlMs` is positive);
   * resolves true when it was set, false when the key existed (left unchanged).
   */
  setIfAbsent(key: string, value: string, ttlMs?: number): Promise<boolean>;
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
  /** A string, a hash (an atomic operation's), counters or a ranking: one key space, as in Redis. */
  value: string | Map<string, string> | Counters | Ranking;
  /** Date.now() at which the key expires; 0 for never. */
  expires: number;
}

/** Most keys a {@link MemoryStore} holds by default. */
export const MEMORY_STORE_MAX_KEYS = 500_000;
/** How often a {@link MemoryStore} drops expired keys by default, ms. */
export const MEMORY_STORE_SWEEP_INTERVAL_MS = 60_000;
/** Longest sweep interval: what `setInterval` accepts (2^31 − 1 ms, about 24.8 days). */
const MAX_INTERVAL_MS = 2_147_483_647;

/** Settings of a {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * How often expired keys nobody reads again are dropped, ms (default 60,000; at most 2^31 − 1). A key
   * read after its expiry is dropped then; the sweep bounds the memory of the others.
   */
  sweepIntervalMs?: number;
  /**
   * Most keys the store holds (default 500,000; `Infinity` for no bound): the store is process memory,
   * and the number of senders, networks or subjects a plugin counts is the traffic's, not the
   * configuration's (a rate-limit counter takes about 0.7 KB, a predict profile about 1 KB: some 0.5 GB
   * at the default). A write that would add a key beyond it first evicts the least recently written key
   * that has an expiry (Redis' `volatile-lru`, exact rather than sampled); an expired one goes without
   * counting as an eviction. Keys without an expiry (an administrator's flags, the live policies) are
   * never evicted: they alone can take the store past the bound.
   */
  maxKeys?: number;
  /** Honour the `now` of atomic operation calls instead of `Date.now()` (tests). Expiry always follows the real clock, as in Redis. */
  testClock?: boolean;
}

const wrongType = (command: string) => new StoreError('THEMIS_ERR_STORE_WRONGTYPE', { command });

/** Where a {@link MemoryKeyView} commits: the store's own bookkeeping of keys. */
interface KeyWriter {
  put(key: string, entry: Entry): void;
  remove(key: string): void;
}

/**
 * The embedded in-memory store (the default): one process, nothing persisted. Atomic operations run
 * their in-memory twin, synchronously, so atomically. Keys expire as in Redis (on `Date.now()`): an
 * expired key is never seen again, is dropped when read, and otherwise by a sweep every
 * `sweepIntervalMs`; at most `maxKeys` keys are held (see {@link MemoryStoreOptions}).
 */
export class MemoryStore implements Store {
  private readonly data = new Map<string, Entry>();
  /**
   * The keys that have an expiry, least recently written first (a write moves its key to the end):
   * the eviction order, and all the sweep has to look at.
   */
  private readonly volatile = new Set<string>();
  private readonly channels = new Map<string, Set<(message: string) => void>>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly testClock: boolean;
  private readonly writer: KeyWriter = { put: (key, entry) => this.put(key, entry), remove: (key) => void this.remove(key) };
  private evicted = 0;
  /** Where the last eviction stopped in `volatile`. */
  private evictionCursor: SetIterator<string> | undefined;
  /** Most keys held ({@link MemoryStoreOptions.maxKeys}). */
  readonly maxKeys: number;

  /**
   * @param options the settings, or (as before) the sweep interval alone, ms.
   * @throws StoreError `THEMIS_ERR_STORE_ARGUMENT` when `sweepIntervalMs` is not a number of ms in
   * 1..2^31 − 1 or `maxKeys` not an integer ≥ 1 (or `Infinity`).
   */
  constructor(options: number | MemoryStoreOptions = {}) {
    const o = typeof options === 'number' ? { sweepIntervalMs: options } : options;
    const sweepIntervalMs = o.sweepIntervalMs ?? MEMORY_STORE_SWEEP_INTERVAL_MS;
    if (typeof sweepIntervalMs !== 'number' || !(sweepIntervalMs > 0 && sweepIntervalMs <= MAX_INTERVAL_MS)) throw invalidArgument('MEMORYSTORE', `sweepIntervalMs must be a number of ms from 1 to ${MAX_INTERVAL_MS} (got ${String(sweepIntervalMs)})`);
    const maxKeys = o.maxKeys ?? MEMORY_STORE_MAX_KEYS;
    if (maxKeys !== Infinity && !(Number.isSafeInteger(maxKeys) && maxKeys >= 1)) throw invalidArgument('MEMORYSTORE', `maxKeys must be an integer ≥ 1, or Infinity for no bound (got ${String(maxKeys)})`);
    this.maxKeys = maxKeys;
    this.testClock = o.testClock ?? false;
    // Expired keys are also dropped on read; the sweep bounds memory for keys nobody reads again.
    this.sweeper = setInterval(() => this.sweep(), sweepIntervalMs);
    this.sweeper.unref();
  }

  /**
   * Keys held now, as Redis' DBSIZE counts them: an expired key counts until it is read or swept
   * (within `sweepIntervalMs` of its expiry).
   */
  get size(): number {
    return this.data.size;
  }

  /** Keys evicted so far to stay within `maxKeys` (expired ones dropped to make room not counted). */
  get evictions(): number {
    return this.evicted;
  }

  private live(key: string): Entry | undefined {
    const e = this.data.get(key);
    if (e === undefined) return undefined;
    if (e.expires !== 0 && e.expires <= Date.now()) {
      this.remove(key);
      return undefined;
    }
    return e;
  }

  /** Every write of a key goes here: it keeps the eviction order, and makes room for a new key. */
  private put(key: string, entry: Entry): void {
    if (this.data.size >= this.maxKeys && !this.data.has(key)) this.evictOne();
    this.data.set(key, entry);
    this.volatile.delete(key);
    if (entry.expires !== 0) this.volatile.add(key);
  }

  private remove(key: string): boolean {
    this.volatile.delete(key);
    return this.data.delete(key);
  }

  /** Drops the least recently written key that has an expiry, if there is one. */
  private evictOne(): void {
    // A Set's iterator is live and everything it passed was removed, so its next key is the oldest
    // written. It is kept between evictions: one started afresh would step over every entry deleted
    // since the Set last compacted, at each eviction.
    let next = this.evictionCursor?.next();
    if (next === undefined || next.done) next = (this.evictionCursor = this.volatile.values()).next();
    if (next.done) return;
    const key = next.value;
    const e = this.data.get(key);
    this.remove(key);
    if (e !== undefined && e.expires > Date.now()) this.evicted++;
  }

  /** @throws StoreError `THEMIS_ERR_STORE_WRONGTYPE` when the key is a hash, counters or a ranking. */
  async get(key: string): Promise<string | undefined> {
    const value = this.live(key)?.value;
    if (value !== undefined && typeof value !== 'string') throw wrongType('GET');
    return value;
  }

  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    this.put(key, { value, expires: ttlMs ? Date.now() + ttlMs : 0 });
  }

  async delete(key: string): Promise<boolean> {
    return this.live(key) !== undefined && this.remove(key);
  }

  /** @throws StoreError `THEMIS_ERR_STORE_WRONGTYPE` when the key is a hash, counters or a ranking. */
  async increment(key: string, by = 1, ttlMs?: number): Promise<number> {
    const e = this.live(key);
    if (e !== undefined && typeof e.value !== 'string') throw wrongType('INCRBY');
    const next = (e ? Number(e.value) || 0 : 0) + by;
    this.put(key, { value: String(next), expires: ttlMs ? Date.now() + ttlMs : (e?.expires ?? 0) });
    return next;
  }

  /** Adds the counters synchronously, so atomically (all fields checked first). */
  async counterAdd(key: string, fields: Readonly<Record<string, number>>, ttlMs?: number): Promise<void> {
    const add = validateCounterAdd(fields, ttlMs);
    if (add.fields.length === 0) return;
    const e = this.kind(key, Counters, 'COUNTERADD');
    const counters = e?.value ?? new Counters();
    for (const [field, amount] of add.fields) counters.fields.set(field, (counters.fields.get(field) ?? 0) + amount);
    this.put(key, { value: counters, expires: add.ttlMs > 0 ? Date.now() + add.ttlMs : (e?.expires ?? 0) });
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
    this.put(key, { value: ranking, expires: add.ttlMs > 0 ? Date.now() + add.ttlMs : (e?.expires ?? 0) });
  }

  async rankRead(keys: readonly string[], limit: number): Promise<[member: string, score: number][][]> {
    validateRankLimit(limit);
    const found = keys.map((key) => this.kind(key, Ranking, 'RANKREAD'));
    return found.map((e) => (e ? e.value.top(limit) : []));
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

  /** Sets the key unless it holds something (of any kind) that has not expired. */
  async setIfAbsent(key: string, value: string, ttlMs?: number): Promise<boolean> {
    if (this.live(key) !== undefined) return false;
    this.put(key, { value, expires: ttlMs && ttlMs > 0 ? Date.now() + Math.ceil(ttlMs) : 0 });
    return true;
  }

  /**
   * Runs the operation's twin for each call in turn, synchronously: every call validated and every
   * key's type checked first, so an error runs nothing.
   */
  async atomic<Args, Result, Type extends AtomicKeyType>(op: AtomicOperation<Args, Result, Type>, calls: readonly AtomicCall<Args>[]): Promise<Result[]> {
    checkAtomicCalls(op, calls);
    for (const c of calls) this.atomicEntry(c.key, op);
    const out = new Array<Result>(calls.length);
    for (let i = 0; i < calls.length; i++) {
      const c = calls[i];
      const view = new MemoryKeyView(this.writer, c.key, this.atomicEntry(c.key, op));
      out[i] = op.memory(view as unknown as AtomicKey<Type>, c.args, this.clock(c.now));
      view.commit();
    }
    return out;
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

  /** The live entry at `key` for an operation, if any; another kind of value there is an error, as in Redis. */
  private atomicEntry(key: string, op: AtomicOperation<unknown, unknown>): Entry | undefined {
    const e = this.live(key);
    if (e === undefined) return undefined;
    if (op.type === 'hash' ? !(e.value instanceof Map) : typeof e.value !== 'string') throw wrongType(op.name);
    return e;
  }

  /** Drops every expired key: only keys with an expiry are looked at. */
  private sweep(): void {
    const now = Date.now();
    for (const key of this.volatile) {
      const e = this.data.get(key);
      if (e === undefined || (e.expires !== 0 && e.expires <= now)) this.remove(key);
    }
  }
}

/**
 * One key as an atomic operation's twin sees it, over the memory store's map: reads and writes go to
 * a working copy (the entry's own hash, or the string), committed after the twin ran the way Redis
 * leaves a key: an emptied hash or a deleted string is removed, the expiry is what the twin set.
 */
class MemoryKeyView implements AtomicHashKey, AtomicStringKey {
  readonly fields: Map<string, string>;
  private text: string | undefined;
  private expires: number;
  private readonly writer: KeyWriter;
  private readonly key: string;

  constructor(writer: KeyWriter, key: string, entry: Entry | undefined) {
    this.writer = writer;
    this.key = key;
    this.fields = entry?.value instanceof Map ? entry.value : new Map();
    this.text = typeof entry?.value === 'string' ? entry.value : undefined;
    this.expires = entry?.expires ?? 0;
  }

  get exists(): boolean {
    return this.fields.size > 0 || this.text !== undefined;
  }

  pttl(): number {
    if (!this.exists) return -2;
    return this.expires === 0 ? -1 : Math.max(0, this.expires - Date.now());
  }

  pexpire(ms: number): void {
    if (!this.exists) return;
    if (ms <= 0) return this.del();
    this.expires = Date.now() + Math.ceil(ms);
  }

  persist(): void {
    this.expires = 0;
  }

  del(): void {
    this.fields.clear();
    this.text = undefined;
    this.expires = 0;
  }

  get(): string | undefined {
    return this.text;
  }

  set(value: string): void {
    this.text = value;
    this.expires = 0;
  }

  /** Stores what the twin left. */
  commit(): void {
    if (this.text !== undefined) this.writer.put(this.key, { value: this.text, expires: this.expires });
    else if (this.fields.size > 0) this.writer.put(this.key, { value: this.fields, expires: this.expires });
    else this.writer.remove(this.key);
  }
}
