/**
 * The kernel: loads plugins, turns the stages they tap into a milter application (negotiating only
 * those stages and the actions and macros they need), runs each stage's hooks in priority order under
 * a deadline, merges their verdicts and records a decision trace per message.
 * @module
 */
import { AsyncSeriesHook } from 'tapable';
import { Registry, Counter, Gauge, Histogram } from 'prom-client';
import semver from 'semver';
import { Action, CodedError, Decisions, type Decision, type EnvelopeEvent, type HeaderEvent, type MacroListStage, type MessageModifier, type MilterApplication, type MilterSession, type SmtpReply, type Stage } from '../milter/index.ts';
import { MemoryStore, type Store } from '../store/store.ts';
import { ThemisError, errorRegistry, formatConfigPath, pluginErrors, registerPluginErrors, type RegisteredError } from './errors.ts';
import { sharedMetric } from './metrics.ts';
import { pickWinner, type TraceEntry } from './merge.ts';
import { PolicyMatcher, type MatchResult, type PolicyDefinition, type PolicySettings } from './policy.ts';
import {
  LIFECYCLE_HOOKS,
  OBSERVER_HOOKS,
  STAGE_HOOKS,
  type AppliedPolicy,
  type DecisionTrace,
  type HookContext,
  type HttpRequest,
  type HttpResponse,
  type HttpRouteHandler,
  type MetricsFactory,
  type ModificationKind,
  type Notes,
  type PluginContext,
  type PluginDefinition,
  type PluginHooks,
  type PluginLogger,
  type PluginMessage,
  type PluginSession,
  type RecipientState,
  type StageHookName,
  type Verdict,
  type VerdictAction,
} from './plugin.ts';

/** The kernel's version, matched against each plugin's `kernel` range. */
export const KERNEL_VERSION = '1.0.0';

/** A plugin as listed for loading, with per-installation settings. */
export interface PluginEntry {
  /** The plugin object. */
  plugin: PluginDefinition<any, any>;
  /** Plugin-level options (validated with the plugin's `options` schema). */
  options?: unknown;
  /** Overrides the plugin's default priority. */
  priority?: number;
  /** Overrides the plugin's `onError`. */
  onError?: 'accept' | 'tempfail' | 'reject';
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
  onError?: 'accept' | 'tempfail' | 'reject';
  /**
   * The MTA the negotiation is shaped for (default `'postfix'`): `'postfix'` always answers DATA,
   * `'sendmail'` leaves it off unless a plugin taps it (see ThemisConfig.mta for why).
   */
  mta?: 'postfix' | 'sendmail';
  /** Called with every message's decision trace (tests, monitoring). */
  onDecision?: (trace: DecisionTrace) => void;
}

interface LoadedPlugin {
  def: PluginDefinition<any, any>;
  name: string;
  order: number;
  priority: number;
  onError: 'accept' | 'tempfail' | 'reject';
  hooks: PluginHooks<any>;
  log: PluginLogger;
  modifies: ReadonlySet<ModificationKind>;
  /** This plugin's claimed field, by policy name, for every policy that has it. */
  policies: Map<string, AppliedPolicy<unknown>>;
  /**
   * Time spent and calls made per stage hook: [seconds, calls] per STAGE_HOOKS index. Plain numbers on
   * the hot path; the metrics registry reads them when scraped (a histogram per call cost too much).
   */
  timing: Float64Array;
}

/** Postfix's default macro lists: a list a milter sends replaces them, so the kernel extends them. */
const POSTFIX_MACROS: Readonly<Record<MacroListStage, readonly string[]>> = {
  connect: ['j', '{daemon_name}', '{daemon_addr}', 'v', '_'],
  helo: ['{tls_version}', '{cipher}', '{cipher_bits}', '{cert_subject}', '{cert_issuer}'],
  mailFrom: ['i', '{auth_type}', '{auth_authen}', '{auth_author}', '{mail_addr}', '{mail_host}', '{mail_mailer}'],
  rcptTo: ['i', '{rcpt_addr}', '{rcpt_host}', '{rcpt_mailer}'],
  data: ['i'],
  endOfHeaders: ['i'],
  endOfMessage: ['i'],
};

/** Policy fields the kernel owns; every other field belongs to a plugin. */
const RESERVED_POLICY_FIELDS = new Set(['name', 'priority', 'enabled', 'match', 'type', 'stopHere', 'description']);

/** Paths of the status endpoint that no plugin may take. */
const RESERVED_ROUTES: ReadonlySet<string> = new Set(['/', '/status', '/metrics', '/healthz']);

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
  /** tapable hooks: the registry that orders taps (highest priority first, then load order). */
  private readonly hooks = new Map<StageHookName, AsyncSeriesHook<[never]>>();
  /** The taps of each stage in run order, read once from the tapable registry. */
  private readonly taps = new Map<StageHookName, LoadedPlugin[]>();
  private readonly log: KernelLogger;
  private readonly hookTimeout: number;
  private readonly mta: 'postfix' | 'sendmail';
  private readonly onDecision: ((t: DecisionTrace) => void) | undefined;
  private readonly matcher: PolicyMatcher;
  private readonly hookErrors: Counter<'plugin' | 'hook' | 'kind'>;
  /** HTTP routes the plugins registered, by path. */
  private readonly routes: ReadonlyMap<string, { plugin: LoadedPlugin; handler: HttpRouteHandler }>;
  /** Plugins with a `decision` hook: the kernel builds every message's trace for them. */
  private readonly observers: LoadedPlugin[];

  private constructor(plugins: LoadedPlugin[], options: KernelOptions, registry: Registry, store: Store, ownsStore: boolean, log: KernelLogger, metrics: { errors: Counter<'plugin' | 'hook' | 'kind'> }, matcher: PolicyMatcher, routes: Map<string, { plugin: LoadedPlugin; handler: HttpRouteHandler }>, errors: ReadonlyMap<string, RegisteredError>) {
    this.plugins = plugins;
    this.errors = errors;
    this.registry = registry;
    this.store = store;
    this.ownsStore = ownsStore;
    this.log = log;
    this.hookTimeout = options.hookTimeout ?? 10_000;
    this.mta = options.mta ?? 'postfix';
    this.onDecision = options.onDecision;
    this.matcher = matcher;
    this.hookErrors = metrics.errors;
    this.routes = routes;
    this.observers = plugins.filter((p) => typeof p.hooks.decision === 'function');
    for (const stage of STAGE_HOOKS) {
      const taps = plugins.filter((p) => typeof p.hooks[stage] === 'function');
      if (taps.length === 0) continue;
      const hook = new AsyncSeriesHook<[never]>(['call'], stage);
      // tapable orders taps by ascending stage: negate the priority so the highest runs first.
      // The kernel calls the taps itself (see stage()), so that each gets its own deadline, its
      // onError verdict and its trace entry, and so that synchronous hooks cost no promise.
      for (const p of taps) hook.tap({ name: p.name, stage: -p.priority }, () => undefined);
      this.hooks.set(stage, hook);
      const byName = new Map(taps.map((p) => [p.name, p]));
      this.taps.set(stage, hook.taps.map((t) => byName.get(t.name)!));
    }
    this.application = this.buildApplication();
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
    const claims = new Map<string, LoadedPlugin>();
    const loaded: LoadedPlugin[] = [];
    const routes = new Map<string, { plugin: LoadedPlugin; handler: HttpRouteHandler }>();
    const errors = new Map(errorRegistry());
    let order = 0;
    const apis = new Map<string, object>();
    // Checks every definition, refuses duplicates and orders plugins after their dependencies.
    const ordered = dependencyOrder(options.plugins);
    const loadedNames = new Set(ordered.map((e) => e.plugin.name));
    for (const entry of ordered) {
      const def = entry.plugin;
      if (!semver.satisfies(KERNEL_VERSION, def.kernel)) throw new ThemisError('THEMIS_ERR_PLUGIN_KERNEL_RANGE', { plugin: def.name, range: def.kernel, version: KERNEL_VERSION });
      registerPluginErrors(errors, def);
      let pluginOptions: unknown = entry.options;
      if (def.options) {
        const parsed = def.options.safeParse(entry.options ?? {});
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          throw new ThemisError('THEMIS_ERR_PLUGIN_OPTIONS', { plugin: def.name, path: issue.path.join('.') || '(root)', reason: issue.message });
        }
        pluginOptions = parsed.data;
      }
      const pluginLog = log.child({ plugin: def.name });
      const p: LoadedPlugin = {
        def,
        name: def.name,
        order: order++,
        priority: entry.priority ?? def.priority ?? 0,
        onError: entry.onError ?? def.onError ?? options.onError ?? 'tempfail',
        hooks: {},
        log: pluginLog,
        modifies: new Set(def.modifies ?? []),
        policies: new Map(),
        timing: new Float64Array(STAGE_HOOKS.length * 2),
      };
      if (def.claims) {
        const other = claims.get(def.claims.field);
        if (other) throw new ThemisError('THEMIS_ERR_PLUGIN_DUPLICATE_CLAIM', { field: def.claims.field, first: other.name, second: def.name });
        claims.set(def.claims.field, p);
      }
      let hooks: PluginHooks<unknown>;
      try {
        const http = {
          get: (path: string, handler: HttpRouteHandler) => {
            if (typeof path !== 'string' || !/^\/[\w./-]*$/.test(path) || RESERVED_ROUTES.has(path)) throw new ThemisError('THEMIS_ERR_PLUGIN_ROUTE', { plugin: def.name, path: String(path), reason: `expected a path such as /api/stats (letters, digits, . _ - /), not one of ${[...RESERVED_ROUTES].join(', ')}` });
            const other = routes.get(path);
            if (other) throw new ThemisError('THEMIS_ERR_PLUGIN_ROUTE', { plugin: def.name, path, reason: `already served by plugin ${other.plugin.name}` });
            routes.set(path, { plugin: p, handler });
          },
        };
        let exposed = false;
        const expose = (api: object) => {
          if (exposed || api === null || typeof api !== 'object') throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: def.name, reason: exposed ? 'expose() was called twice' : 'expose() needs an object' });
          exposed = true;
          apis.set(def.name, api);
        };
        const use = ((name: string, opts?: { optional: true }) => {
          const optional = Object.hasOwn(def.optionalDependencies ?? {}, name);
          if (!Object.hasOwn(def.dependencies ?? {}, name) && !optional) throw new ThemisError('THEMIS_ERR_PLUGIN_DEPENDENCY', { plugin: def.name, reason: `uses plugin ${name} without naming it in dependencies` });
          if (optional && !loadedNames.has(name)) {
            if (opts?.optional) return undefined;
            throw new ThemisError('THEMIS_ERR_PLUGIN_DEPENDENCY', { plugin: def.name, reason: `optional dependency ${name} is not loaded (use(name, { optional: true }) returns undefined then)` });
          }
          const api = apis.get(name);
          if (!api) throw new ThemisError('THEMIS_ERR_PLUGIN_DEPENDENCY', { plugin: def.name, reason: `plugin ${name} exposes no API` });
          return api;
        }) as PluginContext<unknown>['use'];
        hooks = await def.setup({ name: def.name, log: pluginLog, metrics: metricsFactory(def.name, registry), store, options: pluginOptions, http, error: pluginErrors(def.name, def.errors), expose, use });
        p.hooks = hooks ?? {};
        setUp.push(p);
      } catch (err) {
        if (err instanceof ThemisError && (err.code === 'THEMIS_ERR_PLUGIN_ROUTE' || err.code === 'THEMIS_ERR_PLUGIN_DEPENDENCY')) throw err;
        throw new ThemisError('THEMIS_ERR_PLUGIN_SETUP', { plugin: def.name, reason: err instanceof Error ? err.message : String(err) }, { cause: err });
      }
      const known = [...STAGE_HOOKS, ...OBSERVER_HOOKS, ...LIFECYCLE_HOOKS] as string[];
      for (const [name, fn] of Object.entries(hooks ?? {})) {
        if (!known.includes(name)) throw new ThemisError('THEMIS_ERR_PLUGIN_UNKNOWN_HOOK', { plugin: def.name, hook: name, known: known.join(', ') });
        if (typeof fn !== 'function') throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: def.name, reason: `hook ${name} is not a function` });
      }
      for (const [page, path] of Object.entries(def.pages ?? {})) {
        if (routes.get(path)?.plugin !== p) throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: def.name, reason: `page ${page} is ${path}, a route the plugin does not serve` });
      }
      loaded.push(p);
    }
    const problems: ThemisError[] = [];
    validatePolicies(options.policies ?? [], claims, problems);
    let matcher: PolicyMatcher | undefined;
    try {
      matcher = new PolicyMatcher(options.policies ?? [], options.policySettings);
    } catch (err) {
      if (!(err instanceof ThemisError)) throw err;
      problems.push(err);
    }
    if (problems.length > 0 || !matcher) throw policyProblems(problems);
    const metrics = {
      errors: sharedMetric(registry, Counter, { name: 'themis_hook_errors_total', help: 'Hook calls answered by the plugin onError policy', labelNames: ['plugin', 'hook', 'kind'] as const }),
    };
    hookTiming(registry).add(loaded);
    return new Kernel(loaded, options, registry, store, options.store === undefined, log, metrics, matcher, routes, errors);
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
      this.hookFailed(route.plugin, 'http', err, 'error');
      return { status: 500, type: 'text/plain; charset=utf-8', body: `${route.plugin.name} failed to answer ${request.path}: ${(err as Error).message}\n` };
    }
  }

  /** Plugins per stage in the order they run, with their priority (what `themis plugins` prints). */
  describe(): { stage: StageHookName; plugins: { name: string; priority: number }[] }[] {
    return [...this.hooks.entries()].map(([stage, hook]) => ({ stage, plugins: hook.taps.map((t) => ({ name: t.name, priority: -(t.stage ?? 0) })) }));
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

  // -------------------------------------------------------------------------------------------
  // Milter application

  private buildApplication(): MilterApplication {
    let actions = Action.QUARANTINE;
    const macros: Partial<Record<MacroListStage, string[]>> = {};
    for (const p of this.plugins) {
      if (p.modifies.has('headers')) actions |= Action.ADDHDRS | Action.CHGHDRS;
      if (p.modifies.has('sender')) actions |= Action.CHGFROM;
      if (p.modifies.has('recipients')) actions |= Action.ADDRCPT | Action.ADDRCPT_PAR | Action.DELRCPT;
      if (p.modifies.has('body')) actions |= Action.CHGBODY;
      for (const [stage, list] of Object.entries(p.def.macros ?? {}) as [MacroListStage, readonly string[]][]) {
        const merged = (macros[stage] ??= [...POSTFIX_MACROS[stage]]);
        for (const m of list) if (!merged.includes(m)) merged.push(m);
      }
    }
    const stages: Stage[] = [];
    const noReply: (Stage & StageHookName)[] = [];
    const observed = new Set<string>(this.plugins.flatMap((p) => p.def.observes ?? []));
    // Policies that match on client, sender or recipients need those events, answered or not.
    if (this.matcher.needsEnvelope) for (const st of ['connect', 'mailFrom', 'rcptTo']) observed.add(st);
    // A bypass policy is answered as soon as it matches: MAIL and RCPT then need replies.
    const answered = new Set<string>(this.matcher.hasBypass ? ['mailFrom', 'rcptTo'] : []);
    // Stages whose every tap only listens (PluginDefinition.listens): their hooks run, but nothing
    // they return can refuse, so the MTA need not wait — behind Postfix a MAIL answered for a
    // listener cost a round trip and the listener's own work per message.
    const listening = new Set<StageHookName>();
    for (const s of ['connect', 'helo', 'mailFrom', 'rcptTo', 'data', 'header', 'endOfHeaders', 'body'] as const) {
      const taps = this.taps.get(s);
      if (taps && !answered.has(s) && taps.every((p) => p.def.listens?.includes(s))) listening.add(s);
      if ((this.hooks.has(s) || answered.has(s)) && !listening.has(s)) stages.push(s);
      else if ((observed.has(s) || listening.has(s)) && !answered.has(s)) {
        stages.push(s);
        noReply.push(s);
      }
    }
    const app: MilterApplication = {
      // answerData: Postfix must get an answered DATA, Sendmail over TCP is slowed by one (ThemisConfig.mta).
      negotiation: { stages, noReply, actions, macros, answerData: this.mta !== 'sendmail' },
      endOfMessage: (s, m) => this.endOfMessage(s, m),
      abort: (s) => this.abortMessage(stateOf(s), 'aborted'),
      close: (s) => this.close(s),
    };
    if (this.hooks.has('connect')) app.connect = (s, e) => this.stage(s, 'connect', e);
    if (this.hooks.has('helo')) app.helo = (s, e) => this.stage(s, 'helo', e);
    if (this.hooks.has('mailFrom') || answered.has('mailFrom')) app.mailFrom = (s, e) => this.stage(s, 'mailFrom', e);
    if (this.hooks.has('rcptTo') || answered.has('rcptTo')) app.rcptTo = (s, e) => this.stage(s, 'rcptTo', e);
    if (this.hooks.has('data')) app.data = (s) => this.stage(s, 'data', undefined);
    if (this.hooks.has('header')) app.header = (s, e) => this.stage(s, 'header', e);
    if (this.hooks.has('endOfHeaders')) app.endOfHeaders = (s) => this.stage(s, 'endOfHeaders', undefined);
    if (this.hooks.has('body')) app.body = (s, c) => this.stage(s, 'body', c);
    // Observed-only stages: record what the MTA streams, answer nothing (negotiated as no-reply).
    // Listened stages also run their hooks.
    for (const stage of noReply) {
      (app as Record<string, unknown>)[stage] = listening.has(stage)
        ? (s: MilterSession, e: unknown) => this.listen(s, stage, e)
        : (s: MilterSession, e: unknown) => void stateOf(s).sync(s, stage, e, this.matcher);
    }
    return app;
  }

  /**
   * A no-reply stage whose taps only listen: runs them in order like {@link stage} and records
   * their entries in the trace, but no verdict is applied — the MTA was told it gets no answer.
   * A verdict other than `continue` (or a hook failure) is logged and otherwise ignored.
   */
  private listen(s: MilterSession, stage: StageHookName, event: unknown): Decision | Promise<Decision> {
    const state = stateOf(s);
    state.sync(s, stage, event, this.matcher);
    if (state.matched.bypass) return Decisions.continue;
    return this.runTaps(state, stage, event, 0, this.entriesOf(state), undefined, true);
  }

  /** The end of a listened stage: nothing applies; a verdict other than `continue` is logged. */
  private ignoreListenerVerdicts(stage: StageHookName, entries: readonly TraceEntry[], from: number): Decision {
    for (let k = from; k < entries.length; k++) {
      const e = entries[k];
      if (e.action === 'continue') continue;
      const err = new ThemisError('THEMIS_ERR_HOOK_LISTENER_VERDICT', { plugin: e.plugin, hook: stage, action: e.action });
      this.log.warn({ code: err.code, plugin: e.plugin, hook: stage, action: e.action }, err.message);
    }
    return Decisions.continue;
  }


  /**
   * Runs one stage's hooks in order and turns the merged verdict into the milter answer. Stays
   * synchronous while every hook answers synchronously: the engine then answers without a microtask.
   */
  private stage(s: MilterSession, stage: StageHookName, event: unknown): Decision | Promise<Decision> {
    const state = stateOf(s);
    state.sync(s, stage, event, this.matcher);
    const bypass = state.matched.bypass;
    if (bypass) return this.bypass(state, stage, bypass.name);
    return this.runTaps(state, stage, event, 0, this.entriesOf(state));
  }

  /** A `type: 'bypass'` policy matched: accept at once, without asking the plugins. */
  private bypass(state: ConnectionState, stage: StageHookName, policy: string): Decision {
    const entry: TraceEntry = { stage, plugin: `policy:${policy}`, priority: Number.MAX_SAFE_INTEGER, action: 'accept', reason: `bypass policy ${policy} matched`, ms: 0 };
    this.entriesOf(state).push(entry);
    return this.apply(state, stage, entry, undefined);
  }

  private entriesOf(state: ConnectionState): TraceEntry[] {
    return state.message?.trace ?? state.trace;
  }

  /** Runs the stage's taps from `first` on; `listening`: the stage is not answered, no verdict applies. */
  private runTaps(state: ConnectionState, stage: StageHookName, event: unknown, first: number, entries: TraceEntry[], from = entries.length, listening = false): Decision | Promise<Decision> {
    const taps = this.taps.get(stage) ?? NO_TAPS;
    for (let i = first; i < taps.length; i++) {
      const pending = this.invoke(taps[i], stage, state, event, entries);
      if (pending !== undefined) return pending.then(() => this.runTaps(state, stage, event, i + 1, entries, from, listening));
    }
    if (listening) return this.ignoreListenerVerdicts(stage, entries, from);
    const winnerIndex = pickWinner(entries, from);
    if (winnerIndex < 0) return Decisions.continue;
    return this.apply(state, stage, entries[winnerIndex], event);
  }

  private apply(state: ConnectionState, stage: StageHookName, winner: TraceEntry, event: unknown): Decision {
    const message = state.message;
    switch (winner.action) {
      case 'continue':
        return Decisions.continue;
      case 'quarantine':
        // Held at end of message (the only stage where every MTA honours it).
        if (message) message.quarantine ??= winner;
        else state.quarantine ??= winner;
        return Decisions.continue;
      case 'accept':
        // At a message stage (RCPT included) accept ends filtering for the whole message: the MTA
        // sends nothing more for it, so its trace is closed here.
        if (message) this.finishMessage(state, 'accepted', stage, winner);
        return Decisions.accept;
      case 'reject':
      case 'tempfail': {
        const decision: Decision = winner.reply ? { action: winner.action, reply: winner.reply } : winner.action === 'reject' ? Decisions.reject : Decisions.tempfail;
        if (stage === 'rcptTo') {
          const rcpt = message?.recipients.at(-1);
          if (rcpt) rcpt.accepted = false;
          winner.recipient = (event as EnvelopeEvent).address;
          return decision;
        }
        if (message) {
          this.finishMessage(state, winner.action === 'reject' ? 'rejected' : 'tempfailed', stage, winner);
          this.runAbortHooks(state);
        } else this.logConnectionDecision(state, stage, winner);
        return decision;
      }
      case 'discard':
        if (!message) {
          // Discard is meaningless for a connection: refuse it instead, and say why in the log.
          this.log.warn({ plugin: winner.plugin, stage }, 'discard at connection level is not possible; rejecting');
          this.logConnectionDecision(state, stage, winner);
          return Decisions.reject;
        }
        this.finishMessage(state, 'discarded', stage, winner);
        this.runAbortHooks(state);
        return Decisions.discard;
    }
  }

  private endOfMessage(s: MilterSession, modifier: MessageModifier): Decision | Promise<Decision> {
    const state = stateOf(s);
    state.sync(s, 'endOfMessage', undefined, this.matcher);
    if (state.matched.bypass) return this.bypass(state, 'endOfMessage', state.matched.bypass.name);
    if (!this.taps.has('endOfMessage')) return this.deliver(state, modifier, Decisions.accept);
    const decision = this.runTaps(state, 'endOfMessage', undefined, 0, this.entriesOf(state));
    if (decision instanceof Promise) return decision.then((d) => this.deliver(state, modifier, d));
    return this.deliver(state, modifier, decision);
  }

  /** After the end-of-message verdict: send the modifications and the hold, close the trace. */
  private deliver(state: ConnectionState, modifier: MessageModifier, decision: Decision): Decision {
    if (decision.action !== 'continue' && decision.action !== 'accept') return decision;
    const message = state.message;
    if (!message) return Decisions.accept;
    for (const mod of message.modifications) {
      try {
        mod.apply(modifier);
      } catch (err) {
        this.log.error({ code: 'THEMIS_ERR_MODIFICATION', plugin: mod.plugin, err }, `modification by ${mod.plugin} could not be sent: ${(err as Error).message}`);
      }
    }
    const hold = message.quarantine ?? state.quarantine;
    if (hold) {
      try {
        modifier.quarantine(hold.reason ?? `quarantined by ${hold.plugin}`);
      } catch (err) {
        this.log.error({ code: 'THEMIS_ERR_MODIFICATION', plugin: hold.plugin, err }, 'quarantine could not be sent');
      }
    }
    this.finishMessage(state, hold ? 'quarantined' : 'accepted', 'endOfMessage', hold ?? message.trace[pickWinner(message.trace)]);
    return Decisions.accept;
  }

  private abortMessage(state: ConnectionState, outcome: 'aborted'): void {
    if (!state.message) return;
    this.finishMessage(state, outcome, undefined, undefined);
    this.runAbortHooks(state);
  }

  private runAbortHooks(state: ConnectionState): void {
    const message = state.lastMessage;
    for (const p of this.plugins) {
      const fn = p.hooks.abort;
      if (!fn) continue;
      try {
        const r = fn.call(p.hooks, state.context(p, message ?? null));
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).catch((err: unknown) => this.hookFailed(p, 'abort', err, 'error'));
      } catch (err) {
        this.hookFailed(p, 'abort', err, 'error');
      }
    }
  }

  private close(s: MilterSession): void {
    const state = stateOf(s);
    if (state.message) this.abortMessage(state, 'aborted');
    for (const p of this.plugins) {
      const fn = p.hooks.close;
      if (!fn) continue;
      try {
        const r = fn.call(p.hooks, state.context(p, null));
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).catch((err: unknown) => this.hookFailed(p, 'close', err, 'error'));
      } catch (err) {
        this.hookFailed(p, 'close', err, 'error');
      }
    }
  }

  private finishMessage(state: ConnectionState, outcome: DecisionTrace['outcome'], stage: StageHookName | undefined, winner: TraceEntry | undefined): void {
    const message = state.message;
    if (!message) return;
    state.lastMessage = message;
    state.message = undefined;
    const logging = this.log.isLevelEnabled ? this.log.isLevelEnabled('info') : true;
    if (!logging && !this.onDecision && this.observers.length === 0) return;
    const trace: DecisionTrace = { session: state.id, queueId: message.queueId, policies: state.matched.policies.map((x) => x.name), outcome, stage, winner, entries: state.trace.length > 0 ? [...state.trace, ...message.trace] : message.trace };
    // One line per message; addresses stay out of info-level logs.
    if (logging) this.log.info({ session: trace.session, queueId: trace.queueId, outcome, stage, winner: winner && { plugin: winner.plugin, action: winner.action, reason: winner.reason }, trace: trace.entries.map((e) => ({ stage: e.stage, plugin: e.plugin, action: e.action, reason: e.reason, error: e.error, ms: Math.round(e.ms * 1000) / 1000 })) }, 'decision');
    this.onDecision?.(trace);
    this.observe(state, message, trace);
  }

  private logConnectionDecision(state: ConnectionState, stage: StageHookName, winner: TraceEntry): void {
    const trace: DecisionTrace = { session: state.id, queueId: undefined, policies: state.matched.policies.map((x) => x.name), outcome: winner.action === 'reject' || winner.action === 'discard' ? 'rejected' : 'tempfailed', stage, winner, entries: [...state.trace] };
    this.log.info({ session: trace.session, outcome: trace.outcome, stage, winner: { plugin: winner.plugin, action: winner.action, reason: winner.reason } }, 'decision');
    this.onDecision?.(trace);
    this.observe(state, null, trace);
  }

  /** Hands a trace to the plugins' `decision` hooks; one that throws is logged and counted, never raised. */
  private observe(state: ConnectionState, message: MessageState | null, trace: DecisionTrace): void {
    for (const p of this.observers) {
      try {
        p.hooks.decision!.call(p.hooks, state.context(p, message), trace);
      } catch (err) {
        this.hookFailed(p, 'decision', err, 'error');
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Isolation

  /**
   * Calls one plugin's hook and records its verdict (or its onError verdict) in `entries`. Returns
   * undefined when the hook answered synchronously, else a promise that settles once it is recorded
   * (never rejects: failures and missed deadlines become the plugin's onError verdict).
   */
  private invoke(p: LoadedPlugin, stage: StageHookName, state: ConnectionState, event: unknown, entries: TraceEntry[]): Promise<void> | undefined {
    const fn = p.hooks[stage] as (ctx: HookContext<unknown>, event: unknown) => unknown;
    const started = performance.now();
    let result: unknown;
    try {
      result = fn.call(p.hooks, state.context(p), event);
    } catch (err) {
      this.record(p, stage, entries, started, undefined, err);
      return undefined;
    }
    if (result !== null && typeof result === 'object' && typeof (result as Promise<unknown>).then === 'function') {
      return this.withDeadline(p, stage, result as Promise<unknown>).then(
        (value) => this.record(p, stage, entries, started, value, undefined),
        (err: unknown) => this.record(p, stage, entries, started, undefined, err ?? new Error('rejected without a reason')),
      );
    }
    this.record(p, stage, entries, started, result, undefined);
    return undefined;
  }

  private record(p: LoadedPlugin, stage: StageHookName, entries: TraceEntry[], started: number, result: unknown, failure: unknown): void {
    let verdict: Verdict | undefined;
    let error: string | undefined;
    if (failure === undefined) {
      try {
        verdict = checkVerdict(p, stage, result);
      } catch (err) {
        failure = err;
      }
    }
    if (failure !== undefined) {
      const kind = failure instanceof ThemisError && failure.code === 'THEMIS_ERR_HOOK_TIMEOUT' ? 'timeout' : 'error';
      error = failure instanceof ThemisError ? failure.code : 'THEMIS_ERR_HOOK_FAILED';
      this.hookFailed(p, stage, failure, kind);
      verdict = { action: p.onError, reason: `${p.name} ${kind === 'timeout' ? 'timed out' : 'failed'} in ${stage}` };
    }
    const ms = performance.now() - started;
    const t = STAGE_INDEX[stage] * 2;
    p.timing[t] += ms / 1000;
    p.timing[t + 1]++;
    const entry: TraceEntry = { stage, plugin: p.name, priority: p.priority, action: verdict?.action ?? 'continue', ms };
    if (verdict?.reason !== undefined) entry.reason = verdict.reason;
    if (verdict?.detail !== undefined) entry.detail = verdict.detail;
    if (verdict?.reply !== undefined) entry.reply = verdict.reply;
    if (error !== undefined) entry.error = error;
    entries.push(entry);
  }

  private withDeadline(p: LoadedPlugin, hook: string, promise: Promise<unknown>): Promise<unknown> {
    if (this.hookTimeout <= 0) return promise;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new ThemisError('THEMIS_ERR_HOOK_TIMEOUT', { plugin: p.name, hook, ms: this.hookTimeout, fallback: p.onError })), this.hookTimeout);
      promise.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  private hookFailed(p: LoadedPlugin, hook: string, err: unknown, kind: 'error' | 'timeout'): void {
    this.hookErrors.inc({ plugin: p.name, hook, kind });
    const e = err instanceof ThemisError ? err : new ThemisError('THEMIS_ERR_HOOK_FAILED', { plugin: p.name, hook, reason: err instanceof Error ? err.message : String(err), fallback: p.onError }, { cause: err });
    // A coded error (a plugin's own, `ctx.error`, or a store's) keeps its code in the log line as `cause`.
    const cause = err instanceof CodedError && err !== e ? { cause: err.code as string } : {};
    p.log.error({ code: e.code, hook, ...cause, err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, e.message);
  }
}

/**
 * The plugins in the order they are set up: each after the plugins it depends on, otherwise in the
 * configuration's order. Checks every definition first, then that each dependency is loaded, in a
 * version its range accepts, and that there is no cycle (`THEMIS_ERR_PLUGIN_DEPENDENCY`).
 */
function dependencyOrder(entries: readonly PluginEntry[]): PluginEntry[] {
  const byName = new Map<string, PluginEntry>();
  for (const e of entries) {
    checkDefinition(e.plugin);
    if (byName.has(e.plugin.name)) throw new ThemisError('THEMIS_ERR_PLUGIN_DUPLICATE', { plugin: e.plugin.name });
    byName.set(e.plugin.name, e);
  }
  for (const e of entries) {
    const optional = e.plugin.optionalDependencies ?? {};
    for (const [name, range] of [...Object.entries(e.plugin.dependencies ?? {}), ...Object.entries(optional)]) {
      const dep = byName.get(name);
      if (!dep && Object.hasOwn(optional, name)) continue;
      if (!dep) throw new ThemisError('THEMIS_ERR_PLUGIN_DEPENDENCY', { plugin: e.plugin.name, reason: `needs plugin ${name} ${range}, which is not loaded (add it to plugins)` });
      if (semver.validRange(range) === null) throw new ThemisError('THEMIS_ERR_PLUGIN_DEPENDENCY', { plugin: e.plugin.name, reason: `dependency ${name}: ${JSON.stringify(range)} is not a semver range` });
      if (!semver.satisfies(dep.plugin.version, range)) throw new ThemisError('THEMIS_ERR_PLUGIN_DEPENDENCY', { plugin: e.plugin.name, reason: `needs plugin ${name} ${range}, but ${dep.plugin.version} is loaded` });
    }
  }
  const out: PluginEntry[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (e: PluginEntry, path: string[]): void => {
    const name = e.plugin.name;
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new ThemisError('THEMIS_ERR_PLUGIN_DEPENDENCY', { plugin: name, reason: `dependency cycle: ${[...path, name].join(' → ')}` });
    state.set(name, 'visiting');
    for (const dep of [...Object.keys(e.plugin.dependencies ?? {}), ...Object.keys(e.plugin.optionalDependencies ?? {})]) {
      const d = byName.get(dep);
      if (d) visit(d, [...path, name]);
    }
    state.set(name, 'done');
    out.push(e);
  };
  for (const e of entries) visit(e, []);
  return out;
}

function checkDefinition(def: PluginDefinition<unknown, unknown>): void {
  const name = typeof def?.name === 'string' && def.name !== '' ? def.name : '(unnamed)';
  const fail = (reason: string): never => {
    throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: name, reason });
  };
  if (def === null || typeof def !== 'object') fail('is not a plugin object (use definePlugin())');
  if (name === '(unnamed)') fail('has no name');
  if (typeof def.version !== 'string') fail('has no version');
  if (typeof def.kernel !== 'string' || semver.validRange(def.kernel) === null) fail(`kernel range ${JSON.stringify(def.kernel)} is not a semver range`);
  if (typeof def.setup !== 'function') fail('has no setup() function');
  for (const field of ['dependencies', 'optionalDependencies'] as const) {
    const deps = def[field];
    if (deps === undefined) continue;
    if (deps === null || typeof deps !== 'object' || Array.isArray(deps)) fail(`${field} is not an object of plugin names and version ranges`);
    for (const [name, range] of Object.entries(deps)) if (typeof range !== 'string') fail(`${field}: ${name} has no version range`);
  }
  if (def.policyFlags !== undefined) {
    if (def.policyFlags === null || typeof def.policyFlags !== 'object' || Array.isArray(def.policyFlags)) fail('policyFlags is not an object of flag names and flags');
    if (Object.keys(def.policyFlags).length > 0 && !def.claims) fail('policyFlags edit the policy field the plugin claims, but it claims none');
    for (const [flag, f] of Object.entries(def.policyFlags)) {
      if (!/^[a-z][a-z0-9-]*$/.test(flag)) fail(`policy flag ${JSON.stringify(flag)} is not a flag name (lower-case letters, digits and -, without the dashes in front)`);
      if (f === null || typeof f !== 'object' || (f.type !== 'string' && f.type !== 'boolean') || typeof f.help !== 'string' || typeof f.apply !== 'function') fail(`policy flag ${flag} needs a type ('string' or 'boolean'), a help text and an apply function`);
    }
  }
  if (def.pages !== undefined) {
    if (def.pages === null || typeof def.pages !== 'object' || Array.isArray(def.pages)) fail('pages is not an object of page names and paths');
    for (const [page, path] of Object.entries(def.pages)) if (typeof path !== 'string' || !/^\/[\w./-]*$/.test(path)) fail(`page ${page} is ${JSON.stringify(path)}, not a path such as /dashboard`);
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

function validatePolicies(policies: readonly PolicyInput[], claims: Map<string, LoadedPlugin>, problems: ThemisError[]): void {
  policies.forEach((policy, index) => {
    for (const [field, value] of Object.entries(policy)) {
      if (RESERVED_POLICY_FIELDS.has(field)) continue;
      const owner = claims.get(field);
      if (!owner) {
        problems.push(new ThemisError('THEMIS_ERR_POLICY_UNCLAIMED', { index, policy: policy.name, field, claimed: [...claims.keys()].join(', ') || 'none' }));
        continue;
      }
      const parsed = owner.def.claims!.schema.safeParse(value, { reportInput: true });
      if (!parsed.success) {
        for (const issue of parsed.error.issues) {
          const found = 'input' in issue && issue.code !== 'unrecognized_keys' ? `; found ${JSON.stringify(issue.input) ?? 'nothing'}` : '';
          problems.push(new ThemisError('THEMIS_ERR_POLICY_FIELD', { index, policy: policy.name, path: formatConfigPath([field, ...issue.path]), reason: issue.message + found }));
        }
        continue;
      }
      owner.policies.set(policy.name, { name: policy.name, config: parsed.data });
    }
  });
}

/** One problem: that error itself; several: one error listing them all (each keeps its code in `problems`). */
function policyProblems(problems: ThemisError[]): ThemisError {
  if (problems.length === 1) return problems[0];
  const list = problems.map((p) => `\n  - ${p.code}: ${p.message}`).join('');
  return new ThemisError('THEMIS_ERR_POLICIES_INVALID', { count: problems.length, list, problems: problems.map((p) => ({ code: p.code, message: p.message })) });
}

const VERDICT_ACTIONS: ReadonlySet<string> = new Set<VerdictAction>(['continue', 'accept', 'reject', 'tempfail', 'discard', 'quarantine']);

function checkVerdict(p: LoadedPlugin, hook: string, result: unknown): Verdict | undefined {
  if (result === undefined || result === null) return undefined;
  const v = result as Verdict;
  if (typeof v !== 'object' || !VERDICT_ACTIONS.has(v.action)) throw new ThemisError('THEMIS_ERR_HOOK_BAD_VERDICT', { plugin: p.name, hook, reason: `expected { action: ${[...VERDICT_ACTIONS].join(' | ')}, reason }, got ${JSON.stringify(result)}` });
  return v;
}

const STAGE_INDEX = Object.fromEntries(STAGE_HOOKS.map((h, i) => [h, i])) as Record<StageHookName, number>;

/**
 * The plugins' hook timing as two counters, read from plain accumulators at scrape time. One per
 * registry: kernels that replace each other on reload share it, and a retired kernel's last counts
 * are reported once more before it is forgotten, so nothing counted is lost.
 */
class HookTiming {
  private readonly live = new Map<LoadedPlugin, Float64Array>();
  /** Plugins retired since the last scrape, with the counters (0 and 1) still to report them. */
  private readonly retiring = new Map<LoadedPlugin, Set<0 | 1>>();

  constructor(registry: Registry) {
    const self = this;
    sharedMetric(registry, Counter, { name: 'themis_hook_seconds_total', help: 'Time spent in plugin hooks, by plugin and hook', labelNames: ['plugin', 'hook'] as const, collect(this: Counter<'plugin' | 'hook'>) { self.sync(0, this); } });
    sharedMetric(registry, Counter, { name: 'themis_hook_calls_total', help: 'Plugin hook calls, by plugin and hook', labelNames: ['plugin', 'hook'] as const, collect(this: Counter<'plugin' | 'hook'>) { self.sync(1, this); } });
  }

  add(plugins: readonly LoadedPlugin[]): void {
    for (const p of plugins) this.live.set(p, new Float64Array(p.timing.length));
  }

  retire(plugins: readonly LoadedPlugin[]): void {
    for (const p of plugins) if (this.live.has(p)) this.retiring.set(p, new Set([0, 1]));
  }

  private sync(which: 0 | 1, counter: Counter<'plugin' | 'hook'>): void {
    for (const [p, last] of this.live) {
      STAGE_HOOKS.forEach((hook, i) => {
        const k = i * 2 + which;
        const delta = p.timing[k] - last[k];
        if (delta > 0) {
          counter.inc({ plugin: p.name, hook }, delta);
          last[k] = p.timing[k];
        }
      });
      const pending = this.retiring.get(p);
      if (pending?.delete(which) && pending.size === 0) {
        this.retiring.delete(p);
        this.live.delete(p);
      }
    }
  }
}

const hookTimings = new WeakMap<Registry, HookTiming>();

function hookTiming(registry: Registry): HookTiming {
  let t = hookTimings.get(registry);
  if (!t) hookTimings.set(registry, (t = new HookTiming(registry)));
  return t;
}

function metricsFactory(plugin: string, registry: Registry): MetricsFactory {
  const prefix = `themis_plugin_${plugin.replace(/[^a-zA-Z0-9_]/g, '_')}_`;
  return {
    counter: (c) => sharedMetric(registry, Counter, { ...c, name: prefix + c.name }),
    gauge: (c) => sharedMetric(registry, Gauge, { ...c, name: prefix + c.name }),
    histogram: (c) => sharedMetric(registry, Histogram, { ...c, name: prefix + c.name }),
  };
}

// ---------------------------------------------------------------------------------------------
// Per-connection state

interface PendingModification {
  plugin: string;
  apply(m: MessageModifier): void;
}

class MessageState {
  sender: EnvelopeEvent | undefined;
  readonly recipients: RecipientState[] = [];
  readonly headers: HeaderEvent[] = [];
  queueId: string | undefined;
  readonly notes = new Map<string, unknown>();
  readonly trace: TraceEntry[] = [];
  readonly modifications: PendingModification[] = [];
  quarantine: TraceEntry | undefined;
  /** Policies taken out of this message by a plugin (`skipPolicy`): policy name → the plugin that did. */
  skipped: Map<string, string> | undefined;
}

function notesOf(map: Map<string, unknown>, plugin: string): Notes {
  return {
    get: <T>() => map.get(plugin) as T | undefined,
    of: <T>(other: string) => map.get(other) as T | undefined,
    set: (value: unknown) => void map.set(plugin, value),
  };
}

const MODIFICATION_OF: Record<string, ModificationKind> = {
  addHeader: 'headers',
  insertHeader: 'headers',
  changeHeader: 'headers',
  deleteHeader: 'headers',
  changeSender: 'sender',
  addRecipient: 'recipients',
  deleteRecipient: 'recipients',
  replaceBody: 'body',
};

class ConnectionState {
  readonly id: number;
  milter!: MilterSession;
  message: MessageState | undefined;
  lastMessage: MessageState | undefined;
  readonly trace: TraceEntry[] = [];
  readonly notes = new Map<string, unknown>();
  quarantine: TraceEntry | undefined;

  constructor(id: number) {
    this.id = id;
  }

  /** The policies that apply to what is known so far (re-matched when the facts change). */
  matched: MatchResult = NO_MATCH;
  /** Bumped at every re-match, so per-plugin policy lists know when to rebuild. */
  matchVersion = 0;

  /** Brings the kernel's view in line with the engine's before a stage's hooks run. */
  sync(s: MilterSession, stage: StageHookName, event: unknown, matcher: PolicyMatcher): void {
    this.milter = s;
    this.syncMessage(s, stage, event);
    // Facts change at connect, MAIL (sender, SASL login) and each RCPT; no re-match per header.
    if (stage === 'connect' || stage === 'mailFrom' || stage === 'rcptTo' || this.matchVersion === 0 || (stage === 'endOfMessage' && this.matchedFor !== this.message)) this.rematch(matcher);
  }

  private matchedFor: MessageState | undefined;

  private rematch(matcher: PolicyMatcher): void {
    const s = this.milter;
    const m = this.message;
    const client = s.client;
    this.matched = matcher.match({
      clientIp: client && (client.family === '4' || client.family === '6') ? client.address : undefined,
      sender: m?.sender?.address,
      auth: s.macros.get('{auth_authen}') || undefined,
      recipients: m ? m.recipients.filter((r) => r.accepted).map((r) => r.address) : [],
      mta: s.macros.get('j'),
    });
    this.matchedFor = m;
    this.matchVersion++;
  }

  private syncMessage(s: MilterSession, stage: StageHookName, event: unknown): void {
    if (stage === 'mailFrom') {
      this.message = new MessageState();
      this.message.sender = event as EnvelopeEvent;
    } else if (stage !== 'connect' && stage !== 'helo' && this.message === undefined && s.inMessage) {
      // MAIL was not negotiated (no plugin taps it): the message starts with its first event.
      this.message = new MessageState();
      this.message.sender = s.sender;
    }
    const m = this.message;
    if (!m) return;
    if (stage === 'rcptTo') {
      const e = event as EnvelopeEvent;
      m.recipients.push({ address: e.address, raw: e.raw, args: e.args, accepted: true });
    } else if (stage === 'header') m.headers.push(event as HeaderEvent);
    // Postfix knows the queue id from the first accepted RCPT on; look it up a few times per message, not per header.
    if (m.queueId === undefined && (stage === 'data' || stage === 'endOfHeaders' || stage === 'endOfMessage' || stage === 'rcptTo')) m.queueId = s.macros.get('i');
  }

  private readonly contexts: (HookContextView | undefined)[] = [];
  private readonly sessionViews: (PluginSession | undefined)[] = [];

  /**
   * The context a plugin's hook receives: one object per plugin and connection, whose `message`
   * follows the current message. `message` given (an ended message, or null for none) builds a
   * one-off context, for abort and close hooks.
   */
  context(p: LoadedPlugin, message?: MessageState | null): HookContext<unknown> {
    if (message !== undefined) return { session: this.sessionOf(p), message: message ? this.messageView(p, message) : undefined, policies: this.policiesFor(p), log: p.log };
    return (this.contexts[p.order] ??= new HookContextView(this, p));
  }

  private readonly applied: { version: number; message: MessageState | undefined; list: AppliedPolicy<unknown>[] }[] = [];

  /** The matched policies that carry this plugin's field, in evaluation order, less those another plugin skipped. */
  policiesFor(p: LoadedPlugin): readonly AppliedPolicy<unknown>[] {
    const cached = this.applied[p.order];
    if (cached && cached.version === this.matchVersion && cached.message === this.message) return cached.list;
    const skipped = this.message?.skipped;
    const list: AppliedPolicy<unknown>[] = [];
    for (const policy of this.matched.policies) {
      const a = p.policies.get(policy.name);
      if (a === undefined) continue;
      const by = skipped?.get(policy.name);
      if (by === undefined || by === p.name) list.push(a);
    }
    this.applied[p.order] = { version: this.matchVersion, message: this.message, list };
    return list;
  }

  /** Takes a matched policy out of the current message for every plugin but `by`. */
  skipPolicy(by: string, m: MessageState, name: string): boolean {
    if (m !== this.message || !this.matched.policies.some((x) => x.name === name)) return false;
    (m.skipped ??= new Map()).set(name, by);
    // The cached per-plugin lists are stale: a new version makes them rebuild.
    this.matchVersion++;
    return true;
  }

  sessionOf(p: LoadedPlugin): PluginSession {
    return (this.sessionViews[p.order] ??= this.sessionView(p));
  }

  private sessionView(p: LoadedPlugin): PluginSession {
    // The engine's session object lives as long as the connection: read it through, never copy.
    const s = this.milter;
    return {
      id: this.id,
      get client() {
        return s.client;
      },
      get helo() {
        return s.helo;
      },
      get auth() {
        return s.macros.get('{auth_authen}') || undefined;
      },
      get mta() {
        return s.macros.get('j');
      },
      get macros() {
        return s.macros;
      },
      notes: notesOf(this.notes, p.name),
    };
  }

  messageView(p: LoadedPlugin, m: MessageState): PluginMessage {
    return new MessageView(this, p, m);
  }
}

/**
 * The message as one plugin sees it. A class rather than an object of closures: one is made per
 * plugin and message (and per abort or decision hook call), so its methods live on the prototype.
 */
class MessageView implements PluginMessage {
  private readonly state: ConnectionState;
  private readonly plugin: LoadedPlugin;
  private readonly m: MessageState;
  readonly recipients: readonly RecipientState[];
  readonly headers: readonly HeaderEvent[];
  private notesView: Notes | undefined;

  constructor(state: ConnectionState, plugin: LoadedPlugin, m: MessageState) {
    this.state = state;
    this.plugin = plugin;
    this.m = m;
    this.recipients = m.recipients;
    this.headers = m.headers;
  }

  get sender(): EnvelopeEvent | undefined {
    return this.m.sender;
  }

  get queueId(): string | undefined {
    return this.m.queueId;
  }

  get notes(): Notes {
    return (this.notesView ??= notesOf(this.m.notes, this.plugin.name));
  }

  private request(kind: string, apply: (mod: MessageModifier) => void): void {
    const needed = MODIFICATION_OF[kind];
    if (!this.plugin.modifies.has(needed)) throw new ThemisError('THEMIS_ERR_MODIFICATION', { plugin: this.plugin.name, reason: `${kind} needs modifies: ['${needed}'] in the plugin definition` });
    this.m.modifications.push({ plugin: this.plugin.name, apply });
  }

  addHeader(name: string, value: string): void {
    this.request('addHeader', (mod) => mod.addHeader(name, value));
  }

  insertHeader(index: number, name: string, value: string): void {
    this.request('insertHeader', (mod) => mod.insertHeader(index, name, value));
  }

  changeHeader(name: string, index: number, value: string): void {
    this.request('changeHeader', (mod) => mod.changeHeader(name, index, value));
  }

  deleteHeader(name: string, index: number): void {
    this.request('deleteHeader', (mod) => mod.deleteHeader(name, index));
  }

  changeSender(address: string, args?: readonly string[]): void {
    this.request('changeSender', (mod) => mod.changeSender(address, args));
  }

  addRecipient(address: string, args?: readonly string[]): void {
    this.request('addRecipient', (mod) => mod.addRecipient(address, args));
  }

  deleteRecipient(address: string): void {
    this.request('deleteRecipient', (mod) => mod.deleteRecipient(address));
  }

  replaceBody(body: Buffer | string): void {
    this.request('replaceBody', (mod) => mod.replaceBody(body));
  }

  skipPolicy(name: string): boolean {
    return this.state.skipPolicy(this.plugin.name, this.m, name);
  }
}

/** A plugin's hook context on one connection; `message` is the current message's view for this plugin. */
class HookContextView implements HookContext<unknown> {
  readonly session: PluginSession;
  readonly log: PluginLogger;
  private readonly state: ConnectionState;
  private readonly plugin: LoadedPlugin;
  private viewOf: MessageState | undefined;
  private view: PluginMessage | undefined;

  constructor(state: ConnectionState, plugin: LoadedPlugin) {
    this.state = state;
    this.plugin = plugin;
    this.session = state.sessionOf(plugin);
    this.log = plugin.log;
  }

  get policies(): readonly AppliedPolicy<unknown>[] {
    return this.state.policiesFor(this.plugin);
  }

  get message(): PluginMessage | undefined {
    const m = this.state.message;
    if (m === undefined) return undefined;
    if (m !== this.viewOf) {
      this.viewOf = m;
      this.view = this.state.messageView(this.plugin, m);
    }
    return this.view;
  }
}

const NO_MATCH: MatchResult = { policies: [], bypass: undefined };
const NO_TAPS: LoadedPlugin[] = [];

function stateOf(s: MilterSession): ConnectionState {
  let state = s.state as ConnectionState | undefined;
  if (!(state instanceof ConnectionState)) {
    state = new ConnectionState(s.id);
    state.milter = s;
    s.state = state;
  }
  return state;
}

