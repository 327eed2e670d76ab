/**
 * `themis start`: the daemon. One process, or with `--workers N` a `node:cluster` primary that forks N
 * workers sharing one listening socket. Each serving process builds a runtime from the configuration
 * and reloads it on SIGHUP, on a change of the file, and on a resync published through the store.
 * @module
 */
import cluster, { type Worker } from 'node:cluster';
import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { DEFAULT_LISTEN, createMilterServer, isMilterError, parseSocketSpec, removeStaleSocket, type MilterLogger, type MilterServer } from '../milter/index.ts';
import { acceptAllApplication } from './accept-all.ts';
import { createLogger } from './logger.ts';
import { DEFAULT_HTTP, endpointUrl, startStatusServer, type StatusServer, type StatusSource } from './http.ts';
import type { LoadedConfig } from '../config.ts';
import { pagesOf, type HttpRequest, type HttpResponse, type KernelLogger, type PluginPage, type RuntimeManager } from '../kernel/index.ts';
import type { Store, StoreConfig } from '../store/index.ts';
import { envConfigPath, envRedisUrl, envRedisPassword } from './env.ts';

/** Keys and channel of the store's resync protocol (under the store's key prefix). */
export const RESYNC = { versionKey: 'config:version', channel: 'config:resync' } as const;

/**
 * Makes every daemon sharing the store reload: bumps the version (which a daemon that missed the
 * message finds by polling) and announces it. Resolves with the new version.
 */
export async function announceResync(store: Store): Promise<number> {
  const version = await store.increment(RESYNC.versionKey, 1);
  await store.publish(RESYNC.channel, String(version));
  return version;
}

export const START_USAGE = `Usage: themis start [options]

Runs the milter daemon in the foreground.

Options:
  --config PATH          configuration file (default: themis.config.{ts,mts,js,mjs,json,yaml,yml},
                         .themisrc* or package.json "themis" in the working directory; env THEMIS_CONFIG)
  --listen SPEC          milter socket: inet:PORT@HOST, inet6:PORT@[ADDR] or unix:/path
                         (default ${DEFAULT_LISTEN}; env THEMIS_LISTEN; else the configuration's listen)
  --http SPEC|off        status endpoint (/status, /metrics, /healthz, plugin pages) (default ${DEFAULT_HTTP}; env THEMIS_HTTP)
  --http-token TOKEN     bearer token the status endpoint requires (env THEMIS_HTTP_TOKEN; config http.token)
  --redis-url URL        use Redis as the store (env THEMIS_REDIS_URL; overrides the configuration's store url)
  --redis-password PW    Redis password (env THEMIS_REDIS_PASSWORD)
  --workers N            N processes on one listening socket (needs a shared store; env THEMIS_WORKERS)
  --log-level LEVEL      trace, debug, info, warn, error or fatal (default info; env THEMIS_LOG_LEVEL)
  --max-connections N    most simultaneous MTA connections per process (default 10000)
  --drain-timeout MS     on SIGTERM, how long open connections may finish (default 10000)
  --engine-only          serve the bare milter engine with an accept-all application (the benchmark's reference)
  -h, --help             print this text

Signals: SIGHUP reloads the configuration; SIGTERM/SIGINT stop gracefully (a second one exits at once).
Exit codes: 0 after a clean stop, 1 when it cannot start, 2 for bad usage.
`;

interface StartOptions {
  config: string | undefined;
  listen: string | undefined;
  http: string | false | undefined;
  /** Bearer token of the status endpoint. */
  httpToken: string | undefined;
  redisUrl: string | undefined;
  redisPassword: string | undefined;
  workers: number | undefined;
  logLevel: string | undefined;
  maxConnections: number;
  drainTimeout: number;
  engineOnly: boolean;
}

function parseStartArgs(args: string[]): StartOptions | number {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: 'string' },
        listen: { type: 'string' },
        http: { type: 'string' },
        'http-token': { type: 'string' },
        'redis-url': { type: 'string' },
        'redis-password': { type: 'string' },
        workers: { type: 'string' },
        'log-level': { type: 'string' },
        'max-connections': { type: 'string' },
        'drain-timeout': { type: 'string' },
        'engine-only': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`themis start: ${(err as Error).message}\n\n${START_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(START_USAGE);
    return 0;
  }
  const env = process.env;
  const int = (value: string | undefined, name: string, fallback: number | undefined, min: number): number | undefined | null => {
    if (value === undefined || value === '') return fallback;
    if (!/^\d+$/.test(value) || Number(value) < min) {
      process.stderr.write(`themis start: --${name} expects a whole number ≥ ${min}, got ${JSON.stringify(value)}\n`);
      return null;
    }
    return Number(value);
  };
  const maxConnections = int(values['max-connections'] as string | undefined, 'max-connections', 10_000, 0);
  const drainTimeout = int(values['drain-timeout'] as string | undefined, 'drain-timeout', 10_000, 0);
  const workers = int((values.workers as string | undefined) ?? env.THEMIS_WORKERS, 'workers', undefined, 1);
  if (maxConnections === null || drainTimeout === null || workers === null) return 2;
  const http = (values.http as string | undefined) ?? env.THEMIS_HTTP;
  return {
    config: (values.config as string | undefined) ?? envConfigPath(),
    listen: (values.listen as string | undefined) ?? env.THEMIS_LISTEN,
    http: http === 'off' || http === 'false' ? false : http,
    httpToken: (values['http-token'] as string | undefined) ?? env.THEMIS_HTTP_TOKEN,
    redisUrl: (values['redis-url'] as string | undefined) ?? envRedisUrl(),
    redisPassword: (values['redis-password'] as string | undefined) ?? envRedisPassword(),
    workers,
    logLevel: (values['log-level'] as string | undefined) ?? env.THEMIS_LOG_LEVEL,
    maxConnections: maxConnections!,
    drainTimeout: drainTimeout!,
    engineOnly: values['engine-only'] === true,
  };
}

/** Reads the package version. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** `themis start`. Resolves with the exit code once the daemon has stopped. */
export async function start(args: string[]): Promise<number> {
  const opts = parseStartArgs(args);
  if (typeof opts === 'number') return opts;
  const role = cluster.isWorker ? 'worker' : 'main';
  // --engine-only (the benchmark's bare engine) loads nothing of the configuration, the kernel or
  // the stores: its memory and CPU are the engine's alone.
  const configModule = opts.engineOnly ? undefined : await import('../config.ts');
  const file = configModule?.findConfig(opts.config);

  // The first load decides the logger's settings, so it happens before there is a logger: its
  // failure is printed through a plain JSON logger.
  let config: LoadedConfig | undefined;
  let firstError: unknown;
  if (file) {
    try {
      config = await configModule!.loadConfig(file);
    } catch (err) {
      firstError = err;
    }
  }
  const logger = await createLogger({ level: opts.logLevel ?? config?.log.level ?? 'info', pretty: config?.log.pretty, base: cluster.isWorker ? { worker: cluster.worker?.id } : undefined });
  if (firstError) return fatal(logger, firstError, file);

  const storeConfig: StoreConfig = opts.engineOnly ? { type: 'memory' } : (await import('../store/config.ts')).applyStoreOverrides(config?.store ?? { type: 'memory' }, { url: opts.redisUrl, password: opts.redisPassword });
  const workers = opts.workers ?? config?.workers ?? 1;
  if (workers > 1 && !opts.engineOnly && storeConfig.type === 'memory') {
    const { ThemisError } = await import('../kernel/errors.ts');
    return fatal(logger, new ThemisError('THEMIS_ERR_WORKERS_MEMORY_STORE', { workers }), file);
  }
  const listen = opts.listen ?? config?.listen ?? DEFAULT_LISTEN;
  const http = opts.http ?? config?.http ?? DEFAULT_HTTP;
  if (workers > 1 && cluster.isPrimary) return runPrimary({ opts, logger, workers, listen, http, httpToken: opts.httpToken ?? config?.httpToken, file, config });
  const httpToken = opts.httpToken ?? config?.httpToken;
  const code = await runServer({ opts, logger, listen, http: role === 'worker' ? false : http, httpToken, file, config, storeConfig });
  // A worker's IPC channel to the primary would keep it alive after it stopped serving.
  if (cluster.isWorker) process.exit(code);
  return code;
}

/** One bad connection, handler or promise must never take the daemon down: log it, keep serving. */
function guardProcess(logger: Logger): void {
  process.on('unhandledRejection', (reason) => logger.error({ code: 'THEMIS_ERR_UNHANDLED_REJECTION', err: reason }, 'unhandled promise rejection'));
  process.on('uncaughtException', (err) => logger.error({ code: 'THEMIS_ERR_UNCAUGHT_EXCEPTION', err }, 'uncaught exception'));
}

/** Starts the status endpoint unless disabled; it is secondary, so failing to listen is logged and mail keeps flowing. */
async function serveStatus(spec: string | false, logger: Logger, source: StatusSource, token: string | undefined): Promise<StatusServer | undefined> {
  if (spec === false) return undefined;
  try {
    return await startStatusServer(spec, source, (err) => logger.warn({ err }, 'status endpoint error'), { token });
  } catch (err) {
    logger.error({ code: 'THEMIS_ERR_HTTP_LISTEN', err }, `status endpoint cannot listen on ${spec}: ${(err as Error).message}; serving mail without it`);
    return undefined;
  }
}

function fatal(logger: Logger, err: unknown, file: string | undefined): number {
  const e = err as Error & { code?: string };
  const inFile = file && !e.message.includes(file) ? `configuration ${file}: ` : '';
  logger.fatal({ code: e.code, file }, `${inFile}${e.message}`);
  return 1;
}

interface ServerContext {
  opts: StartOptions;
  logger: Logger;
  listen: string;
  http: string | false;
  httpToken: string | undefined;
  file: string | undefined;
  config: LoadedConfig | undefined;
  storeConfig: StoreConfig;
}

/** Status of one serving process (what `/status` shows, or one entry of `workers` in cluster mode). */
export interface ProcessStatus {
  pid: number;
  worker: number | undefined;
  version: string;
  node: string;
  startedAt: string;
  uptimeSeconds: number;
  listen: string | undefined;
  connections: number;
  config: { file: string | null; hash: string; loadedAt: string; generation: number; plugins: string[]; policies: number; retiring: number; lastReloadError: unknown } | null;
  store: { type: string; status: string };
}

async function runServer(ctx: ServerContext): Promise<number> {
  const { opts, logger, file } = ctx;
  const startedAt = new Date();
  const klog = logger as unknown as KernelLogger;
  // The Redis client is loaded only when the store is Redis.
  const store: Store = opts.engineOnly
    ? undefined!
    : ctx.storeConfig.type === 'memory'
      ? new (await import('../store/store.ts')).MemoryStore()
      : (await import('../store/index.ts')).createStore(ctx.storeConfig, { logger: klog });
  const promClient = opts.engineOnly ? undefined : await import('prom-client');
  const registry: Registry | undefined = promClient ? new promClient.Registry() : undefined;
  // Process metrics (CPU, memory, event-loop lag, GC) beside Themis's own: one scrape tells both.
  if (promClient && registry) promClient.collectDefaultMetrics({ register: registry });
  if (promClient && registry && cluster.isWorker) {
    // Constructing one installs prom-client's worker-side listener that answers the primary's /metrics.
    new promClient.AggregatorRegistry();
    promClient.AggregatorRegistry.setRegistries([registry]);
  }

  let manager: RuntimeManager | undefined;
  if (!opts.engineOnly) {
    // The modules themselves, not the package index: that one re-exports the Redis store.
    const { Kernel } = await import('../kernel/kernel.ts');
    const { RuntimeManager } = await import('../kernel/runtime.ts');
    const { loadConfig, kernelOptionsOf } = await import('../config.ts');
    let first = ctx.config;
    const { readLive, mergeLive, hasLive } = await import('../live.ts');
    /** The live policies last read: a store that does not answer at a reload keeps them applying. */
    let lastLive: Awaited<ReturnType<typeof readLive>> | undefined;
    const restartOnly = (next: LoadedConfig) => {
      const was = ctx.config;
      if (!was) return;
      const changed = (['listen', 'http', 'workers', 'store'] as const).filter((k) => JSON.stringify(was[k]) !== JSON.stringify(next[k]));
      if (changed.length > 0) logger.warn({ settings: changed }, `changed settings take effect only after a restart: ${changed.join(', ')}`);
    };
    manager = new RuntimeManager({
      logger: klog,
      registry: registry!,
      build: async () => {
        const cfg = first ?? (file ? await loadConfig(file) : undefined);
        if (!first && cfg) restartOnly(cfg);
        first = undefined;
        let options = kernelOptionsOf(cfg);
        try {
          lastLive = await readLive(store);
        } catch (err) {
          logger.warn({ code: (err as { code?: string }).code, err: (err as Error).message }, `live policies could not be read from the store; ${lastLive ? 'the last ones read still apply' : 'only the file applies'}`);
        }
        const live = lastLive && hasLive(lastLive) ? lastLive : undefined;
        if (live) options = mergeLive(options, live);
        const kernel = await Kernel.create({ ...options, logger: klog, store, registry: registry! }).catch((err: Error) => {
          // Kernel errors name the policy and the place; the file is added here, where it is known.
          if (file && !err.message.includes(file)) err.message = `configuration ${file}: ${err.message}`;
          throw err;
        });
        // Live items change what is served without changing the file: the hash says so.
        const hash = live ? `${cfg?.hash ?? 'none'}+live-${createHash('sha256').update(JSON.stringify(live)).digest('hex').slice(0, 8)}` : (cfg?.hash ?? 'none');
        return { kernel, info: { file, hash, loadedAt: cfg?.loadedAt ?? new Date(), plugins: (cfg?.plugins ?? []).map((p) => p.plugin.name), policies: (options.policies ?? []).length, livePolicies: live ? Object.keys(live.policies).length : 0 } };
      },
    });
    try {
      await manager.start();
    } catch (err) {
      await store?.close();
      return fatal(logger, err, file);
    }
    if (!file) logger.warn({ looked: 'themis.config.{ts,mts,js,mjs,json,yaml,yml}, .themisrc*, package.json' }, 'no configuration file found: running with no plugins (every message is accepted)');
  }

  guardProcess(logger);

  const app = manager ? manager.current.kernel.application : acceptAllApplication();
  const server: MilterServer = createMilterServer(app, { logger: logger as unknown as MilterLogger, maxConnections: opts.maxConnections, manageSocketFile: !cluster.isWorker });
  try {
    await server.listen(ctx.listen);
  } catch (err) {
    const code = isMilterError(err) ? err.code : (err as NodeJS.ErrnoException).code;
    logger.fatal({ code, err }, `cannot listen on ${ctx.listen}: ${(err as Error).message}`);
    await manager?.stop();
    await store?.close();
    return 1;
  }
  manager?.attach(server);

  const status = (): ProcessStatus => {
    const rt = manager?.current;
    return {
      pid: process.pid,
      worker: cluster.worker?.id,
      version: packageVersion(),
      node: process.version,
      startedAt: startedAt.toISOString(),
      uptimeSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000),
      listen: server.address,
      connections: server.connectionCount,
      config: rt
        ? { file: rt.info.file ?? null, hash: rt.info.hash, loadedAt: rt.info.loadedAt.toISOString(), generation: rt.info.generation, plugins: rt.info.plugins, policies: rt.info.policies, retiring: manager!.retiringCount, lastReloadError: manager!.lastError ?? null }
        : null,
      store: { type: opts.engineOnly ? 'none' : ctx.storeConfig.type, status: opts.engineOnly ? 'none' : ((store as { status?: string }).status ?? 'ready') },
    };
  };
  if (cluster.isWorker) {
    process.on('message', (msg: { themis?: string; id?: number }) => {
      if (msg?.themis === 'status') process.send?.({ themis: 'status', id: msg.id, status: status() });
    });
  }

  if (cluster.isWorker) {
    // The primary serves the status endpoint and hands plugin routes to a worker.
    process.on('message', (msg: { themis?: string; id?: number; request?: HttpRequest }) => {
      if (msg?.themis !== 'http' || !msg.request) return;
      const reply = (response: HttpResponse | undefined) => process.send?.({ themis: 'http', id: msg.id, response: response ?? null, routes: manager?.current.kernel.routePaths() ?? [] });
      (manager ? manager.current.kernel.handleHttp(msg.request) : Promise.resolve(undefined)).then(reply, (err: unknown) => reply({ status: 500, type: 'text/plain', body: `${(err as Error).message}\n` }));
    });
  }

  const statusServer = await serveStatus(
    ctx.http,
    logger,
    {
      status: async () => status(),
      metrics: async () => (registry ? { contentType: registry.contentType, body: await registry.metrics() } : { contentType: 'text/plain; version=0.0.4', body: '' }),
      route: async (request) => manager?.current.kernel.handleHttp(request),
      routes: async () => manager?.current.kernel.routePaths() ?? [],
    },
    ctx.httpToken,
  );

  const stopTriggers = manager ? await startReloadTriggers({ manager, file, config: ctx.config, store, logger }) : () => {};

  const cur = manager?.current.info;
  const mode = manager ? { config: file ?? null, hash: cur?.hash, plugins: cur?.plugins, policies: cur?.policies, store: ctx.storeConfig.type } : { engineOnly: true };
  const shown = cluster.isWorker ? { fields: {}, words: '' } : pagesShown(manager?.current.kernel.pages() ?? [], statusServer, ctx.httpToken);
  logger.info({ listen: server.address, http: statusServer?.address ?? false, ...shown.fields, version: packageVersion(), node: process.version, ...mode }, cluster.isWorker ? 'worker started' : manager ? `themis started${shown.words}` : 'themis started (engine only, accept-all application)');
  if (cluster.isWorker) process.send?.({ themis: 'listening', address: server.address });

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        // A worker hears a stop twice by design (systemd signals the whole control group, and the
        // primary asks too): only the primary turns a second signal into an immediate exit.
        if (cluster.isWorker) return;
        logger.warn({ signal }, 'second signal: exiting now, without waiting for open connections');
        process.exit(1);
      }
      stopping = true;
      logger.info({ signal, open: server.connectionCount }, 'stopping: draining connections');
      stopTriggers();
      server.close({ drainTimeout: opts.drainTimeout }).then(
        async () => {
          await statusServer?.close();
          await manager?.stop();
          await store?.close();
          logger.info(cluster.isWorker ? 'worker stopped' : 'themis stopped');
          resolve(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    // In a cluster, Ctrl-C reaches every process of the group: the primary coordinates the stop.
    process.on('SIGINT', () => (cluster.isWorker ? undefined : stop('SIGINT')));
    if (cluster.isWorker) process.on('message', (msg: { themis?: string }) => msg?.themis === 'stop' && stop('primary'));
  });
}

interface TriggerContext {
  manager: RuntimeManager;
  file: string | undefined;
  config: LoadedConfig | undefined;
  store: Store;
  logger: Logger;
}

/** SIGHUP, the file watcher and the store's resync channel; returns a function that stops them. */
async function startReloadTriggers({ manager, file, config, store, logger }: TriggerContext): Promise<() => void> {
  const { configHash } = await import('../config.ts');
  const onHup = () => void manager.reload('SIGHUP');
  process.on('SIGHUP', onHup);
  const settings = config?.reload ?? { watch: true, resync: true, pollInterval: 5_000 };
  const stoppers: (() => void)[] = [() => process.off('SIGHUP', onHup)];

  if (file && settings.watch) {
    // The directory is watched, not the file: editors save by writing a new file and renaming it
    // over the old one, which a watch on the old inode never sees.
    let timer: NodeJS.Timeout | undefined;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(dirname(file), { persistent: false }, (_event, name) => {
        if (name !== basename(file)) return;
        clearTimeout(timer);
        timer = setTimeout(() => {
          let hash: string;
          try {
            hash = configHash(readFileSync(file));
          } catch (err) {
            logger.warn({ file, err: (err as Error).message }, 'configuration file unreadable; still serving the loaded configuration');
            return;
          }
          if (hash !== manager.current.info.hash) void manager.reload('file');
        }, 150);
      });
      watcher.on('error', (err) => logger.warn({ err }, 'configuration watch failed; SIGHUP still reloads'));
      stoppers.push(() => {
        clearTimeout(timer);
        watcher?.close();
      });
    } catch (err) {
      logger.warn({ err, file }, 'cannot watch the configuration file; SIGHUP still reloads');
    }
  }

  if (settings.resync) {
    // A version counter in the store, announced on a channel: the message makes every daemon reload
    // at once, and the periodic read catches up a daemon that was disconnected when it was sent.
    let seen: string | undefined;
    let subscribed: (() => Promise<void>) | undefined;
    let closed = false;
    const check = (version: string | undefined) => {
      if (version === undefined || version === seen) return;
      seen = version;
      logger.info({ version }, 'resync requested through the store');
      void manager.reload('resync');
    };
    const subscribe = async () => {
      if (subscribed || closed) return;
      try {
        const off = await store.subscribe(RESYNC.channel, (v: string) => check(v));
        subscribed = off;
        if (closed) void off();
      } catch (err) {
        logger.warn({ code: (err as { code?: string }).code ?? 'THEMIS_ERR_STORE_UNAVAILABLE', err: (err as Error).message }, 'cannot subscribe to resync messages yet; retrying');
      }
    };
    seen = await store.get(RESYNC.versionKey).catch(() => undefined);
    await subscribe();
    const poll = setInterval(() => {
      void subscribe();
      store.get(RESYNC.versionKey).then(check, () => undefined);
    }, settings.pollInterval);
    poll.unref();
    stoppers.push(() => {
      closed = true;
      clearInterval(poll);
      void subscribed?.().catch(() => undefined);
    });
  }
  return () => stoppers.forEach((s) => s());
}

/**
 * What the start line says of the plugins' pages for a browser (the monitor's dashboard): a `pages`
 * field, page name → URL (`plugin/name` when two plugins use one name), and words for the message.
 * With the status endpoint off, the pages are not served, and the line says so.
 */
function pagesShown(pages: readonly PluginPage[], statusServer: StatusServer | undefined, token: string | undefined): { fields: { pages?: Record<string, string> }; words: string } {
  if (pages.length === 0) return { fields: {}, words: '' };
  if (!statusServer) return { fields: {}, words: `; no ${pages.map((p) => `${p.plugin} ${p.name}`).join(', ')}: the status endpoint is off` };
  const fields: Record<string, string> = {};
  const words: string[] = [];
  for (const p of pages) {
    const url = endpointUrl(statusServer.address, p.path);
    fields[pages.filter((o) => o.name === p.name).length > 1 ? `${p.plugin}/${p.name}` : p.name] = url;
    words.push(`${p.plugin} ${p.name} at ${url}`);
  }
  return { fields: { pages: fields }, words: `; ${words.join(', ')}${token === undefined ? '' : ' (open it once with ?token=…)'}` };
}

interface PrimaryContext {
  opts: StartOptions;
  logger: Logger;
  workers: number;
  listen: string;
  http: string | false;
  httpToken: string | undefined;
  file: string | undefined;
  config: LoadedConfig | undefined;
}

/** The cluster primary: forks the workers, restarts the ones that die, forwards signals, serves /status. */
async function runPrimary(ctx: PrimaryContext): Promise<number> {
  const { logger, workers, opts } = ctx;
  const startedAt = new Date();
  const spec = parseSocketSpec(ctx.listen);
  if (spec.kind === 'unix') {
    try {
      await removeStaleSocket(spec.path);
    } catch (err) {
      logger.fatal({ code: (err as { code?: string }).code }, (err as Error).message);
      return 1;
    }
  }
  let stopping = false;
  const live = new Map<number, Worker>();
  let address: string | undefined;
  const fork = () => {
    const w = cluster.fork();
    live.set(w.id, w);
    w.on('message', (msg: { themis?: string; address?: string }) => {
      if (msg?.themis === 'listening') address = msg.address;
    });
    return w;
  };
  // Every worker must listen before the daemon counts as started; one that exits first means it cannot start.
  const startup = await new Promise<boolean>((resolve) => {
    let listening = 0;
    const onExit = (_w: Worker, code: number) => {
      if (listening < workers) {
        logger.fatal({ code }, 'a worker exited while starting');
        resolve(false);
      }
    };
    cluster.on('exit', onExit);
    for (let i = 0; i < workers; i++) {
      fork().on('message', (msg: { themis?: string }) => {
        if (msg?.themis === 'listening' && ++listening === workers) {
          cluster.off('exit', onExit);
          resolve(true);
        }
      });
    }
  });
  if (!startup) {
    for (const w of live.values()) w.process.kill('SIGKILL');
    return 1;
  }
  cluster.on('exit', (w, code, signal) => {
    live.delete(w.id);
    if (stopping) return;
    logger.error({ worker: w.id, code, signal }, 'worker died; starting another');
    setTimeout(() => !stopping && fork(), 1_000).unref();
  });

  let nextId = 0;
  const askStatus = (w: Worker) =>
    new Promise<unknown>((resolve) => {
      const id = ++nextId;
      const timer = setTimeout(() => {
        w.off('message', onMsg);
        resolve({ worker: w.id, pid: w.process.pid, error: 'no answer within 2 s' });
      }, 2_000);
      const onMsg = (msg: { themis?: string; id?: number; status?: unknown }) => {
        if (msg?.themis !== 'status' || msg.id !== id) return;
        clearTimeout(timer);
        w.off('message', onMsg);
        resolve(msg.status);
      };
      w.on('message', onMsg);
      w.send({ themis: 'status', id });
    });
  let nextWorker = 0;
  /** A plugin route, answered by one worker (round robin): every worker runs the same plugins on the same store. */
  const askRoute = (request: HttpRequest) =>
    new Promise<{ response: HttpResponse | null; routes: string[] }>((resolve) => {
      const list = [...live.values()];
      if (list.length === 0) return resolve({ response: { status: 503, type: 'text/plain', body: 'no worker is running\n' }, routes: [] });
      const w = list[nextWorker++ % list.length];
      const id = ++nextId;
      const timer = setTimeout(() => {
        w.off('message', onMsg);
        resolve({ response: { status: 504, type: 'text/plain', body: `worker ${w.id} did not answer within 10 s\n` }, routes: [] });
      }, 10_000);
      const onMsg = (msg: { themis?: string; id?: number; response?: HttpResponse | null; routes?: string[] }) => {
        if (msg?.themis !== 'http' || msg.id !== id) return;
        clearTimeout(timer);
        w.off('message', onMsg);
        resolve({ response: msg.response ?? null, routes: msg.routes ?? [] });
      };
      w.on('message', onMsg);
      w.send({ themis: 'http', id, request });
    });
  const { AggregatorRegistry } = await import('prom-client');
  const aggregator = new AggregatorRegistry();
  const statusServer = await serveStatus(ctx.http, logger, {
    route: async (request) => (await askRoute(request)).response ?? undefined,
    routes: async () => (await askRoute({ path: '/', query: {} })).routes,
    status: async () => {
      const list = (await Promise.all([...live.values()].map(askStatus))) as ProcessStatus[];
      const hashes = [...new Set(list.map((s) => s.config?.hash).filter(Boolean))];
      return { pid: process.pid, version: packageVersion(), node: process.version, mode: 'cluster', startedAt: startedAt.toISOString(), uptimeSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000), listen: address, connections: list.reduce((n, s) => n + (s.connections ?? 0), 0), config: hashes.length === 1 ? list[0].config : { hash: 'mixed', hashes }, store: list[0]?.store, workers: list };
    },
    metrics: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }),
  }, ctx.httpToken);
  guardProcess(logger);
  process.on('SIGHUP', () => {
    logger.info({ workers: live.size }, 'SIGHUP: reloading every worker');
    for (const w of live.values()) w.process.kill('SIGHUP');
  });
  // The workers set the plugins up; their pages are declared by the definitions the primary loaded too.
  const shown = pagesShown(pagesOf((ctx.config?.plugins ?? []).map((e) => e.plugin)), statusServer, ctx.httpToken);
  logger.info({ listen: address, http: statusServer?.address ?? false, ...shown.fields, workers, version: packageVersion(), node: process.version, config: ctx.file ?? null, hash: ctx.config?.hash }, `themis started${shown.words}`);

  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now, without waiting for open connections');
        for (const w of live.values()) w.process.kill('SIGKILL');
        process.exit(1);
      }
      stopping = true;
      logger.info({ signal, workers: live.size }, 'stopping: draining every worker');
      for (const w of live.values()) w.send({ themis: 'stop' });
      const deadline = setTimeout(() => {
        for (const w of live.values()) w.process.kill('SIGKILL');
      }, opts.drainTimeout + 5_000);
      const check = setInterval(async () => {
        if (live.size > 0) return;
        clearInterval(check);
        clearTimeout(deadline);
        await statusServer?.close();
        if (spec.kind === 'unix') await import('node:fs/promises').then((fs) => fs.unlink(spec.path)).catch(() => undefined);
        logger.info('themis stopped');
        resolve(0);
      }, 50);
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
