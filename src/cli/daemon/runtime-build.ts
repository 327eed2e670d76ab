/**
 * How a serving process builds its runtimes: the configuration file, loaded again at each reload,
 * with the live policies of the store merged over it, made into a kernel on the shared store and
 * metrics registry.
 * @module
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { LoadedConfig } from '../../config.ts';
import type { KernelLogger, RuntimeManager } from '../../kernel/index.ts';
import { hasLive, mergeLive, readLive, type LiveItems } from '../../live/index.ts';
import type { Store } from '../../store/index.ts';

/** What {@link createRuntimeManager} builds from. */
export interface RuntimeBuildContext {
  /** The configuration file (undefined: none, every message accepted). */
  file: string | undefined;
  /** The configuration as first loaded, before the logger existed: the first build uses it. */
  config: LoadedConfig | undefined;
  /** The store the kernels share, and where the live policies are read. */
  store: Store;
  /** The registry the kernels share. */
  registry: Registry;
  /** Where to log. */
  logger: Logger;
}

/** Settings that a reload cannot change: the socket, the endpoint, the workers and the store are set up once. */
const RESTART_ONLY = ['listen', 'http', 'workers', 'store'] as const;

/** A runtime manager whose builds read the file and the live policies as they are at that moment. */
export async function createRuntimeManager(ctx: RuntimeBuildContext): Promise<RuntimeManager> {
  const { file, store, registry, logger } = ctx;
  const klog = logger as unknown as KernelLogger;
  // The modules themselves, not the package index: that one re-exports the Redis store.
  const { Kernel } = await import('../../kernel/kernel.ts');
  const { RuntimeManager } = await import('../../kernel/runtime.ts');
  const { loadConfig, kernelOptionsOf } = await import('../../config.ts');
  let first = ctx.config;
  /** The live policies last read: a store that does not answer at a reload keeps them applying. */
  let lastLive: LiveItems | undefined;
  const restartOnly = (next: LoadedConfig) => {
    const was = ctx.config;
    if (!was) return;
    const changed = RESTART_ONLY.filter((k) => JSON.stringify(was[k]) !== JSON.stringify(next[k]));
    if (changed.length > 0) logger.warn({ settings: changed }, `changed settings take effect only after a restart: ${changed.join(', ')}`);
  };
  return new RuntimeManager({
    logger: klog,
    registry,
    build: async () => {
      const cfg = first ?? (file ? await loadConfig(file) : undefined);
      if (!first && cfg) restartOnly(cfg);
      first = undefined;
      try {
        lastLive = await readLive(store);
      } catch (err) {
        logger.warn({ code: (err as { code?: string }).code, err: (err as Error).message }, `live policies could not be read from the store; ${lastLive ? 'the last ones read still apply' : 'only the file applies'}`);
      }
      const live = lastLive && hasLive(lastLive) ? lastLive : undefined;
      const options = mergeLive(kernelOptionsOf(cfg), live);
      const kernel = await Kernel.create({ ...options, logger: klog, store, registry }).catch((err: Error) => {
        // Kernel errors name the policy and the place; the file is added here, where it is known.
        if (file && !err.message.includes(file)) err.message = `configuration ${file}: ${err.message}`;
        throw err;
      });
      return { kernel, info: { file, hash: servedHash(cfg, live), loadedAt: cfg?.loadedAt ?? new Date(), plugins: (cfg?.plugins ?? []).map((p) => p.plugin.name), policies: options.policies.length, livePolicies: live ? Object.keys(live.policies).length : 0 } };
    },
  });
}

/** The served configuration's hash: the file's, and — since live items change what is served without changing the file — theirs. */
function servedHash(cfg: LoadedConfig | undefined, live: LiveItems | undefined): string {
  const base = cfg?.hash ?? 'none';
  return live ? `${base}+live-${createHash('sha256').update(JSON.stringify(live)).digest('hex').slice(0, 8)}` : base;
}
