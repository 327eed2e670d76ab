/**
 * The cluster primary of `themis start --workers N`: forks the workers, restarts the ones that die,
 * forwards signals, and serves the status endpoint by asking the workers.
 * @module
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { parseSocketSpec, removeStaleSocket } from '../../milter/index.ts';
import type { LoadedConfig } from '../../config.ts';
import { pagesOf, type HttpRequest, type HttpResponse } from '../../kernel/index.ts';
import { packageVersion } from '../version.ts';
import { decodeWorkerMessage, receive, sendToWorker, type PrimaryMessage, type WorkerMessage } from './messages.ts';
import type { StartOptions } from './options.ts';
import { guardProcess } from './process.ts';
import { clusterStatus, pagesShown, serveStatus, type ProcessStatus } from './status.ts';

/** What the primary is started with. */
export interface PrimaryContext {
  /** The command line's settings. */
  opts: StartOptions;
  /** Where to log. */
  logger: Logger;
  /** How many workers. */
  workers: number;
  /** The milter socket spec the workers share. */
  listen: string;
  /** The status endpoint spec; false: off. */
  http: string | false;
  /** The status endpoint's bearer token. */
  httpToken: string | undefined;
  /** The configuration file, if any. */
  file: string | undefined;
  /** The configuration as first loaded (its plugins declare the pages the start line shows). */
  config: LoadedConfig | undefined;
}

/** A worker's answer to a question of the primary. */
type Answer = Exclude<WorkerMessage, { themis: 'listening' }>;

/** A question awaiting its answer: the kind of answer expected, and what to do with it. */
interface Pending {
  kind: Answer['themis'];
  settle(answer: Answer): void;
}

/** Runs the primary until stopped; resolves with the exit code (1 when a worker cannot start). */
export async function runPrimary(ctx: PrimaryContext): Promise<number> {
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
  const pending = new Map<number, Pending>();
  let onListening: (() => void) | undefined;
  const fork = () => {
    const w = cluster.fork();
    live.set(w.id, w);
    w.on('message', (raw: unknown) => {
      const msg = receive(raw, decodeWorkerMessage, logger);
      if (msg === undefined) return;
      if (msg.themis === 'listening') {
        address = msg.address;
        onListening?.();
        return;
      }
      // An answer that comes after its timeout finds nobody waiting: dropped.
      const waiting = pending.get(msg.id);
      if (waiting?.kind !== msg.themis) return;
      pending.delete(msg.id);
      waiting.settle(msg);
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
    onListening = () => {
      if (++listening !== workers) return;
      onListening = undefined;
      cluster.off('exit', onExit);
      resolve(true);
    };
    for (let i = 0; i < workers; i++) fork();
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
  /** Sends `w` the question `question(id)`; resolves with `settle(answer)`, or with `onTimeout()` after `ms`. */
  const ask = <K extends Answer['themis'], R>(w: Worker, kind: K, question: (id: number) => PrimaryMessage, ms: number, settle: (answer: Extract<Answer, { themis: K }>) => R, onTimeout: () => R) =>
    new Promise<R>((resolve) => {
      const id = ++nextId;
      const timer = setTimeout(() => {
        pending.delete(id);
        resolve(onTimeout());
      }, ms);
      pending.set(id, {
        kind,
        settle: (answer) => {
          clearTimeout(timer);
          resolve(settle(answer as Extract<Answer, { themis: K }>));
        },
      });
      sendToWorker(w, question(id));
    });
  // A worker that does not answer still has a line in the cluster's status, saying so.
  const askStatus = (w: Worker) => ask(w, 'status', (id) => ({ themis: 'status', id }), 2_000, (a) => a.status, () => ({ worker: w.id, pid: w.process.pid, error: 'no answer within 2 s' }) as unknown as ProcessStatus);
  let nextWorker = 0;
  /** A plugin route, answered by one worker (round robin): every worker runs the same plugins on the same store. */
  const askRoute = (request: HttpRequest): Promise<{ response: HttpResponse | null; routes: string[] }> => {
    const list = [...live.values()];
    if (list.length === 0) return Promise.resolve({ response: { status: 503, type: 'text/plain', body: 'no worker is running\n' }, routes: [] });
    const w = list[nextWorker++ % list.length];
    return ask(w, 'http', (id) => ({ themis: 'http', id, request }), 10_000, (a) => ({ response: a.response, routes: a.routes }), () => ({ response: { status: 504, type: 'text/plain', body: `worker ${w.id} did not answer within 10 s\n` }, routes: [] }));
  };
  const { AggregatorRegistry } = await import('prom-client');
  const aggregator = new AggregatorRegistry();
  const statusServer = await serveStatus(
    ctx.http,
    logger,
    {
      route: async (request) => (await askRoute(request)).response ?? undefined,
      routes: async () => (await askRoute({ path: '/', query: {} })).routes,
      status: async () => clusterStatus(startedAt, address, await Promise.all([...live.values()].map(askStatus))),
      metrics: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }),
    },
    ctx.httpToken,
  );
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
      for (const w of live.values()) sendToWorker(w, { themis: 'stop' });
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
