/**
 * How a Redis store configuration becomes ioredis' constructor and options: defaults, TLS files, the
 * fail-fast policy every topology shares, and the reconnection backoff.
 * @module
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import type { ClusterOptions, RedisOptions } from 'ioredis';
import { REDIS_DEFAULTS, parseHostPort, type HostPort, type RedisStoreConfig } from './config.ts';
import { StoreError } from './errors.ts';

/** What {@link ioredisOptions} builds: the ioredis constructor to call and its arguments. */
export type IoredisSetup =
  | {
      /** `new Redis(options)`: a standalone server, or a master found through `options.sentinels`. */
      mode: 'standalone' | 'sentinel';
      /** Options of `new Redis()`. */
      options: RedisOptions;
      /** The target without credentials, for logs and errors. */
      target: string;
    }
  | {
      /** `new Cluster(nodes, options)`. */
      mode: 'cluster';
      /** Seed nodes. */
      nodes: HostPort[];
      /** Options of `new Cluster()`. */
      options: ClusterOptions;
      /** The target without credentials, for logs and errors. */
      target: string;
    };

/** Hooks of {@link ioredisOptions}, for tests. */
export interface IoredisOptionsHooks {
  /** Reads a TLS file (default `fs.readFileSync`). */
  readFile?: (path: string) => Buffer | string;
  /** Longest pause between two reconnection attempts, ms (default 2000). */
  maxReconnectDelay?: number;
}

/** Default of {@link RedisStoreOptions.maxReconnectDelay}, ms. */
export const MAX_RECONNECT_DELAY = 2000;

/**
 * Pause before reconnection attempt `attempt` (1-based): 50 ms doubling up to `max`, plus up to 100 ms
 * of jitter so the daemons of a pool do not all reconnect in the same millisecond.
 */
export function reconnectDelay(attempt: number, max = MAX_RECONNECT_DELAY): number {
  return Math.min(50 * 2 ** Math.max(0, attempt - 1), max) + Math.floor(Math.random() * 100);
}

function tlsOptions(tls: RedisStoreConfig['tls'], implied: boolean, readFile: (path: string) => Buffer | string): ConnectionOptions | undefined {
  if (tls === false || (tls === undefined && !implied)) return undefined;
  if (tls === true || tls === undefined) return {};
  const out: ConnectionOptions = {};
  for (const option of ['ca', 'cert', 'key'] as const) {
    const file = tls[option];
    if (file === undefined) continue;
    try {
      out[option] = readFile(file);
    } catch (err) {
      throw new StoreError('THEMIS_ERR_STORE_TLS_FILE', { option, file, reason: (err as Error).message }, { cause: err });
    }
  }
  if (tls.rejectUnauthorized !== undefined) out.rejectUnauthorized = tls.rejectUnauthorized;
  if (tls.servername !== undefined) out.servername = tls.servername;
  return out;
}

const hostPortText = (n: HostPort) => (n.host.includes(':') ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`);

/**
 * The ioredis constructor and options a Redis store configuration stands for (pure, apart from
 * reading the TLS files). Defaults are applied here; the store sets the same policy on every
 * topology: fail fast while disconnected (`enableOfflineQueue: false`), fail rather than replay a
 * command whose connection died (`maxRetriesPerRequest: 0`, `autoResendUnfulfilledCommands: false`),
 * `commandTimeout`, reconnect forever with a capped backoff, resubscribe on reconnect.
 * @throws StoreError `THEMIS_ERR_STORE_TLS_FILE` when a TLS file cannot be read.
 */
export function ioredisOptions(config: RedisStoreConfig, hooks: IoredisOptionsHooks = {}): IoredisSetup {
  const readFile = hooks.readFile ?? ((path: string) => readFileSync(path));
  const max = hooks.maxReconnectDelay ?? MAX_RECONNECT_DELAY;
  const retryStrategy = (attempt: number) => reconnectDelay(attempt, max);
  const connectTimeout = config.connectTimeout ?? REDIS_DEFAULTS.connectTimeout;
  const commandTimeout = config.commandTimeout ?? REDIS_DEFAULTS.commandTimeout;
  const failFast = { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false, autoResubscribe: true, connectTimeout, commandTimeout, connectionName: 'themis' };
  const auth = { ...(config.username !== undefined && { username: config.username }), ...(config.password !== undefined && { password: config.password }) };

  if (config.cluster) {
    const nodes = config.cluster.nodes.map((n) => parseHostPort(n)!);
    const tls = tlsOptions(config.tls, false, readFile);
    const options: ClusterOptions = {
      clusterRetryStrategy: retryStrategy,
      enableOfflineQueue: false,
      enableReadyCheck: true,
      slotsRefreshTimeout: Math.min(commandTimeout, 1000),
      redisOptions: { ...auth, ...failFast, ...(tls && { tls }) },
      // With TLS, connect to the names given so the certificate is checked against them.
      ...(tls && { dnsLookup: (address: string, callback: (err: null, address: string) => void) => callback(null, address) }),
    };
    return { mode: 'cluster', nodes, options, target: `cluster:${nodes.map(hostPortText).join(',')}` };
  }

  const common: RedisOptions = { ...failFast, ...auth, enableOfflineQueue: false, enableReadyCheck: true, retryStrategy, lazyConnect: false, ...(config.db !== undefined && { db: config.db }) };

  if (config.sentinel) {
    const sentinels = config.sentinel.nodes.map((n) => parseHostPort(n)!);
    const tls = tlsOptions(config.tls, false, readFile);
    const options: RedisOptions = {
      ...common,
      sentinels,
      name: config.sentinel.name,
      ...(config.sentinel.password !== undefined && { sentinelPassword: config.sentinel.password }),
      sentinelCommandTimeout: commandTimeout,
      sentinelRetryStrategy: retryStrategy,
      // TLS applies to the sentinels and to the master alike.
      ...(tls && { tls, sentinelTLS: tls, enableTLSForSentinelMode: true }),
    };
    return { mode: 'sentinel', options, target: `sentinel:${config.sentinel.name}@${sentinels.map(hostPortText).join(',')}` };
  }

  const url = new URL(config.url ?? REDIS_DEFAULTS.url);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = url.port ? Number(url.port) : 6379;
  const urlDb = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : undefined;
  const username = config.username ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = config.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
  const db = config.db ?? urlDb;
  const tls = tlsOptions(config.tls, url.protocol === 'rediss:', readFile);
  const options: RedisOptions = {
    ...common,
    host,
    port,
    ...(username !== undefined && { username }),
    ...(password !== undefined && { password }),
    ...(db !== undefined && { db }),
    ...(tls && { tls }),
  };
  return { mode: 'standalone', options, target: `${tls ? 'rediss' : 'redis'}://${hostPortText({ host, port })}/${db ?? 0}` };
}
