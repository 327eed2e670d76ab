/**
 * The store plugins share: the in-memory implementation serves one process; the Redis one
 * (`redis.ts`) serves a pool. Only what plugins need today is here; atomic operations
 * such as multi-window counters are added as methods, implemented natively by each store.
 * @module
 */

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
   * Sends a message to every subscriber of `channel` in every process that shares this store (Redis
   * pub/sub; in memory, the subscribers of this process). Delivery is best-effort: a subscriber that
   * was disconnected misses it, so callers pair it with a versioned key they can poll.
   */
  publish(channel: string, message: string): Promise<void>;
  /** Subscribes to `channel`; resolves once subscribed, with a function that unsubscribes. */
  subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}

interface Entry {
  value: string;
  expires: number;
}

/** The embedded in-memory store (the default): one process, nothing persisted. */
export class MemoryStore implements Store {
  private readonly data = new Map<string, Entry>();
  private readonly channels = new Map<string, Set<(message: string) => void>>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(sweepIntervalMs = 60_000) {
    // Expired keys are also dropped on read; the sweep bounds memory for keys nobody reads again.
    this.sweeper = setInterval(() => this.sweep(), sweepIntervalMs);
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

  async get(key: string): Promise<string | undefined> {
    return this.live(key)?.value;
  }

  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    this.data.set(key, { value, expires: ttlMs ? Date.now() + ttlMs : 0 });
  }

  async delete(key: string): Promise<boolean> {
    return this.live(key) !== undefined && this.data.delete(key);
  }

  async increment(key: string, by = 1, ttlMs?: number): Promise<number> {
    const e = this.live(key);
    const next = (e ? Number(e.value) || 0 : 0) + by;
    this.data.set(key, { value: String(next), expires: ttlMs ? Date.now() + ttlMs : (e?.expires ?? 0) });
    return next;
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

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.channels.clear();
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.data) if (e.expires !== 0 && e.expires <= now) this.data.delete(k);
  }
}
