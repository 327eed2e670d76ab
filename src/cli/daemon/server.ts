/**
 * One serving process — the daemon alone, or one worker of a cluster: opens the store, builds the
 * runtime, listens on the milter socket, answers status (itself, or through the primary), reloads
 * on its triggers, and drains on a stop.
 * @module
 */
import cluster from 'node:cluster';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { createMilterServer, isMilterError, type MilterLogger, type MilterServer } from '../../milter/index.ts';
import type { LoadedConfig } from '../../config.ts';
import type { HttpResponse, KernelLogger, RuntimeManager } from '../../kernel/index.ts';
import type { Store, StoreConfig } from '../../store/index.ts';
import { acceptAllApplication } from '../accept-all.ts';
import { packageVersion } from '../version.ts';
import { decodePrimaryMessage, receive, sendToPrimary } from './messages.ts';
import type { StartOptions } from './options.ts';
import { fatal, guardProcess } from './process.ts';
import { startReloadTriggers } from './reload-triggers.ts';
import { createRuntimeManager } from './runtime-build.ts';
import { pagesShown, processResources, serveStatus, type ProcessStatus } from './status.ts';

/** What a serving process is started with. */
export interface ServerContext {
  /** The command line's settings. */
  opts: StartOptions;
  /** Where to log. */
  logger: Logger;
  /** The milter socket spec. */
  listen: string;
  /** The status endpoint spec; false: off (always, in a worker: the primary serves it). */
  http: string | false;
  /** The status endpoint's bearer token. */
  httpToken: string | undefined;
  /** The configuration file, if any. */
  file: string | undefined;
  /** The configuration as first loaded. */
  config: LoadedConfig | undefined;
  /** The store's settings, overrides applied. */
  storeConfig: StoreConfig;
}

/** Serves until stopped; resolves with the exit code (1 when it cannot start). */
export async function runServer(ctx: ServerContext): Promise<number> {
  const { opts, logger, file } = ctx;
  const startedAt = new Date();
  const klog = logger as unknown as KernelLogger;
  // The Redis client is loaded only when the store is Redis.
  const store: Store = opts.engineOnly
    ? undefined!
    : ctx.storeConfig.type === 'memory'
      ? new (await import('../../store/store.ts')).MemoryStore()
      : (await import('../../store/index.ts')).createStore(ctx.storeConfig, { logger: klog });
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
    manager = await createRuntimeManager({ file, config: ctx.config, store, registry: registry!, logger });
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

  const status = (gc = false): ProcessStatus => {
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
      resources: processResources(gc),
    };
  };

  // Set once serving; a stop asked before then is dropped, and the primary's deadline kills the worker.
  let stopFromPrimary: (() => void) | undefined;
  if (cluster.isWorker) {
    // The primary serves the status endpoint: it asks for this process's status, and hands plugin routes over.
    process.on('message', (raw: unknown) => {
      const msg = receive(raw, decodePrimaryMessage, logger);
      if (msg === undefined) return;
      switch (msg.themis) {
        case 'status':
          sendToPrimary({ themis: 'status', id: msg.id, status: status() });
          return;
        case 'http': {
          const reply = (response: HttpResponse | undefined) => sendToPrimary({ themis: 'http', id: msg.id, response: response ?? null, routes: manager?.current.kernel.routePaths() ?? [] });
          (manager ? manager.current.kernel.handleHttp(msg.request) : Promise.resolve(undefined)).then(reply, (err: unknown) => reply({ status: 500, type: 'text/plain', body: `${(err as Error).message}\n` }));
          return;
        }
        case 'stop':
          stopFromPrimary?.();
          return;
      }
    });
  }

  const statusServer = await serveStatus(
    ctx.http,
    logger,
    {
      status: async (query) => status(query?.gc === '1'),
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
  if (cluster.isWorker) sendToPrimary({ themis: 'listening', address: server.address });

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
    stopFromPrimary = () => stop('primary');
  });
}
