/**
 * The configuration file: `themis.config.ts` (or `.mts`, `.js`, `.mjs`, `.json`, `.yaml`, `.yml`,
 * `.themisrc*`, or a `themis` key in package.json) found by cosmiconfig in the working directory, or the
 * file given with `--config` / `THEMIS_CONFIG`. It is validated whole: every problem is reported at
 * once, each naming the file, the path inside it, what was expected and what was found.
 * @module
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { dirname, extname, resolve, basename } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cosmiconfigSync } from 'cosmiconfig';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ThemisError, formatConfigPath } from './kernel/errors.ts';
import { loadPlugin, type PluginSpec } from './kernel/loader.ts';
import type { KernelOptions, PluginEntry, PolicyInput } from './kernel/kernel.ts';
import type { OnErrorVerdict } from './kernel/plugin.ts';
import type { PolicyDefinition, PolicySettings } from './kernel/policy.ts';
import { storeConfigSchema, type StoreConfig } from './store/config.ts';

/** A plugin in the configuration: a reference alone, or with its settings. */
export type PluginConfig = PluginSpec | { plugin: PluginSpec; options?: unknown; priority?: number; onError?: OnErrorVerdict };

/**
 * What one plugin of the configuration claims, for typing policies: a typed field (a plugin object
 * whose field name and schema are known), `open` (a package name or path, or a plugin whose field name
 * is not known to the types: anything goes), or nothing (a plugin that claims no field).
 */
type ClaimOfPlugin<P> = P extends string
  ? { open: true }
  : P extends { readonly claims?: infer C }
    ? unknown extends C
      ? { open: true }
      : NonNullable<C> extends { readonly field: infer F extends string; readonly schema: infer S extends z.ZodType }
      ? 0 extends 1 & F
        ? { open: true }
        : string extends F
          ? { open: true }
          : [F] extends [never]
            ? never
            : { field: F; input: z.input<S> }
      : never
    : { open: true };

/** The claims of a list of plugins, one per entry (a union). */
type ClaimsOf<TPlugins extends readonly PluginConfig[]> = ClaimOfPlugin<TPlugins[number] extends infer E ? (E extends { plugin: infer P } ? P : E) : never>;

/** The typed fields of the claims `C`, each optional and typed by its plugin's schema input. */
type TypedFields<C> = { [F in Extract<C, { field: string; input: unknown }>['field']]?: Extract<C, { field: F; input: unknown }>['input'] };

/**
 * A policy of a configuration whose plugins are `TPlugins`: its matching settings and the field each
 * plugin claims, typed by that plugin's schema (its input type: what the file may write). When every
 * plugin is an object whose claim the types know, a field no plugin claims does not compile (the
 * kernel would refuse it at load); a plugin given by name (`'themis-plugin-spf'`), or typed only as
 * {@link PluginEntry}, lets any other field through, as {@link PolicyInput} does.
 */
export type PolicyOf<TPlugins extends readonly PluginConfig[]> = [Extract<ClaimsOf<TPlugins>, { open: true }>] extends [never]
  ? Flat<PolicyDefinition & TypedFields<ClaimsOf<TPlugins>>>
  : [Extract<ClaimsOf<TPlugins>, { field: string }>] extends [never]
    ? PolicyInput
    : Flat<PolicyDefinition & TypedFields<ClaimsOf<TPlugins>>> & { [field: string]: unknown };

/** One object type of an intersection (what editors show; assignable to {@link PolicyInput}). */
type Flat<T> = { [K in keyof T]: T[K] };

/** pino's levels. */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/**
 * The configuration. `TPlugins` is the type of its plugin list: {@link defineConfig} infers it, and
 * types each policy's fields by the plugins that claim them ({@link PolicyOf}).
 */
export interface ThemisConfig<TPlugins extends readonly PluginConfig[] = PluginConfig[]> {
  /** Socket to listen on (`inet:PORT@HOST`, `inet6:PORT@[ADDR]`, `unix:/path`); `--listen` and `THEMIS_LISTEN` win. Default `inet:8440@127.0.0.1`. */
  listen?: string;
  /**
   * Where plugins keep shared state: `{ type: 'memory' }` (default: this process only) or
   * `{ type: 'redis', url, password, sentinel | cluster, tls, keyPrefix }` (every daemon of a pool).
   * `--redis-url`/`THEMIS_REDIS_URL` and `--redis-password`/`THEMIS_REDIS_PASSWORD` win.
   */
  store?: StoreConfig;
  /** Logging: `level` (default info; `--log-level`, `THEMIS_LOG_LEVEL` win) and `pretty` (default: when stdout is a terminal). */
  log?: { level?: LogLevel; pretty?: boolean };
  /**
   * Reloading: `watch` reloads when the configuration file changes (default true); `resync` reloads
   * when `themis config resync` is published through the store (default true); `pollInterval` is how
   * often, in ms, the store's configuration version is read, so a daemon that missed a resync message
   * catches up (default 5,000).
   */
  reload?: { watch?: boolean; resync?: boolean; pollInterval?: number };
  /**
   * The status endpoint (`GET /status`, `/metrics`, `/healthz`, and plugin routes such as the monitor's
   * dashboard): `listen` is a socket spec, or false (default `inet:8441@127.0.0.1`; `--http`/`THEMIS_HTTP`
   * win); `token` is a bearer token (16 characters or more) that every path but `/healthz` then
   * requires (`--http-token`/`THEMIS_HTTP_TOKEN` win). `http: false` disables the endpoint, as
   * `http: { listen: false }` does (`--http` or `THEMIS_HTTP` can still turn it on).
   */
  http?: false | { listen?: string | false; token?: string };
  /** Processes serving one listening socket (`node:cluster`); needs a shared store. Default 1; `--workers` wins. */
  workers?: number;
  /** Plugins, in load order. */
  plugins?: TPlugins;
  /** Policies: name, priority, `match` (source, destination, direction, pool), `type`, `stopHere`, and the fields plugins claim. */
  policies?: NoInfer<PolicyOf<TPlugins>>[];
  /** Named sets of `@domain`, `user@domain`, IPs, CIDRs and `sasl:login` that policies refer to. */
  groups?: PolicySettings['groups'];
  /** Named pools of MTA host names (`{j}`); a policy with `match.pool` applies only there. */
  pools?: PolicySettings['pools'];
  /** Client networks whose mail counts as outbound without SMTP AUTH. */
  outboundNetworks?: string[];
  /** Deadline of each hook call, in ms (default 10,000). */
  hookTimeout?: number;
  /**
   * The MTA in front of Themis, which shapes the milter negotiation (default `'postfix'`). `'postfix'`
   * always asks for DATA and answers it: Postfix flushes its milter writes at DATA before handing the
   * connection to cleanup, and a flush with nothing to answer waits ~40 ms for a delayed ACK.
   * `'sendmail'` leaves DATA off unless a plugin taps it: Sendmail writes every packet on its own, so
   * an answered DATA behind its unanswered macro packets waits for that ACK over TCP instead (measured
   * in bench/README.md, "Sendmail end to end"). Over a UNIX socket neither waits.
   */
  mta?: 'postfix' | 'sendmail';
  /** Verdict of a plugin whose hook fails, unless the plugin sets its own (default tempfail). */
  onError?: OnErrorVerdict;
}

/**
 * Gives a configuration object its type (editor completion); returns it unchanged. The plugin list's
 * type is inferred: a policy field claimed by a plugin given as an object (`import spf from
 * 'themis-plugin-spf'`) is checked against that plugin's schema, so a wrongly typed field fails to
 * compile; plugins given by name are resolved only at load, and leave their fields unchecked until then.
 */
export function defineConfig<TPlugins extends readonly PluginConfig[] = PluginConfig[]>(config: ThemisConfig<TPlugins>): ThemisConfig<TPlugins> {
  return config;
}

const onError = z.enum(['continue', 'accept', 'tempfail', 'reject']);
const pluginRef = z.union([z.string().min(1), z.looseObject({ name: z.string(), setup: z.function() })], { error: 'expected a package name, a path, or a plugin object made with definePlugin()' });
const pluginEntry = z.strictObject({ plugin: pluginRef, options: z.unknown().optional(), priority: z.number().optional(), onError: onError.optional() });

function pluginEntryProblems(entries: readonly unknown[]): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  entries.forEach((entry, i) => {
    const schema = entry !== null && typeof entry === 'object' && 'plugin' in entry ? pluginEntry : pluginRef;
    const r = schema.safeParse(entry, { reportInput: true });
    if (!r.success) problems.push(...zodProblems(r.error, ['plugins', i]));
  });
  return problems;
}

const Schema = z.strictObject({
  listen: z.string().min(1).optional(),
  store: storeConfigSchema.optional(),
  log: z.strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional(), pretty: z.boolean().optional() }).optional(),
  reload: z.strictObject({ watch: z.boolean().optional(), resync: z.boolean().optional(), pollInterval: z.number().int().min(100).optional() }).optional(),
  http: z
    .union([z.literal(false), z.strictObject({ listen: z.union([z.string().min(1), z.literal(false)]).optional(), token: z.string().min(16, 'expected a bearer token of 16 characters or more').optional() })], {
      // Anything but false or an object (true, 'off', a port…) is one problem, saying what is allowed.
      error: (issue) => (issue.input === null || typeof issue.input !== 'object' || Array.isArray(issue.input) ? 'expected false (no status endpoint) or an object { listen, token }' : undefined),
    })
    .optional(),
  workers: z.number().int().min(1).max(256).optional(),
  // Entries are checked one by one below: a union's error would hide which field of an entry is wrong.
  plugins: z.array(z.unknown()).default([]),
  policies: z.array(z.looseObject({ name: z.string().min(1) })).default([]),
  hookTimeout: z.number().int().positive().optional(),
  mta: z.enum(['postfix', 'sendmail']).optional(),
  groups: z.record(z.string(), z.array(z.string())).optional(),
  pools: z.record(z.string(), z.strictObject({ servers: z.array(z.string().min(1)).min(1), fallbackToGlobal: z.boolean().optional() })).optional(),
  outboundNetworks: z.array(z.string()).optional(),
  onError: onError.optional(),
});

/** A loaded configuration: validated, with plugins resolved to definitions. */
export interface LoadedConfig {
  /** The file it came from. */
  file: string;
  /** First 16 hex digits of the SHA-256 of the file's bytes (`sha256sum FILE | cut -c1-16`). */
  hash: string;
  /** When it was loaded. */
  loadedAt: Date;
  /** The configured socket, if any. */
  listen: string | undefined;
  /** The store settings (memory when absent). */
  store: StoreConfig;
  /** Logging settings. */
  log: { level?: LogLevel; pretty?: boolean };
  /** Reload settings, defaults applied. */
  reload: { watch: boolean; resync: boolean; pollInterval: number };
  /** The status endpoint's socket, false when disabled, undefined for the default. */
  http: string | false | undefined;
  /** The status endpoint's bearer token, if set. */
  httpToken: string | undefined;
  /** Worker processes, if set. */
  workers: number | undefined;
  /** Plugins, resolved to their definitions, in load order. */
  plugins: PluginEntry[];
  /** Policies as written (validated against the plugins' claims when the kernel loads). */
  policies: PolicyInput[];
  /** Deadline of each hook call, in ms. */
  hookTimeout: number | undefined;
  /** The MTA the negotiation is shaped for ({@link ThemisConfig.mta}), default applied. */
  mta: 'postfix' | 'sendmail';
  /** Groups, pools and outbound networks for policy matching. */
  policySettings: PolicySettings;
  /** Default verdict of failing plugins. */
  onError: OnErrorVerdict | undefined;
}

/** File names looked for in the working directory, in this order (then package.json's `themis` key). */
export const CONFIG_FILES = [
  'themis.config.ts',
  'themis.config.mts',
  'themis.config.js',
  'themis.config.mjs',
  'themis.config.json',
  'themis.config.yaml',
  'themis.config.yml',
  '.themisrc',
  '.themisrc.json',
  '.themisrc.yaml',
  '.themisrc.yml',
  'package.json',
];

const MODULE_EXTENSIONS = new Set(['.ts', '.mts', '.js', '.mjs', '.cjs']);

/**
 * The configuration file to use: the given path (resolved from `cwd`), else the first of
 * {@link CONFIG_FILES} in `cwd` (cosmiconfig's search, limited to that directory so that the daemon
 * never picks up a file from a parent), else undefined.
 */
export function findConfig(path: string | undefined, cwd = process.cwd()): string | undefined {
  if (path) return resolve(cwd, path);
  // Loaders return a placeholder: finding is synchronous, loading (which may import TypeScript) is not.
  const found = () => ({ found: true });
  const explorer = cosmiconfigSync('themis', {
    searchPlaces: CONFIG_FILES,
    searchStrategy: 'none',
    cache: false,
    loaders: { '.ts': found, '.mts': found, '.js': found, '.mjs': found, '.cjs': found, '.yaml': found, '.yml': found, noExt: found },
  });
  try {
    return explorer.search(cwd)?.filepath;
  } catch {
    return undefined;
  }
}

/** The URLs (without query) of the `.ts` configurations loaded so far: always ES modules. */
const typescriptConfigs = new Set<string>();
let typescriptHook = false;

/**
 * A `themis.config.ts` is an ES module whatever the package.json above it says. `npm init -y` (npm 11)
 * writes `"type": "commonjs"`, and Node would then read the file as CommonJS and fail on its
 * `import`: a load hook tells Node the format of the configuration files themselves, nothing else.
 */
function loadAsModule(url: string): void {
  typescriptConfigs.add(url);
  if (typescriptHook) return;
  typescriptHook = true;
  registerHooks({
    load(target, context, next) {
      const q = target.indexOf('?');
      return typescriptConfigs.has(q < 0 ? target : target.slice(0, q)) ? next(target, { ...context, format: 'module-typescript' }) : next(target, context);
    },
  });
}

async function readRaw(file: string, bytes: Buffer, hash: string): Promise<unknown> {
  const ext = extname(file);
  if (MODULE_EXTENSIONS.has(ext)) {
    if (ext === '.ts') loadAsModule(pathToFileURL(file).href);
    // ESM caches modules by URL and never unloads one: a query string per content (the file's hash)
    // makes a reload see the edited file, while a reload of unchanged bytes reuses the module instead
    // of keeping one more copy for the process's life (a new URL per SIGHUP grew the heap every time).
    const mod = (await import(`${pathToFileURL(file).href}?content=${hash}`)) as { default?: unknown };
    return mod.default;
  }
  const text = bytes.toString('utf8');
  if (basename(file) === 'package.json') return (JSON.parse(text) as { themis?: unknown }).themis;
  if (ext === '.json') return JSON.parse(text);
  return parseYaml(text, { prettyErrors: true });
}

/** First 16 hex digits of the SHA-256 of a configuration file's bytes (`sha256sum FILE | cut -c1-16`). */
export function configHash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex').slice(0, 16);
}

/** The kernel settings a configuration gives (none without one): what every command builds its kernel from. */
export function kernelOptionsOf(config: LoadedConfig | undefined): Pick<KernelOptions, 'plugins' | 'policies' | 'policySettings' | 'hookTimeout' | 'onError' | 'mta'> {
  return { plugins: config?.plugins ?? [], policies: config?.policies ?? [], policySettings: config?.policySettings, hookTimeout: config?.hookTimeout, onError: config?.onError, mta: config?.mta };
}

/** One problem found in a configuration. */
export interface ConfigProblem {
  /** The error code (`THEMIS_ERR_CONFIG`, `THEMIS_ERR_POLICY_FIELD`, …). */
  code: string;
  /** Where, inside the file (`policies[2].ratelimit.windows[0].limit`). */
  path: string;
  /** What was expected (and, when known, what was found). */
  message: string;
}

function describeFound(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'function') return 'a function';
  try {
    const s = JSON.stringify(value);
    return s.length > 60 ? `${s.slice(0, 57)}...` : s;
  } catch {
    return typeof value;
  }
}

/** The zod issues of a failed parse as problems, each with the value found at its path. */
export function zodProblems(error: z.ZodError, prefix: PropertyKey[] = []): ConfigProblem[] {
  return error.issues.map((issue) => {
    const found = 'input' in issue ? `; found ${describeFound(issue.input)}` : '';
    const unknownKeys = issue.code === 'unrecognized_keys' ? ` (allowed: see the ThemisConfig type)` : '';
    return { code: 'THEMIS_ERR_CONFIG', path: formatConfigPath([...prefix, ...issue.path]), message: `${issue.message}${unknownKeys}${issue.code === 'unrecognized_keys' ? '' : found}` };
  });
}

/** Throws one error for all problems: the code of the single problem, or `THEMIS_ERR_CONFIG_INVALID` listing them. */
export function configError(file: string, problems: ConfigProblem[], cause?: unknown): ThemisError {
  if (problems.length === 1) return new ThemisError('THEMIS_ERR_CONFIG', { file, path: problems[0].path, reason: problems[0].message, problems }, { cause });
  const list = problems.map((p) => `\n  - ${p.path}: ${p.message}`).join('');
  return new ThemisError('THEMIS_ERR_CONFIG_INVALID', { file, count: problems.length, list, problems }, { cause });
}

/**
 * Loads and validates a configuration file, resolving its plugins. Throws `THEMIS_ERR_CONFIG` (one
 * problem) or `THEMIS_ERR_CONFIG_INVALID` (several), each naming the file and the paths inside it.
 */
export async function loadConfig(file: string): Promise<LoadedConfig> {
  if (!existsSync(file)) throw configError(file, [{ code: 'THEMIS_ERR_CONFIG', path: '(file)', message: 'no such file' }]);
  let bytes: Buffer;
  let hash: string;
  let raw: unknown;
  try {
    bytes = readFileSync(file);
    hash = configHash(bytes);
    raw = await readRaw(file, bytes, hash);
  } catch (err) {
    throw configError(file, [{ code: 'THEMIS_ERR_CONFIG', path: '(file)', message: `cannot be read: ${(err as Error).message.split('\n').slice(0, 3).join(' ')}` }], err);
  }
  if (raw === undefined || raw === null) throw configError(file, [{ code: 'THEMIS_ERR_CONFIG', path: '(root)', message: 'expected a configuration object (export default defineConfig({ … })), found nothing' }]);
  const parsed = Schema.safeParse(raw, { reportInput: true });
  const entries = (raw as { plugins?: unknown }).plugins;
  const problems = [...(parsed.success ? [] : zodProblems(parsed.error)), ...(Array.isArray(entries) ? pluginEntryProblems(entries) : [])];
  if (!parsed.success || problems.length > 0) throw configError(file, problems);
  const c = parsed.data;
  const base = dirname(file);
  const plugins: PluginEntry[] = [];
  for (const [i, p] of c.plugins.entries()) {
    const entry = p !== null && typeof p === 'object' && 'plugin' in p ? (p as { plugin: PluginSpec; options?: unknown; priority?: number; onError?: OnErrorVerdict }) : { plugin: p as PluginSpec };
    try {
      plugins.push({ ...entry, plugin: await loadPlugin(entry.plugin, base) });
    } catch (err) {
      problems.push({ code: (err as ThemisError).code ?? 'THEMIS_ERR_PLUGIN_NOT_FOUND', path: `plugins[${i}]`, message: (err as Error).message });
    }
  }
  if (problems.length > 0) throw configError(file, problems);
  return {
    file,
    hash,
    loadedAt: new Date(),
    listen: c.listen,
    store: (c.store as StoreConfig | undefined) ?? { type: 'memory' },
    log: c.log ?? {},
    reload: { watch: c.reload?.watch ?? true, resync: c.reload?.resync ?? true, pollInterval: c.reload?.pollInterval ?? 5_000 },
    http: c.http === false ? false : c.http?.listen,
    httpToken: c.http === false ? undefined : c.http?.token,
    workers: c.workers,
    plugins,
    policies: c.policies as PolicyInput[],
    hookTimeout: c.hookTimeout,
    mta: c.mta ?? 'postfix',
    onError: c.onError,
    policySettings: { groups: c.groups, pools: c.pools, outboundNetworks: c.outboundNetworks },
  };
}
