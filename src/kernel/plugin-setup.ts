/**
 * Setting up the configured plugins: checks each definition, orders plugins after their
 * dependencies, validates their options, calls their `setup`, collects their claims, routes, pages
 * and APIs, and validates the policies against the claims. (Resolving a plugin reference to its
 * definition is `loader.ts`'s job; running the set-up plugins is `dispatch.ts`'s.)
 * @module
 */
import type { Registry } from 'prom-client';
import semver from 'semver';
import type { Store } from '../store/store.ts';
import { ThemisError, errorRegistry, formatConfigPath, pluginErrors, registerPluginErrors, type RegisteredError } from './errors.ts';
import { metricsFactory } from './hook-metrics.ts';
import type { KernelLogger, KernelOptions, PluginEntry, PolicyInput } from './kernel.ts';
import { PolicyMatcher } from './policy.ts';
import {
  LIFECYCLE_HOOKS,
  OBSERVER_HOOKS,
  STAGE_HOOKS,
  type AppliedPolicy,
  type HttpRouteHandler,
  type ModificationKind,
  type OnErrorVerdict,
  type PluginContext,
  type PluginDefinition,
  type PluginHooks,
  type PluginLogger,
} from './plugin.ts';

/**
 * The kernel's version, matched against each plugin's `kernel` range. (Defined here, where it is
 * matched, and re-exported by kernel.ts: kernel.ts imports this file, so the reverse would be a cycle.)
 */
export const KERNEL_VERSION = '1.0.0';

/** A plugin once set up: its definition, its settings for this installation and its hooks. */
export interface LoadedPlugin {
  def: PluginDefinition<any, any>;
  name: string;
  order: number;
  priority: number;
  onError: OnErrorVerdict;
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

/** An HTTP route a plugin registered, with the plugin (whose failures it is charged with). */
export interface PluginRoute {
  plugin: LoadedPlugin;
  handler: HttpRouteHandler;
}

/** What {@link setUpPlugins} hands the kernel. */
export interface SetUpPlugins {
  /** The plugins, set up, in load order (dependencies first). */
  plugins: LoadedPlugin[];
  /** The HTTP routes they registered, by path. */
  routes: Map<string, PluginRoute>;
  /** Every core error code and every code the plugins declare, by code. */
  errors: ReadonlyMap<string, RegisteredError>;
  /** The policies, validated, ready to match. */
  matcher: PolicyMatcher;
  /** To run once the kernel is accepted: points shared metrics at this kernel's plugins (see {@link metricsFactory}). */
  commit: (() => void)[];
}

/** Policy fields the kernel owns; every other field belongs to a plugin. */
const RESERVED_POLICY_FIELDS = new Set(['name', 'priority', 'enabled', 'match', 'type', 'stopHere', 'description']);

/** Paths of the status endpoint that no plugin may take. */
const RESERVED_ROUTES: ReadonlySet<string> = new Set(['/', '/status', '/metrics', '/healthz']);

/**
 * Sets up every plugin and validates options and policies; throws a coded error for the first
 * problem. Every plugin whose `setup` returned is added to `setUp` at once, so that the caller can
 * shut those down when a later one fails.
 */
export async function setUpPlugins(options: KernelOptions, log: KernelLogger, store: Store, registry: Registry, setUp: LoadedPlugin[]): Promise<SetUpPlugins> {
  const claims = new Map<string, LoadedPlugin>();
  const loaded: LoadedPlugin[] = [];
  const routes = new Map<string, PluginRoute>();
  const errors = new Map(errorRegistry());
  let order = 0;
  const apis = new Map<string, object>();
  const commit: (() => void)[] = [];
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
      hooks = await def.setup({ name: def.name, log: pluginLog, metrics: metricsFactory(def.name, registry, commit), store, options: pluginOptions, http, error: pluginErrors(def.name, def.errors), expose, use });
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
  return { plugins: loaded, routes, errors, matcher, commit };
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
  // Each problem stays a coded error of its own (the aggregate's cause), so a test can look for one
  // problem whatever the others (`problemsOf` in themis-milter/testing).
  return new ThemisError('THEMIS_ERR_POLICIES_INVALID', { count: problems.length, list, problems: problems.map((p) => ({ code: p.code, message: p.message })) }, { cause: new AggregateError(problems, `${problems.length} problems in the policies`) });
}
