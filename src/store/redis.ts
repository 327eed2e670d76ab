/**
 * The Redis store (ioredis v6): standalone, Sentinel or Cluster, shared by every daemon of a pool.
 *
 * An outage never takes the process down and never leaves a caller waiting: every connection has an
 * `error` listener (logged at most once per 10 s per kind of error), commands reject at once while the
 * connection is down and within `commandTimeout` when Redis does not answer, a command whose
 * connection dies is failed rather than replayed later, and ioredis reconnects by itself with a capped
 * backoff. The calling plugin's `onError` policy decides what a rejected store operation means.
 *
 * Every key and every pub/sub channel gets `keyPrefix`, applied here rather than with ioredis'
 * `keyPrefix` option, which covers neither channels nor keys a Lua script builds: one rule for all.
 *
 * This file is the store itself; its connections (`redis-connection.ts`), the script batch sent by
 * hand (`redis-batch.ts`) and the translation of the configuration to ioredis (`redis-options.ts`)
 * live beside it.
 * @module
 */
import { Cluster, Redis, type ChainableCommander } from 'ioredis';
import { REDIS_DEFAULTS, parseStoreConfig, type RedisStoreConfig } from './config.ts';
import { StoreError } from './errors.ts';
import { Connection, isConnectionError, owner, type Client, type Owner } from './redis-connection.ts';
import { Deadlines, ScriptBatch } from './redis-batch.ts';
import { ioredisOptions, type IoredisSetup } from './redis-options.ts';
import { asEvalCall, checkAtomicCalls, evalshaCall, scriptText, type AtomicArgument, type AtomicCall, type AtomicKeyType, type AtomicOperation, type ScriptText } from './atomic.ts';
import { validateCounterAdd, validateRankAdd, validateRankLimit, type RankAddOptions, type Store } from './store.ts';

/** The logger the store reports connection trouble to: the subset of pino's API it uses. */
export interface StoreLogger {
  /** The connection was lost, or a subscriber failed. */
  warn(fields: object, message?: string): void;
  /** A connection or authentication error. */
  error(fields: object, message?: string): void;
  /** The connection came back (falls back to `warn` when absent). */
  info?(fields: object, message?: string): void;
}

/**
 * The state of a Redis store's command connection: `ready`; `connecting` until the first attempt
 * succeeds or fails; `down` after a failed attempt or a lost connection, while ioredis retries (and
 * for good once the store is closed). Commands reject at once while `down`.
 */
export type RedisStoreStatus = 'ready' | 'connecting' | 'down';

/** Settings of a {@link RedisStore} that are not configuration but wiring. */
export interface RedisStoreOptions {
  /** Where connection errors, losses and recoveries are logged (rate-limited); default: nowhere. */
  logger?: StoreLogger;
  /** Least interval between two log lines of one kind of error, ms (default 10,000). */
  logIntervalMs?: number;
  /** Longest pause between two reconnection attempts, ms (default 2000). */
  maxReconnectDelay?: number;
  /**
   * Honour the `now` of atomic operation calls instead of Redis' `TIME` (tests drive the
   * clock without sleeping). Never in production: every daemon must count on the server's one clock.
   */
  testClock?: boolean;
}

const INCREMENT_LUA = `local v = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return v`;

/** HINCRBY of each field, then PEXPIRE when a TTL is given: one key, one round trip, atomic. */
const COUNTER_ADD_LUA = `local k = KEYS[1]
for i = 2, #ARGV, 2 do redis.call('HINCRBY', k, ARGV[i], ARGV[i + 1]) end
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
return 0`;

/**
 * ZINCRBY of each member (mode `add`), or ZADD when the amount beats the score (mode `max`: ZADD GT,
 * written out so servers before 6.2 run it), then the trim to the `keep` highest and PEXPIRE when a TTL
 * is given: one key, one round trip, atomic.
 */
const RANK_ADD_LUA = `local k = KEYS[1]
local max = ARGV[3] == 'max'
for i = 4, #ARGV, 2 do
  if max then
    local old = redis.call('ZSCORE', k, ARGV[i])
    if not old or tonumber(old) < tonumber(ARGV[i + 1]) then redis.call('ZADD', k, ARGV[i + 1], ARGV[i]) end
  else
    redis.call('ZINCRBY', k, ARGV[i + 1], ARGV[i])
  end
end
redis.call('ZREMRANGEBYRANK', k, 0, -(tonumber(ARGV[1]) + 1))
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', k, ttl) end
return 0`;

/**
 * The indexes of `calls` in waves: a call goes in the wave after the one holding the previous call on
 * its key, so no wave holds a key twice. One wave (all the indexes) when the keys are distinct.
 */
function waves(calls: readonly { key: string }[]): number[][] {
  if (calls.length === 1) return [[0]];
  const out: number[][] = [];
  const before = new Map<string, number>();
  for (let i = 0; i < calls.length; i++) {
    const wave = before.get(calls[i].key) ?? 0;
    before.set(calls[i].key, wave + 1);
    (out[wave] ??= []).push(i);
  }
  return out;
}

/** The store's own scripts, sent as atomic operations are (one code path): EVALSHA, EVAL after NOSCRIPT. */
const INCREMENT = scriptText('INCRBY', INCREMENT_LUA);
const COUNTER_ADD = scriptText('COUNTERADD', COUNTER_ADD_LUA);
const RANK_ADD = scriptText('RANKADD', RANK_ADD_LUA);

/** An HGETALL reply (ioredis: an object of strings) as counters. */
function parseCounters(reply: unknown): Record<string, number> {
  if (reply === null || typeof reply !== 'object') return {};
  return Object.fromEntries(Object.entries(reply as Record<string, string>).map(([field, value]) => [field, Number(value)]));
}

/** A ZREVRANGE … WITHSCORES reply (flat member, score…; or pairs, as RESP3 may give) as pairs. */
function parseRanking(reply: unknown): [string, number][] {
  if (!Array.isArray(reply)) return [];
  const flat = reply.flat() as unknown[];
  const out: [string, number][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([String(flat[i]), Number(flat[i + 1])]);
  return out;
}


/** Redis' glob metacharacters, escaped so a SCAN pattern matches a prefix literally. */
const globEscape = (text: string) => text.replace(/[*?[\]\\]/g, '\\$&');

/**
 * The Redis store. Construction never throws for an unreachable Redis (only for a bad configuration or
 * an unreadable TLS file): it connects in the background; await {@link RedisStore.connect} (with a
 * deadline) or {@link RedisStore.ready} to wait for the first connection. Subscriptions use a second
 * connection, opened at the first {@link RedisStore.subscribe}.
 */
export class RedisStore implements Store {
  /** Where the store connects, without credentials (`redis://127.0.0.1:6379/0`, `sentinel:…`, `cluster:…`). */
  readonly target: string;
  /** The prefix of every key and channel. */
  readonly keyPrefix: string;
  /** ms; see {@link RedisStoreConfig.commandTimeout}. */
  readonly commandTimeout: number;
  /** ms; see {@link RedisStoreConfig.connectTimeout}. */
  readonly connectTimeout: number;
  /** Resolves when the command connection is first ready; never rejects (race it with a timeout). */
  readonly ready: Promise<void>;
  private readonly setup: IoredisSetup;
  private readonly main: Connection;
  private sub: Connection | undefined;
  private readonly handlers = new Map<string, Set<(message: string) => void>>();
  /** Channels left without handlers whose UNSUBSCRIBE failed: unsubscribed after reconnecting. */
  private readonly stale = new Set<string>();
  private readonly owner: Owner;
  private closing: Promise<void> | undefined;
  private readonly testClock: boolean;
  /** Deadlines of the script batches sent by hand (standalone and Sentinel). */
  private readonly deadlines: Deadlines;

  /**
   * @param config the Redis store configuration (validated again here; `type` may be left out).
   * @throws StoreError `THEMIS_ERR_STORE_CONFIG` for an invalid configuration, `THEMIS_ERR_STORE_TLS_FILE`.
   */
  constructor(config: Omit<RedisStoreConfig, 'type'> & { type?: 'redis' }, options: RedisStoreOptions = {}) {
    const valid = parseStoreConfig({ ...config, type: 'redis' }) as RedisStoreConfig;
    this.setup = ioredisOptions(valid, { maxReconnectDelay: options.maxReconnectDelay });
    this.target = this.setup.target;
    this.keyPrefix = valid.keyPrefix ?? REDIS_DEFAULTS.keyPrefix;
    this.commandTimeout = valid.commandTimeout ?? REDIS_DEFAULTS.commandTimeout;
    this.connectTimeout = valid.connectTimeout ?? REDIS_DEFAULTS.connectTimeout;
    this.owner = owner(this.target, options);
    const client = this.setup.mode === 'cluster' ? new Cluster(this.setup.nodes, this.setup.options) : new Redis(this.setup.options);
    this.testClock = options.testClock ?? false;
    this.deadlines = new Deadlines(this.commandTimeout, (batch) => new StoreError('THEMIS_ERR_STORE_TIMEOUT', { target: this.target, command: batch.command, ms: this.commandTimeout }));
    this.main = new Connection(client, 'commands', this.owner);
    this.ready = this.main.firstReady;
  }

  /** The command connection's state; a closed store is `down`. */
  get status(): RedisStoreStatus {
    return this.main.state;
  }

  /**
   * Resolves once the command connection is ready. Rejects with `THEMIS_ERR_STORE_CONNECT` after
   * `timeoutMs` (default `connectTimeout`), or `THEMIS_ERR_STORE_AUTH` as soon as Redis refuses the
   * credentials. Either way the store keeps trying in the background.
   */
  connect(timeoutMs: number = this.connectTimeout): Promise<void> {
    return this.main.whenReady(timeoutMs, false);
  }

  async get(key: string): Promise<string | undefined> {
    const value = await this.run('GET', (c) => c.get(this.keyPrefix + key));
    return value ?? undefined;
  }

  /** Sets a key; a positive `ttlMs` expires it (PX), otherwise it persists (an earlier TTL is cleared). */
  async set(key: string, value: string, ttlMs?: number): Promise<void> {
    const k = this.keyPrefix + key;
    await this.run('SET', (c) => (ttlMs && ttlMs > 0 ? c.set(k, value, 'PX', Math.ceil(ttlMs)) : c.set(k, value)));
  }

  async delete(key: string): Promise<boolean> {
    return (await this.run('DEL', (c) => c.del(this.keyPrefix + key))) > 0;
  }

  /**
   * Adds `by` (an integer; Redis INCRBY) atomically, in one round trip; a positive `ttlMs` (re)sets
   * the expiry, otherwise the key keeps the one it had. Rejects with `THEMIS_ERR_STORE_COMMAND` when
   * the key holds something else than an integer.
   */
  async increment(key: string, by = 1, ttlMs?: number): Promise<number> {
    const ttl = ttlMs && ttlMs > 0 ? Math.ceil(ttlMs) : 0;
    return Number(await this.evalOne(INCREMENT, key, [by, ttl]));
  }

  /** HINCRBY of every non-zero field and the expiry in one script call on the one key (Cluster-safe). */
  async counterAdd(key: string, fields: Readonly<Record<string, number>>, ttlMs?: number): Promise<void> {
    const add = validateCounterAdd(fields, ttlMs);
    if (add.fields.length === 0) return;
    const args: (string | number)[] = [add.ttlMs];
    for (const [field, amount] of add.fields) args.push(field, amount);
    await this.evalOne(COUNTER_ADD, key, args);
  }

  /** HGETALL of every key: one pipeline (standalone, Sentinel), or all sent together (Cluster). */
  async counterRead(keys: readonly string[]): Promise<Record<string, number>[]> {
    if (keys.length === 0) return [];
    const replies = await this.reads('COUNTERREAD', keys, (c, k) => c.hgetall(k));
    return replies.map(parseCounters);
  }

  /** The additions, the trim and the expiry in one script call on the one key (Cluster-safe). */
  async rankAdd(key: string, members: Readonly<Record<string, number>>, options: RankAddOptions): Promise<void> {
    const add = validateRankAdd(members, options);
    if (add.members.length === 0) return;
    const args: (string | number)[] = [add.keep, add.ttlMs, add.mode];
    for (const [member, amount] of add.members) args.push(member, String(amount));
    await this.evalOne(RANK_ADD, key, args);
  }

  /** ZREVRANGE 0 limit-1 WITHSCORES of every key, sent as {@link RedisStore.counterRead} sends its reads. */
  async rankRead(keys: readonly string[], limit: number): Promise<[member: string, score: number][][]> {
    validateRankLimit(limit);
    if (keys.length === 0) return [];
    if (limit === 0) return keys.map(() => []);
    const replies = await this.reads('RANKREAD', keys, (c, k) => c.zrevrange(k, 0, limit - 1, 'WITHSCORES'));
    return replies.map(parseRanking);
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.run('PUBLISH', (c) => c.publish(this.keyPrefix + channel, message));
  }

  /**
   * Subscribes on the subscription connection; resolves once Redis acknowledged SUBSCRIBE. Rejects
   * while Redis is down (nothing is registered then). After a reconnection ioredis resubscribes, so
   * the handler hears messages again, but not those published meanwhile. A handler that throws is
   * logged; the others still run. The returned function removes this handler only; it never rejects.
   */
  async subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>> {
    if (this.closing) throw new StoreError('THEMIS_ERR_STORE_CLOSED');
    const sub = this.subscriber();
    let set = this.handlers.get(channel);
    if (!set) this.handlers.set(channel, (set = new Set()));
    const fn = (message: string) => onMessage(message);
    set.add(fn);
    this.stale.delete(channel);
    const prefixed = this.keyPrefix + channel;
    try {
      await sub.whenReady(this.commandTimeout, true);
      await sub.client.subscribe(prefixed);
    } catch (err) {
      this.removeHandler(channel, fn);
      throw this.wrap('SUBSCRIBE', err);
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      if (!this.removeHandler(channel, fn) || this.closing) return;
      try {
        await sub.whenReady(this.commandTimeout, true);
        await sub.client.unsubscribe(prefixed);
      } catch {
        // Redis is down: the server still has the subscription (ioredis will restore it); drop it
        // after reconnecting. Meanwhile messages find no handler and are ignored.
        if (!this.handlers.has(channel)) this.stale.add(channel);
      }
    };
  }

  /** SET NX (PX when `ttlMs` is positive): one round trip. */
  async setIfAbsent(key: string, value: string, ttlMs?: number): Promise<boolean> {
    const k = this.keyPrefix + key;
    const reply = await this.run('SETNX', (c) => (ttlMs && ttlMs > 0 ? c.set(k, value, 'PX', Math.ceil(ttlMs), 'NX') : c.set(k, value, 'NX')));
    return reply === 'OK';
  }

  /**
   * Runs the operation's script once per call on its one key. Standalone and Sentinel: all calls in
   * one socket write, one network round trip (EVALSHA; EVAL after NOSCRIPT, one more round trip).
   * Cluster: one EVALSHA per call through ioredis, all sent at once (ioredis pipelines only within one
   * node's slots; splitting them per node would save little), so one round trip per node involved.
   * Rejects (as a whole) when Redis fails or does not answer within `commandTimeout`.
   */
  async atomic<Args, Result, Type extends AtomicKeyType>(op: AtomicOperation<Args, Result, Type>, calls: readonly AtomicCall<Args>[]): Promise<Result[]> {
    const n = calls.length;
    checkAtomicCalls(op, calls);
    if (n === 0) return [];
    const replies = new Array<unknown>(n);
    // Calls on one key must run in order. Sent together, a call answered NOSCRIPT (then resent as
    // EVAL) or redirected by a Cluster would run after a later call on the same key: so a key's
    // second call goes in a second wave, sent once the first is answered. Distinct keys (every
    // batch the built-in plugins send) make one wave: one round trip.
    for (const wave of waves(calls)) {
      const got = await this.send(
        op,
        wave.map((i) => calls[i].key),
        wave.map((i) => op.encode(calls[i].args, this.testClock ? calls[i].now : undefined)),
      );
      wave.forEach((at, k) => (replies[at] = got[k]));
    }
    const results = new Array<Result>(n);
    try {
      for (let i = 0; i < n; i++) results[i] = op.decode(replies[i], calls[i].args);
    } catch (err) {
      throw new StoreError('THEMIS_ERR_STORE_COMMAND', { target: this.target, command: op.name, reason: (err as Error).message }, { cause: err });
    }
    return results;
  }

  /** One call of one of the store's own scripts, sent as {@link RedisStore.atomic} sends a batch of one. */
  private async evalOne(script: ScriptText, key: string, args: readonly AtomicArgument[]): Promise<unknown> {
    return (await this.send(script, [key], [args]))[0];
  }

  /**
   * Calls of one script, one per key (without the prefix), the replies in order: standalone and
   * Sentinel, one {@link ScriptBatch} (one socket write); Cluster, one EVALSHA per call through
   * ioredis, all sent at once.
   */
  private send(script: ScriptText, keys: readonly string[], args: readonly (readonly AtomicArgument[])[]): Promise<unknown[]> {
    if (this.main.client instanceof Cluster) return this.run(script.name, (c) => Promise.all(keys.map((key, k) => this.clusterEval(c as Cluster, script, key, args[k]))));
    return this.scripts(
      script,
      keys.map((key, k) => evalshaCall(script, this.keyPrefix + key, args[k])),
    );
  }

  /** One EVALSHA on a Cluster (the key without the prefix), sent again as EVAL when the node has not cached the script. */
  private async clusterEval(c: Cluster, script: ScriptText, key: string, args: readonly AtomicArgument[]): Promise<unknown> {
    const k = this.keyPrefix + key;
    try {
      return await c.evalsha(script.sha, 1, k, ...args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return c.eval(script.lua, 1, k, ...args);
    }
  }

  /**
   * Keys starting with `prefix` (the store's prefix removed): SCAN with MATCH and COUNT 500, on every
   * master of a Cluster. As SCAN, it may yield a key twice when Redis rehashes meanwhile, and keys
   * created or deleted during the scan may or may not appear. Each SCAN call fails fast as any command.
   */
  async *scanKeys(prefix: string): AsyncIterable<string> {
    if (this.closing) throw new StoreError('THEMIS_ERR_STORE_CLOSED');
    await this.main.whenReady(this.commandTimeout, true);
    const pattern = `${globEscape(this.keyPrefix + prefix)}*`;
    const client = this.main.client;
    const nodes: Redis[] = client instanceof Cluster ? client.nodes('master') : [client];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await this.run('SCAN', () => node.scan(cursor, 'MATCH', pattern, 'COUNT', 500));
        for (const k of keys) if (k.startsWith(this.keyPrefix)) yield k.slice(this.keyPrefix.length);
        cursor = next;
      } while (cursor !== '0');
    }
  }

  /** Quits both connections; idempotent. Operations reject with `THEMIS_ERR_STORE_CLOSED` afterwards. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.handlers.clear();
      this.stale.clear();
      await Promise.all([this.main.close(), this.sub?.close()]);
    })();
    return this.closing;
  }

  /** Removes one handler; true when the channel has none left. */
  private removeHandler(channel: string, fn: (message: string) => void): boolean {
    const set = this.handlers.get(channel);
    if (!set || !set.delete(fn)) return false;
    if (set.size > 0) return false;
    this.handlers.delete(channel);
    return true;
  }

  /** The subscription connection, opened on first use. */
  private subscriber(): Connection {
    if (this.sub) return this.sub;
    const main = this.main.client;
    const client = main instanceof Cluster ? main.duplicate() : main.duplicate({ connectionName: 'themis-sub' });
    const sub = new Connection(client, 'subscriber', this.owner);
    client.on('message', (channel: string, message: string) => this.dispatch(channel, message));
    sub.onReconnect = () => {
      for (const channel of this.stale) {
        this.stale.delete(channel);
        if (!this.handlers.has(channel)) client.unsubscribe(this.keyPrefix + channel).catch(() => undefined);
      }
    };
    return (this.sub = sub);
  }

  private dispatch(prefixed: string, message: string): void {
    if (!prefixed.startsWith(this.keyPrefix)) return;
    const channel = prefixed.slice(this.keyPrefix.length);
    const set = this.handlers.get(channel);
    if (!set) return;
    // A handler must not break ioredis' reply parsing (it runs inside the socket's data handler).
    const failed = (err: unknown) => this.owner.report('warn', `handler:${channel}`, { err, channel }, 'redis store: a subscriber failed');
    for (const fn of [...set]) {
      try {
        const r = fn(message) as unknown;
        if (r instanceof Promise) r.catch(failed);
      } catch (err) {
        failed(err);
      }
    }
  }

  /** Runs one command on the command connection, failing fast while it is down. */
  private async run<T>(command: string, fn: (client: Client) => Promise<T>): Promise<T> {
    if (this.closing) throw new StoreError('THEMIS_ERR_STORE_CLOSED');
    await this.main.whenReady(this.commandTimeout, true);
    try {
      const p = fn(this.main.client);
      // A cluster may retry a command through redirections and failovers: bound the whole.
      return await (this.setup.mode === 'cluster' ? this.deadline(p, command) : p);
    } catch (err) {
      throw this.wrap(command, err);
    }
  }

  /**
   * Script calls of one script, already in RESP (EVALSHA), on the standalone or Sentinel connection:
   * one {@link ScriptBatch}, one socket write, failing fast as {@link RedisStore.run} and within
   * `commandTimeout`. Calls answered NOSCRIPT (a restarted or failed-over server lost its script cache)
   * are sent again as EVAL, which caches the script anew. The first failure rejects the whole.
   */
  private async scripts(op: ScriptText, calls: string[]): Promise<unknown[]> {
    const command = op.name;
    if (this.closing) throw new StoreError('THEMIS_ERR_STORE_CLOSED');
    try {
      if (this.main.state !== 'ready') await this.main.whenReady(this.commandTimeout, true);
      const client = this.main.client as Redis;
      const replies = await new ScriptBatch(client, 'evalsha', command, calls, this.deadlines).send();
      let missing: number[] | undefined;
      for (let i = 0; i < replies.length; i++) if (replies[i] instanceof Error) (missing ??= []).push(i);
      if (missing) {
        const again = await new ScriptBatch(client, 'eval', command, missing.map((i) => asEvalCall(op, calls[i])), this.deadlines).send();
        missing.forEach((at, k) => {
          if (again[k] instanceof Error) throw again[k];
          replies[at] = again[k];
        });
      }
      return replies;
    } catch (err) {
      throw this.wrap(command, err);
    }
  }

  /**
   * One read command per key (`send` queues it on the client or pipeline given), the replies in the
   * order of `keys`. Standalone and Sentinel: one ioredis pipeline, one socket write. Cluster: the keys
   * may live on different nodes, so each read goes on its own, all sent at once, the whole bounded by
   * `commandTimeout`. The first failure rejects the whole.
   */
  private async reads(command: string, keys: readonly string[], send: (c: Cluster | ChainableCommander, key: string) => unknown): Promise<unknown[]> {
    return this.run(command, async (c) => {
      if (c instanceof Cluster) return Promise.all(keys.map((k) => send(c, this.keyPrefix + k)));
      const pipeline = c.pipeline();
      for (const k of keys) send(pipeline, this.keyPrefix + k);
      const results = await pipeline.exec();
      if (!results) throw new Error('Connection is closed.');
      return results.map(([err, reply]) => {
        if (err) throw err;
        return reply;
      });
    });
  }

  private deadline<T>(p: Promise<T>, command: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreError('THEMIS_ERR_STORE_TIMEOUT', { target: this.target, command, ms: this.commandTimeout })), this.commandTimeout);
    });
    return Promise.race([p, t]).finally(() => clearTimeout(timer));
  }

  /** The store error an ioredis failure stands for. */
  private wrap(command: string, err: unknown): StoreError {
    if (err instanceof StoreError) return err;
    const e = err instanceof Error ? err : new Error(String(err));
    if (e.message.startsWith('WRONGTYPE')) return new StoreError('THEMIS_ERR_STORE_WRONGTYPE', { command }, { cause: e });
    if (e.message === 'Command timed out') return new StoreError('THEMIS_ERR_STORE_TIMEOUT', { target: this.target, command, ms: this.commandTimeout }, { cause: e });
    if (isConnectionError(e)) return this.owner.unavailable(e, e.message.includes('enableOfflineQueue') ? 'connection lost' : undefined);
    return new StoreError('THEMIS_ERR_STORE_COMMAND', { target: this.target, command, reason: e.message }, { cause: e });
  }
}
