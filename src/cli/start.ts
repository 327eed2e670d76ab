/**
 * `themis start`: the daemon. Reads the command line and the configuration, sets up the logger, and
 * runs one serving process — or, with `--workers N`, a `node:cluster` primary that forks N serving
 * workers sharing one listening socket. The parts live in `./daemon/`: options, runtime build,
 * serving process, reload triggers, status, the primary and its messages with the workers.
 * @module
 */
import cluster from 'node:cluster';
import { DEFAULT_LISTEN } from '../milter/index.ts';
import { createLogger } from './logger.ts';
import { DEFAULT_HTTP } from './http.ts';
import type { LoadedConfig } from '../config.ts';
import type { StoreConfig } from '../store/index.ts';
import { parseStartArgs } from './daemon/options.ts';
import { fatal } from './daemon/process.ts';
import { runPrimary } from './daemon/primary.ts';
import { runServer } from './daemon/server.ts';

export { START_USAGE } from './daemon/options.ts';

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
