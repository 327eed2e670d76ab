/**
 * The Redis store's connections: one ioredis client each (commands, or subscriptions), their health
 * (ready, connecting, down), waiting for readiness with a deadline, telling connection failures from
 * command failures, and the rate-limited log of what went wrong.
 * @module
 */
import { once } from 'node:events';
import { Cluster, type Redis } from 'ioredis';
import { StoreError } from './errors.ts';
import type { RedisStoreOptions, RedisStoreStatus } from './redis.ts';

/** An ioredis client of either topology. */
export type Client = Redis | Cluster;

const AUTH_ERROR = /WRONGPASS|NOAUTH|NOPERM|invalid password|invalid username-password/i;
const CONNECTION_ERROR_MESSAGES = new Set(['Connection is closed.', "Stream isn't writeable and enableOfflineQueue options is false", "Cluster isn't ready and enableOfflineQueue options is false", 'None of startup nodes is available']);

/** A short, stable name for a kind of error: the errno code, the Redis error prefix, or the class. */
function errorKind(err: Error & { code?: unknown }): string {
  if (typeof err.code === 'string') return err.code;
  return /^([A-Z][A-Z_]+)\b/.exec(err.message)?.[1] ?? err.name;
}

/**
 * The error without what must not reach a log: ioredis attaches the failed command to a reply error,
 * and the handshake's (HELLO 3 AUTH user password, AUTH password) carries the password.
 */
function withoutSecrets(err: Error): Error {
  const command = (err as { command?: { name?: string } }).command;
  if (!command || !/^(hello|auth)$/i.test(command.name ?? '')) return err;
  const clean = new Error(err.message);
  clean.name = err.name;
  clean.stack = `${err.name}: ${err.message}`;
  return clean;
}

export function isConnectionError(err: Error & { code?: unknown }): boolean {
  return err.name === 'AbortError' || err.name === 'MaxRetriesPerRequestError' || err.name === 'ClusterAllFailedError' || CONNECTION_ERROR_MESSAGES.has(err.message) || (typeof err.code === 'string' && /^E[A-Z]+$/.test(err.code));
}

/** At most one log line per kind per interval; counts what it held back. */
class LogLimiter {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  private readonly intervalMs: number;

  constructor(intervalMs: number) {
    this.intervalMs = intervalMs;
  }

  /** The number of lines held back since the last one when a line may be written now, else undefined. */
  allow(kind: string): number | undefined {
    const now = Date.now();
    const entry = this.last.get(kind);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return undefined;
    }
    this.last.set(kind, { at: now, suppressed: 0 });
    return entry?.suppressed ?? 0;
  }
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
  /** A command waiting for the first connection: rejected as soon as an attempt fails. */
  failFast: boolean;
}

type ConnectionState = RedisStoreStatus;

/** What a connection needs from its store: the target, coded errors, the rate-limited logger. */
export interface Owner {
  readonly target: string;
  unavailable(cause: Error | undefined, reason?: string): StoreError;
  authError(cause: Error): StoreError;
  report(level: 'info' | 'warn' | 'error', kind: string, fields: Record<string, unknown>, message: string): void;
}

/** One ioredis client (commands, or subscriptions) and what the store knows of its health. */
export class Connection {
  readonly client: Client;
  readonly role: 'commands' | 'subscriber';
  state: ConnectionState = 'connecting';
  lastError: Error | undefined;
  authFailed = false;
  closed = false;
  /** Resolves at the first `ready`; never rejects. */
  readonly firstReady: Promise<void>;
  private everReady = false;
  private downSince = 0;
  private readonly waiters = new Set<Waiter>();
  private readonly owner: Owner;
  private resolveFirstReady!: () => void;
  /** Called on every `ready` after the first (a reconnection). */
  onReconnect: (() => void) | undefined;

  constructor(client: Client, role: 'commands' | 'subscriber', owner: Owner) {
    this.client = client;
    this.role = role;
    this.owner = owner;
    this.firstReady = new Promise((resolve) => (this.resolveFirstReady = resolve));
    client.on('ready', () => this.up());
    client.on('error', (err: Error) => this.failed(err));
    client.on('close', () => this.down());
    client.on('end', () => this.down());
    // A cluster reports each node's trouble apart; the cluster as a whole may still serve.
    if (client instanceof Cluster) client.on('node error', (err: Error, node: string) => this.owner.report('error', `node:${errorKind(err)}`, { err, node, connection: role }, 'redis store: cluster node error'));
  }

  private up(): void {
    if (this.closed) return;
    const wasDown = this.everReady && this.state === 'down';
    this.state = 'ready';
    this.lastError = undefined;
    this.authFailed = false;
    if (wasDown) this.owner.report('info', 'restored', { connection: this.role, downMs: Date.now() - this.downSince }, 'redis store: connection restored');
    const reconnected = this.everReady;
    this.everReady = true;
    this.resolveFirstReady();
    for (const w of this.waiters) w.resolve();
    this.waiters.clear();
    if (reconnected) this.onReconnect?.();
  }

  private failed(error: Error): void {
    if (this.closed) return;
    const err = withoutSecrets(error);
    this.lastError = err;
    const auth = AUTH_ERROR.test(err.message);
    if (auth) this.authFailed = true;
    this.owner.report('error', `error:${errorKind(err)}`, { err, connection: this.role }, auth ? 'redis store: authentication failed' : 'redis store: connection error');
    if (this.state === 'connecting') this.markDown();
    if (auth) this.settle((w) => !w.failFast, this.owner.authError(err));
  }

  private down(): void {
    if (this.closed || this.state === 'down') return;
    if (this.state === 'ready') this.owner.report('warn', 'lost', { connection: this.role }, 'redis store: connection lost; reconnecting');
    this.markDown();
  }

  private markDown(): void {
    this.state = 'down';
    this.downSince = Date.now();
    this.settle((w) => w.failFast, this.unavailable());
  }

  /** Why commands fail while down: the refused credentials, or the last connection error. */
  unavailable(): StoreError {
    return this.authFailed && this.lastError ? this.owner.authError(this.lastError) : this.owner.unavailable(this.lastError);
  }

  private settle(which: (w: Waiter) => boolean, err: Error): void {
    for (const w of this.waiters) {
      if (!which(w)) continue;
      this.waiters.delete(w);
      w.reject(err);
    }
  }

  /**
   * Resolves when the connection is ready. `failFast` (commands): rejects at once while down, and
   * waits at most `ms` for a first connection. Otherwise (`connect()`): waits up to `ms`, rejecting
   * early only when the credentials are refused.
   */
  whenReady(ms: number, failFast: boolean): Promise<void> {
    if (this.state === 'ready') return Promise.resolve();
    if (this.closed) return Promise.reject(new StoreError('THEMIS_ERR_STORE_CLOSED'));
    if (failFast && this.state === 'down') return Promise.reject(this.unavailable());
    if (!failFast && this.authFailed && this.lastError) return Promise.reject(this.owner.authError(this.lastError));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        const reason = this.lastError?.message ?? 'no answer';
        reject(failFast ? this.owner.unavailable(undefined, `not connected after ${ms} ms (${reason})`) : new StoreError('THEMIS_ERR_STORE_CONNECT', { target: this.owner.target, ms, reason }, { cause: this.lastError }));
      }, ms);
      const w: Waiter = {
        failFast,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.waiters.add(w);
    });
  }

  /** QUIT when connected, then disconnect; resolves once the client has ended (at most ~1 s). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.state = 'down';
    this.settle(() => true, new StoreError('THEMIS_ERR_STORE_CLOSED'));
    const c = this.client;
    if (c.status === 'ready') {
      try {
        await c.quit();
      } catch {
        // Lost while quitting: disconnect below.
      }
    }
    if (c.status !== 'end') {
      const ended = once(c, 'end', { signal: AbortSignal.timeout(1000) }).catch(() => undefined);
      c.disconnect();
      await ended;
    }
  }
}

/** The connections' view of their store. */
export function owner(target: string, options: RedisStoreOptions): Owner {
  const log = options.logger;
  const limiter = new LogLimiter(options.logIntervalMs ?? 10_000);
  return {
    target,
    unavailable: (cause, reason) => new StoreError('THEMIS_ERR_STORE_UNAVAILABLE', { target, reason: reason ?? cause?.message ?? 'connection lost' }, { cause }),
    authError: (cause) => new StoreError('THEMIS_ERR_STORE_AUTH', { target, reason: cause.message }, { cause }),
    // At most one line per kind per interval; the next line says how many were held back.
    report(level, kind, fields, message) {
      if (!log) return;
      const suppressed = limiter.allow(kind);
      if (suppressed === undefined) return;
      const line = { store: target, ...fields, ...(suppressed > 0 && { suppressed }) };
      if (level === 'info') (log.info ?? log.warn).call(log, line, message);
      else log[level](line, message);
    },
  };
}
