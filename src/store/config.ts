/**
 * The store section of the configuration: which store plugins share (the embedded in-memory one, or
 * Redis: standalone, Sentinel or Cluster), its zod schema, and the command-line/environment overrides.
 * @module
 */
import { z } from 'zod';
import { StoreError } from './errors.ts';

/** The embedded in-memory store: one process, nothing persisted (the default). */
export interface MemoryStoreConfig {
  /** `'memory'`. */
  type: 'memory';
  /**
   * Most keys held (default 500,000): past it, a new key evicts the least recently written key that has
   * an expiry (see docs/reference/store.md, "Memory and expiry").
   */
  maxKeys?: number;
  /** How often expired keys nobody reads are dropped, ms (default 60,000). */
  sweepIntervalMs?: number;
}

/**
 * TLS settings of a Redis connection. `ca`, `cert` and `key` are file paths (PEM), read when the store
 * is created, so a renewed certificate is picked up at the next start or reload.
 */
export interface RedisTlsConfig {
  /** CA bundle (file path) that signs the server certificate; default: Node's bundled CAs. */
  ca?: string;
  /** Client certificate (file path), for servers that require mutual TLS. */
  cert?: string;
  /** Private key of `cert` (file path). */
  key?: string;
  /** Verify the server certificate (default true). Turn off only for tests. */
  rejectUnauthorized?: boolean;
  /** Name to verify the server certificate against (SNI), when it differs from the host connected to. */
  servername?: string;
}

/** Redis Sentinel: the store asks the sentinels where the master of `name` is and follows failovers. */
export interface RedisSentinelConfig {
  /** Master group name, as in `sentinel monitor NAME …`. */
  name: string;
  /** Sentinel addresses, `'host:port'` (`'[::1]:26379'` for IPv6). */
  nodes: string[];
  /** Password of the sentinels themselves (`requirepass` in sentinel.conf); `password` is the master's. */
  password?: string;
}

/** Redis Cluster: the store discovers the slots from any of the seed nodes. */
export interface RedisClusterConfig {
  /** Seed nodes, `'host:port'`; one reachable node is enough, list several. */
  nodes: string[];
}

/** A Redis store, shared by every daemon of a pool. */
export interface RedisStoreConfig {
  /** `'redis'`. */
  type: 'redis';
  /**
   * Standalone server, `redis://[[user]:password@]host[:port][/db]` or `rediss://…` (TLS). Default
   * `redis://127.0.0.1:6379`. Not combined with `sentinel` or `cluster`, whose nodes give the addresses.
   * `username`, `password` and `db` given separately win over the URL's.
   */
  url?: string;
  /** Password (`requirepass`, or the ACL user's); wins over the URL's. Never logged. */
  password?: string;
  /** ACL user name (Redis ≥ 6); default `default`. */
  username?: string;
  /** Database index (default 0; a cluster has only 0). */
  db?: number;
  /**
   * Prefix of every key and every pub/sub channel the store touches (default `'themis:'`), so several
   * applications, or several Themis pools, can share one Redis.
   */
  keyPrefix?: string;
  /** TLS: `true` for system CAs, or settings. A `rediss://` URL implies `true`; an explicit value wins. */
  tls?: boolean | RedisTlsConfig;
  /** Reach the master through Redis Sentinel (exclusive with `cluster` and `url`). */
  sentinel?: RedisSentinelConfig;
  /** Use Redis Cluster (exclusive with `sentinel` and `url`). */
  cluster?: RedisClusterConfig;
  /** Deadline of one connection attempt (TCP, TLS and handshake), ms; default 5000. */
  connectTimeout?: number;
  /**
   * Deadline of one command, ms; default 2000. A command that gets no answer in time rejects, and so
   * does every command while the connection is down: the calling plugin's `onError` decides.
   */
  commandTimeout?: number;
}

/** The store configuration: `{ type: 'memory' }` (the default) or a Redis store. */
export type StoreConfig = MemoryStoreConfig | RedisStoreConfig;

/** Defaults of the Redis store's settings. */
export const REDIS_DEFAULTS = {
  /** Where a Redis store connects without `url`, `sentinel` or `cluster`. */
  url: 'redis://127.0.0.1:6379',
  /** Prefix of keys and channels. */
  keyPrefix: 'themis:',
  /** ms. */
  connectTimeout: 5000,
  /** ms. */
  commandTimeout: 2000,
} as const;

/** A `host:port` address parsed; IPv6 hosts without brackets. */
export interface HostPort {
  /** Host name or address. */
  host: string;
  /** TCP port. */
  port: number;
}

const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([^\s:[\]/@]+)):(\d{1,5})$/;

/** Parses `'host:port'` or `'[v6addr]:port'`; undefined when malformed. */
export function parseHostPort(spec: string): HostPort | undefined {
  const m = HOST_PORT.exec(spec.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1] ?? m[2], port };
}

/** Why `url` is not a usable Redis URL, or undefined when it is. */
function redisUrlProblem(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return 'expected a redis:// or rediss:// URL';
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') return `expected a redis:// or rediss:// URL, got ${u.protocol}//`;
  if (!u.hostname) return 'the URL has no host';
  if (u.pathname !== '' && u.pathname !== '/' && !/^\/\d+$/.test(u.pathname)) return 'the URL path must be empty or a database number (/0)';
  return undefined;
}

const hostPort = z.string().refine((s) => parseHostPort(s) !== undefined, { message: "expected 'host:port'" });
const timeout = z.number().int().positive().max(600_000);

const memorySchema = z.strictObject({
  type: z.literal('memory'),
  maxKeys: z.number().int('expected a whole number of keys').min(1, 'expected at least 1 key').optional(),
  sweepIntervalMs: z.number().int('expected whole ms').min(1_000, 'expected at least 1,000 ms').max(2 ** 31 - 1, 'expected at most 2^31 − 1 ms').optional(),
});

const tlsSchema = z.union([
  z.boolean(),
  z.strictObject({
    ca: z.string().min(1).optional(),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    rejectUnauthorized: z.boolean().optional(),
    servername: z.string().min(1).optional(),
  }),
]);

const redisSchema = z
  .strictObject({
    type: z.literal('redis'),
    url: z.string().superRefine((url, ctx) => {
      const problem = redisUrlProblem(url);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }).optional(),
    password: z.string().optional(),
    username: z.string().min(1).optional(),
    db: z.number().int().min(0).max(65535).optional(),
    keyPrefix: z.string().optional(),
    tls: tlsSchema.optional(),
    sentinel: z
      .strictObject({
        name: z.string().min(1),
        nodes: z.array(hostPort).min(1, { message: 'list at least one sentinel' }),
        password: z.string().optional(),
      })
      .optional(),
    cluster: z.strictObject({ nodes: z.array(hostPort).min(1, { message: 'list at least one seed node' }) }).optional(),
    connectTimeout: timeout.optional(),
    commandTimeout: timeout.optional(),
  })
  .superRefine((c, ctx) => {
    if (c.sentinel && c.cluster) ctx.addIssue({ code: 'custom', path: ['cluster'], message: 'sentinel and cluster are mutually exclusive: a store uses one Redis topology' });
    if (c.url !== undefined && (c.sentinel || c.cluster)) ctx.addIssue({ code: 'custom', path: ['url'], message: `url cannot be combined with ${c.sentinel ? 'sentinel' : 'cluster'} (its nodes give the addresses; set password, username, db and tls separately)` });
    if (c.cluster && c.db !== undefined && c.db !== 0) ctx.addIssue({ code: 'custom', path: ['db'], message: 'Redis Cluster has only database 0' });
  });

/**
 * The schema of the store section: `{ type: 'memory' }` when absent, otherwise a memory or Redis
 * configuration. Objects are strict (an unknown key is an error, so a typo is not silently ignored).
 */
export const storeConfigSchema: z.ZodType<StoreConfig, StoreConfig | undefined> = z
  .discriminatedUnion('type', [memorySchema, redisSchema])
  .default({ type: 'memory' });

/**
 * Validates a store configuration; throws a `THEMIS_ERR_STORE_CONFIG` {@link StoreError} naming the
 * first problem's path (`sentinel.nodes.0: expected 'host:port'`).
 */
export function parseStoreConfig(input: unknown): StoreConfig {
  const r = storeConfigSchema.safeParse(input);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const path = issue.path.length ? issue.path.map(String).join('.') : issue.code === 'invalid_union' ? 'type' : '(store)';
  throw new StoreError('THEMIS_ERR_STORE_CONFIG', { path, reason: issue.message }, { cause: r.error });
}

/**
 * Overrides of the store configuration from the command line (`--redis-url`, `--redis-password`) or
 * the environment (`THEMIS_REDIS_URL`, `THEMIS_REDIS_PASSWORD`). The caller resolves which of the two
 * wins; empty strings count as absent.
 */
export interface StoreOverrides {
  /** A Redis URL: makes the store a standalone Redis store at that URL, whatever the file says. */
  url?: string;
  /** The Redis password: replaces the configured one (a memory store ignores it). */
  password?: string;
}

/**
 * The effective store configuration: `config` (the file's, or undefined for none) with `overrides`
 * applied. A URL override turns a memory configuration into a Redis one and replaces a file's
 * `sentinel`/`cluster` (the operator named the server to use); the file's other Redis settings
 * (prefix, timeouts, TLS files) are kept. The result is validated: a bad URL throws
 * `THEMIS_ERR_STORE_CONFIG`.
 */
export function applyStoreOverrides(config: StoreConfig | undefined, overrides: StoreOverrides): StoreConfig {
  let result: StoreConfig = config ?? { type: 'memory' };
  if (overrides.url) {
    const { sentinel: _s, cluster: _c, ...rest } = result.type === 'redis' ? result : { type: 'redis' as const };
    result = { ...rest, url: overrides.url };
  }
  if (overrides.password && result.type === 'redis') result = { ...result, password: overrides.password };
  return result === config ? result : parseStoreConfig(result);
}
