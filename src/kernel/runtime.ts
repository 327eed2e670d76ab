/**
 * Runtimes and reload: a runtime is one kernel built from one configuration, immutable once built.
 * A reload builds a new one beside the serving one, validates it, and swaps it in for new
 * connections; connections in flight finish on the runtime they started with, which is shut down
 * once its last connection closes. A configuration that fails to build is refused and logged, and
 * the serving runtime goes on. The store and the metrics registry outlive runtimes, so nothing
 * counted or stored is lost on reload.
 * @module
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { MilterApplication } from '../milter/index.ts';
import { ThemisError, isThemisError } from './errors.ts';
import { sharedMetric } from './metrics.ts';
import type { Kernel, KernelLogger } from './kernel.ts';

/** What identifies a runtime's configuration. */
export interface RuntimeInfo {
  /** The configuration file, if any. */
  file: string | undefined;
  /** Hash of the configuration (see `LoadedConfig.hash`); `none` without a file. */
  hash: string;
  /** When the configuration was loaded. */
  loadedAt: Date;
  /** 1 for the runtime started with, +1 per successful reload. */
  generation: number;
  /** Names of the loaded plugins. */
  plugins: string[];
  /** Number of policies. */
  policies: number;
  /** How many of them come from the live store (see `src/live/`); absent when the builder does not merge live policies. */
  livePolicies?: number;
}

/** A runtime: its kernel and what it was built from. */
export interface Runtime {
  /** The kernel serving it. */
  kernel: Kernel;
  /** What it was built from. */
  info: RuntimeInfo;
}

/** What a build returns: the kernel (not yet ready) and its configuration's identity. */
export interface RuntimeBuild {
  /** The new kernel. */
  kernel: Kernel;
  /** Its configuration's identity (the manager numbers the generation). */
  info: Omit<RuntimeInfo, 'generation'>;
}

/** Where runtimes serve: a milter server (or anything that can switch applications). */
export interface RuntimeHost {
  /** Serves new connections with `app`. */
  setApplication(app: MilterApplication): void;
  /** Open connections served by `app`. */
  connectionsUsing(app: MilterApplication): number;
}

/** What started a reload. */
export type ReloadTrigger = 'SIGHUP' | 'file' | 'resync' | 'manual';

/** The outcome of one reload. */
export type ReloadResult = { ok: true; runtime: Runtime; unchanged?: boolean } | { ok: false; error: Error };

/** Settings of a {@link RuntimeManager}. */
export interface RuntimeManagerOptions {
  /** Builds a runtime from the configuration as it is now; throws a coded error when it is invalid. */
  build(): Promise<RuntimeBuild>;
  /** Where to log. */
  logger: KernelLogger;
  /** The registry the runtimes share: the manager adds `themis_config_*` metrics to it. */
  registry: Registry;
  /** How often a retired runtime's open connections are counted, in ms (default 500). */
  retireCheckInterval?: number;
}

/** Builds runtimes, swaps them atomically, and retires the old ones once their connections end. */
export class RuntimeManager {
  private readonly options: RuntimeManagerOptions;
  private readonly log: KernelLogger;
  private runtime: Runtime | undefined;
  private host: RuntimeHost | undefined;
  private readonly retiring = new Set<Runtime>();
  private retireTimer: NodeJS.Timeout | undefined;
  private reloading: Promise<ReloadResult> | undefined;
  private queued: Promise<ReloadResult> | undefined;
  private readonly info: Gauge<'hash'>;
  private readonly loadedAt: Gauge;
  private readonly reloads: Counter<'trigger' | 'result'>;
  /** The last refused reload, for `themis status`. */
  lastError: { at: Date; trigger: ReloadTrigger; code: string | undefined; message: string } | undefined;

  constructor(options: RuntimeManagerOptions) {
    this.options = options;
    this.log = options.logger;
    const r = options.registry;
    this.info = sharedMetric<Gauge<'hash'>>(r, Gauge, { name: 'themis_config_info', help: 'The serving configuration: 1, labelled with its hash', labelNames: ['hash'] });
    this.loadedAt = sharedMetric<Gauge>(r, Gauge, { name: 'themis_config_loaded_timestamp_seconds', help: 'When the serving configuration was loaded (Unix time)' });
    this.reloads = sharedMetric<Counter<'trigger' | 'result'>>(r, Counter, { name: 'themis_config_reloads_total', help: 'Configuration reloads, by trigger and result (ok, refused)', labelNames: ['trigger', 'result'] });
  }

  /** The serving runtime. */
  get current(): Runtime {
    if (!this.runtime) throw new Error('RuntimeManager.start() was not called');
    return this.runtime;
  }

  /** Runtimes replaced by a reload that still serve open connections. */
  get retiringCount(): number {
    return this.retiring.size;
  }

  /** Builds the first runtime and runs its plugins' `ready` hooks; throws when the configuration is invalid. */
  async start(): Promise<Runtime> {
    const built = await this.options.build();
    await built.kernel.ready();
    this.runtime = { kernel: built.kernel, info: { ...built.info, generation: 1 } };
    this.publishInfo();
    return this.runtime;
  }

  /** Serves the current runtime on `host`, and every runtime a reload builds. */
  attach(host: RuntimeHost): void {
    this.host = host;
    host.setApplication(this.current.kernel.application);
  }

  /**
   * Builds a new runtime and swaps it in. One reload runs at a time; triggers that arrive meanwhile
   * are folded into one more reload after it, so the last edit always wins. Never throws: a refused
   * configuration is logged, counted, and returned as `{ ok: false }`.
   */
  reload(trigger: ReloadTrigger): Promise<ReloadResult> {
    if (this.reloading) {
      // Runs after the current reload's `finally` has cleared `reloading`, so it starts a fresh one.
      this.queued ??= this.reloading.then(() => {
        this.queued = undefined;
        return this.reload(trigger);
      });
      return this.queued;
    }
    this.reloading = this.doReload(trigger).finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  private async doReload(trigger: ReloadTrigger): Promise<ReloadResult> {
    const previous = this.current;
    const started = Date.now();
    let built: RuntimeBuild;
    try {
      built = await this.options.build();
      await built.kernel.ready();
    } catch (err) {
      const error = err as Error;
      this.reloads.inc({ trigger, result: 'refused' });
      this.lastError = { at: new Date(), trigger, code: isThemisError(err) ? err.code : (err as { code?: string }).code, message: error.message };
      const refused = new ThemisError('THEMIS_ERR_RELOAD_REFUSED', { trigger, hash: previous.info.hash, reason: error.message }, { cause: err });
      this.log.error({ code: refused.code, cause: this.lastError.code, trigger, serving: previous.info.hash }, refused.message);
      return { ok: false, error: refused };
    }
    const runtime: Runtime = { kernel: built.kernel, info: { ...built.info, generation: previous.info.generation + 1 } };
    this.runtime = runtime;
    this.host?.setApplication(runtime.kernel.application);
    this.publishInfo();
    this.reloads.inc({ trigger, result: 'ok' });
    this.lastError = undefined;
    this.retire(previous);
    await runtime.kernel.reloaded();
    this.log.info(
      { trigger, previous: previous.info.hash, hash: runtime.info.hash, generation: runtime.info.generation, plugins: runtime.info.plugins, policies: runtime.info.policies, ms: Date.now() - started },
      runtime.info.hash === previous.info.hash ? 'configuration reloaded (unchanged)' : 'configuration reloaded',
    );
    return { ok: true, runtime, unchanged: runtime.info.hash === previous.info.hash };
  }

  private publishInfo(): void {
    const info = this.current.info;
    this.info.reset();
    this.info.set({ hash: info.hash }, 1);
    this.loadedAt.set(info.loadedAt.getTime() / 1000);
  }

  /** Shuts a replaced runtime down once no connection uses it any more. */
  private retire(runtime: Runtime): void {
    this.retiring.add(runtime);
    this.sweepRetiring();
    if (this.retiring.size > 0 && !this.retireTimer) {
      this.retireTimer = setInterval(() => this.sweepRetiring(), this.options.retireCheckInterval ?? 500);
      this.retireTimer.unref();
    }
  }

  private sweepRetiring(): void {
    for (const r of this.retiring) {
      if (this.host && this.host.connectionsUsing(r.kernel.application) > 0) continue;
      this.retiring.delete(r);
      void r.kernel.shutdown().then(() => this.log.debug?.({ hash: r.info.hash, generation: r.info.generation }, 'previous runtime retired'));
    }
    if (this.retiring.size === 0 && this.retireTimer) {
      clearInterval(this.retireTimer);
      this.retireTimer = undefined;
    }
  }

  /** Shuts down every runtime (call after the server has drained). */
  async stop(): Promise<void> {
    if (this.retireTimer) clearInterval(this.retireTimer);
    this.retireTimer = undefined;
    await this.reloading?.catch(() => undefined);
    const all = [...this.retiring, ...(this.runtime ? [this.runtime] : [])];
    this.retiring.clear();
    for (const r of all) await r.kernel.shutdown();
  }
}
