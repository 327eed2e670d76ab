/**
 * The kernel: the object a daemon builds from a configuration. It coordinates the parts that do the
 * work: plugin-setup.ts sets the plugins up and validates the policies, dispatch.ts serves them to the
 * MTA as a milter application (per-connection state in session-state.ts, the plugins' views of it in
 * plugin-views.ts), hook-metrics.ts counts what their hooks cost. The kernel itself owns the life
 * cycle (ready, reload, shutdown, and the clean-up after a failed load), the store and the plugins'
 * HTTP routes.
 * @module
 */
import { Registry } from 'prom-client';
import type { MilterApplication } from '../milter/index.ts';
import { MemoryStore, type Store } from '../store/store.ts';
import type { RegisteredError, ThemisError } from './errors.ts';
import { Dispatcher } from './dispatch.ts';
import { hookErrorCounter, hookTiming } from './hook-metrics.ts';
import { setUpPlugins, type LoadedPlugin, type PluginRoute } from './plugin-setup.ts';
import type { PolicyDefinition, PolicySettings } from './policy.ts';
import type { DecisionTrace, HttpRequest, HttpResponse, PluginDefinition, OnErrorVerdict, PluginLogger, StageHookName } from './plugin.ts';

/** The kernel's version, matched against each plugin's `kernel` range. */
export { KERNEL_VERSION } from './plugin-setup.ts';

/** A plugin as listed for loading, with per-installation settings. */
export interface PluginEntry {
  /** The plugin object. */
  plugin: PluginDefinition<any, any>;
  /** Plugin-level options (validated with the plugin's `options` schema). */
  options?: unknown;
  /** Overrides the plugin's default priority. */
  priority?: number;
  /** Overrides the plugin's `onError`. */
  onError?: OnErrorVerdict;
}

/** A policy: its matching settings ({@link PolicyDefinition}) and one field per plugin that claims it. */
export interface PolicyInput extends PolicyDefinition {
  /** Fields claimed by plugins, by field name. */
  [field: string]: unknown;
}

/** The logger the kernel writes to (pino-compatible). */
export interface KernelLogger extends PluginLogger {
  child(bindings: object): KernelLogger;
  /** pino's level check: lets the kernel skip building a trace line nobody will see. */
  isLevelEnabled?(level: string): boolean;
}

export type { DecisionTrace } from './plugin.ts';

/** Kernel settings. */
export interface KernelOptions {
  /** Plugins to load, in order (order breaks priority ties for execution, not for verdicts). */
  plugins: readonly PluginEntry[];
  /** Policies; each field must be claimed by a loaded plugin. */
  policies?: readonly PolicyInput[];
  /** Groups, pools and outbound networks the policies' `match` refers to. */
  policySettings?: PolicySettings;
  /** Where to log (pino); silent by default. */
  logger?: KernelLogger;
  /** The store plugins share (default: a new in-memory store). */
  store?: Store;
  /** Metrics registry (default: a new one). */
  registry?: Registry;
  /** Deadline for each hook call in ms (default 10,000: well below Postfix's 30 s command timeout). */
  hookTimeout?: number;
  /** Default `onError` for plugins that set none (default tempfail). */
  onError?: OnErrorVerdict;
  /**
   * The MTA the negotiation is shaped for (default `'postfix'`): `'postfix'` always answers DATA,
   * `'sendmail'` leaves it off unless a plugin taps it (see ThemisConfig.mta for why).
   */
  mta?: 'postfix' | 'sendmail';
  /** Called with every message's decision trace (tests, monitoring). */
  onDecision?: (trace: DecisionTrace) => void;
  /**
   * Called with every plugin mistake the kernel had to refuse, replace or ignore — an invalid verdict
   * (`THEMIS_ERR_HOOK_BAD_VERDICT`), a reply the MTA would refuse (`THEMIS_ERR_HOOK_BAD_REPLY`), a
   * verdict on a stage that is not answered (`THEMIS_ERR_HOOK_LISTENER_VERDICT`) — besides logging it.
   * The test harness fails the test with it, so a plugin's tests catch what the daemon would only log.
   */
  onPluginMistake?: (error: ThemisError) => void;
}

const silent: KernelLogger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silent };

/** The loaded kernel. Create it with {@link Kernel.create}. */
export class Kernel {
  /** The milter application to serve with `createMilterServer`. */
  readonly application: MilterApplication;
  /** The metrics registry (the monitor plugin serves it). */
  readonly registry: Registry;
  /** The store plugins share. */
  readonly store: Store;
  /** The one error registry of this kernel: every core code and every code its plugins declare, by code. */
  readonly errors: ReadonlyMap<string, RegisteredError>;
  /** True when the kernel made its store (and so closes it); a store passed in belongs to the caller. */
  private readonly ownsStore: boolean;
  private readonly plugins: LoadedPlugin[];
  /** Runs the plugins' stage hooks; {@link application} is its milter application. */
  private readonly dispatcher: Dispatcher;
  /** HTTP routes the plugins registered, by path. */
  private readonly routes: ReadonlyMap<string, PluginRoute>;

  private constructor(plugins: LoadedPlugin[], registry: Registry, store: Store, ownsStore: boolean, dispatcher: Dispatcher, routes: ReadonlyMap<string, PluginRoute>, errors: ReadonlyMap<string, RegisteredError>) {
    this.plugins = plugins;
    this.errors = errors;
    this.registry = registry;
    this.store = store;
    this.ownsStore = ownsStore;
    this.dispatcher = dispatcher;
    this.routes = routes;
    this.application = dispatcher.application;
  }

  /**
   * Loads and sets up every plugin, validates options and policies; throws a coded error for the first
   * problem. A failure leaves nothing behind: the plugins already set up are shut down (their
   * `shutdown` hooks, in reverse order) and a store the kernel created is closed, so a refused
   * configuration or reload leaks no timer, socket or subscription.
   */
  static async create(options: KernelOptions): Promise<Kernel> {
    const log = options.logger ?? silent;
    const store = options.store ?? new MemoryStore();
    const setUp: LoadedPlugin[] = [];
    try {
      return await Kernel.build(options, log, store, setUp);
    } catch (err) {
      for (const p of setUp.reverse()) {
        const fn = p.hooks.shutdown;
        if (!fn) continue;
        try {
          await fn.call(p.hooks);
        } catch (e) {
          p.log.error({ code: 'THEMIS_ERR_HOOK_FAILED', hook: 'shutdown', err: e }, `plugin ${p.name} failed in shutdown after a failed load`);
        }
      }
      if (options.store === undefined) await store.close().catch(() => undefined);
      throw err;
    }
  }

  /** {@link create}'s work; every plugin whose `setup` returned is added to `setUp` at once. */
  private static async build(options: KernelOptions, log: KernelLogger, store: Store, setUp: LoadedPlugin[]): Promise<Kernel> {
    const registry = options.registry ?? new Registry();
    const { plugins, routes, errors, matcher, commit } = await setUpPlugins(options, log, store, registry, setUp);
    // Registered only once the configuration is accepted: a refused one adds no metric to the registry.
    const hookErrors = hookErrorCounter(registry);
    const dispatcher = new Dispatcher(plugins, options, matcher, log, hookErrors);
    hookTiming(registry).add(plugins);
    // Accepted: the plugins' shared metrics read this kernel's state from now on.
    for (const fn of commit) fn();
    return new Kernel(plugins, registry, store, options.store === undefined, dispatcher, routes, errors);
  }

  /** The paths plugins serve on the status endpoint, sorted. */
  routePaths(): string[] {
    return [...this.routes.keys()].sort();
  }

  /** The pages for a browser plugins declare ({@link PluginDefinition.pages}), in load order. */
  pages(): PluginPage[] {
    return pagesOf(this.plugins.map((p) => p.def));
  }

  /**
   * Answers an HTTP GET for a plugin route; undefined when no plugin serves the path. A handler
   * that throws answers 500 with a coded log line: a broken page never takes the daemon down.
   */
  async handleHttp(request: HttpRequest): Promise<HttpResponse | undefined> {
    const route = this.routes.get(request.path);
    if (!route) return undefined;
    try {
      return await route.handler(request);
    } catch (err) {
      this.dispatcher.hookFailed(route.plugin, 'http', err, 'error');
      return { status: 500, type: 'text/plain; charset=utf-8', body: `${route.plugin.name} failed to answer ${request.path}: ${(err as Error).message}\n` };
    }
  }

  /** Plugins per stage in the order they run, with their priority (what `themis plugins` prints). */
  describe(): { stage: StageHookName; plugins: { name: string; priority: number }[] }[] {
    return this.dispatcher.describe();
  }

  /** Runs every plugin's `ready` hook. */
  ready(): Promise<void> {
    return this.lifecycle('ready');
  }

  /** Runs every plugin's `reload` hook: this kernel replaced another after a configuration reload. */
  reloaded(): Promise<void> {
    return this.lifecycle('reload');
  }

  /**
   * Runs every plugin's `shutdown` hook and closes the store if the kernel created it (a store given
   * in {@link KernelOptions.store} outlives kernels: a reload hands it to the next one). Metrics
   * already counted stay in the registry.
   */
  async shutdown(): Promise<void> {
    await this.lifecycle('shutdown');
    hookTiming(this.registry).retire(this.plugins);
    if (this.ownsStore) await this.store.close();
  }

  private async lifecycle(name: 'ready' | 'reload' | 'shutdown'): Promise<void> {
    // Shut down in reverse load order: a plugin goes after those loaded after it (which may use it).
    for (const p of name === 'shutdown' ? [...this.plugins].reverse() : this.plugins) {
      const fn = p.hooks[name];
      if (!fn) continue;
      try {
        await fn.call(p.hooks);
      } catch (err) {
        p.log.error({ code: 'THEMIS_ERR_HOOK_FAILED', hook: name, err }, `plugin ${p.name} failed in ${name}`);
      }
    }
  }
}

/** A page for a browser a plugin serves on the status endpoint. */
export interface PluginPage {
  /** The plugin serving it. */
  plugin: string;
  /** Its name (`dashboard`). */
  name: string;
  /** Its path (`/dashboard`). */
  path: string;
}

/** The pages plugin definitions declare, in their order: what a daemon can list before (or without) setting them up. */
export function pagesOf(defs: readonly Pick<PluginDefinition<unknown, unknown>, 'name' | 'pages'>[]): PluginPage[] {
  return defs.flatMap((d) => Object.entries(d.pages ?? {}).map(([name, path]) => ({ plugin: d.name, name, path })));
}
