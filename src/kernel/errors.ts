import { CodedError, MILTER_ERRORS } from '../milter/errors.ts';
import { STORE_ERRORS } from '../store/errors.ts';

/**
 * The kernel's error registry: every error a plugin author or an administrator can meet has a stable
 * `THEMIS_ERR_*` code and a message template. Milter-level codes live in `src/milter/errors.ts`, the
 * store's in `src/store/errors.ts`. Plugins declare their own codes (`THEMIS_<PLUGIN>_*`) in their
 * definition's `errors`; {@link errorRegistry} merges them with these into one registry.
 * @module
 */

/** Code → message template; `{name}` placeholders come from the error's details. */
export const KERNEL_ERRORS = {
  THEMIS_ERR_PLUGIN_INVALID: 'plugin {plugin}: {reason}',
  THEMIS_ERR_PLUGIN_NOT_FOUND: 'plugin {spec} cannot be loaded from {from}: {reason}',
  THEMIS_ERR_CONFIG: 'configuration {file}: {path}: {reason}',
  THEMIS_ERR_CONFIG_INVALID: 'configuration {file} has {count} problems:{list}',
  THEMIS_ERR_POLICIES_INVALID: '{count} problems in the policies:{list}',
  THEMIS_ERR_WORKERS_MEMORY_STORE: '--workers {workers} needs a shared store: with the in-memory store each worker would count on its own (set store: { type: \'redis\', url: … } or run one worker)',
  THEMIS_ERR_HTTP_LISTEN: 'status endpoint cannot listen on {spec}: {reason}; serving mail without it',
  THEMIS_ERR_HTTP_UNAUTHORIZED: 'status endpoint: {path} needs the bearer token (http.token)',
  THEMIS_ERR_UNHANDLED_REJECTION: 'unhandled promise rejection: {reason}',
  THEMIS_ERR_UNCAUGHT_EXCEPTION: 'uncaught exception: {reason}',
  THEMIS_ERR_IPC_MESSAGE: 'ignored a malformed message on {channel}: {reason}',
  THEMIS_ERR_RELOAD_REFUSED: 'reload ({trigger}) refused, still serving configuration {hash}: {reason}',
  THEMIS_ERR_PLUGIN_KERNEL_RANGE: 'plugin {plugin} supports kernel {range}, but this kernel is {version}',
  THEMIS_ERR_PLUGIN_UNKNOWN_HOOK: 'plugin {plugin} returned unknown hook {hook} (known hooks: {known})',
  THEMIS_ERR_PLUGIN_DUPLICATE: 'plugin {plugin} is loaded twice',
  THEMIS_ERR_PLUGIN_DUPLICATE_CLAIM: 'policy field {field} is claimed by both {first} and {second}',
  THEMIS_ERR_PLUGIN_OPTIONS: 'options of plugin {plugin}: {path}: {reason}',
  THEMIS_ERR_PLUGIN_SETUP: 'plugin {plugin} failed in setup: {reason}',
  THEMIS_ERR_PLUGIN_ROUTE: 'plugin {plugin} cannot serve {path}: {reason}',
  THEMIS_ERR_POLICY_UNCLAIMED: 'policies[{index}] ({policy}): field {field} is not claimed by any loaded plugin (claimed: {claimed})',
  THEMIS_ERR_POLICY_NAME: '{path}: {kind} name {name} is not allowed: {reason}',
  THEMIS_ERR_POLICY_FIELD: 'policies[{index}].{path} ({policy}): {reason}',
  THEMIS_ERR_HOOK_FAILED: 'plugin {plugin} failed in {hook}: {reason}; answering {fallback}',
  THEMIS_ERR_HOOK_TIMEOUT: 'plugin {plugin} did not answer {hook} within {ms} ms; answering {fallback}',
  THEMIS_ERR_HOOK_BAD_VERDICT: 'plugin {plugin} returned an invalid verdict from {hook}: {reason}',
  THEMIS_ERR_HOOK_BAD_REPLY: 'plugin {plugin} answered {hook} with a reply the MTA would refuse ({reason}): the plain {action} is sent instead',
  THEMIS_ERR_HOOK_LISTENER_VERDICT: 'plugin {plugin} listens to {hook} (it is not answered) but returned {action}; ignored',
  THEMIS_ERR_MODIFICATION: 'plugin {plugin}: {reason}',
  THEMIS_ERR_PLUGIN_UNDECLARED_ERROR: 'plugin {plugin} raised {code}, which is not among the error codes it declares ({declared})',
  THEMIS_ERR_PLUGIN_DEPENDENCY: 'plugin {plugin}: {reason}',
  THEMIS_ERR_NODE_VERSION: 'Themis needs Node.js {needs} or later (24 LTS recommended); this is Node.js {found} ({execPath})',
  THEMIS_ERR_NOT_BUILT: '{entry} is missing: this copy of Themis was not built (npm run build)',
  THEMIS_ERR_NODE_HEAP: 'could not restart Node with {flags} ({reason}); running with V8\'s own heap sizing',
} as const;

/**
 * A path inside a configuration as an administrator writes it: `policies[2].ratelimit.windows[0].limit`.
 * Numbers become indexes; keys that are not identifiers are quoted.
 */
export function formatConfigPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else if (typeof k === 'string' && /^[A-Za-z_$][\w$]*$/.test(k)) out += out ? `.${k}` : k;
    else out += `[${JSON.stringify(String(k))}]`;
  }
  return out || '(root)';
}

/** A code of the kernel's error registry. */
export type KernelErrorCode = keyof typeof KERNEL_ERRORS;

/** An error raised by the kernel; `code` is stable, `details` holds the template's values. */
export class ThemisError extends CodedError<KernelErrorCode> {
  constructor(code: KernelErrorCode, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(code, KERNEL_ERRORS[code], details, options);
    this.name = 'ThemisError';
  }
}

/**
 * The core of the one registry: every `THEMIS_ERR_*` code — engine, store and kernel: code → message
 * template. Plugin codes join it through {@link errorRegistry} (a kernel's is `kernel.errors`).
 */
export const THEMIS_ERRORS = { ...MILTER_ERRORS, ...STORE_ERRORS, ...KERNEL_ERRORS } as const;

/** Who owns a registered code: `milter`, `store`, `kernel`, or the name of the plugin that declares it. */
export type ErrorOwner = 'milter' | 'store' | 'kernel' | (string & {});

/** One entry of the error registry. */
export interface RegisteredError {
  /** The stable code (`THEMIS_ERR_HOOK_FAILED`, `THEMIS_HEADERS_BUDGET`). */
  readonly code: string;
  /** The message template; `{name}` placeholders come from the error's details. */
  readonly template: string;
  /** `milter`, `store`, `kernel`, or the plugin's name. */
  readonly owner: ErrorOwner;
}

/** What the registry reads of a plugin definition. */
export interface ErrorDeclaringPlugin {
  /** The plugin's name. */
  readonly name: string;
  /** Its codes → message templates. */
  readonly errors?: Readonly<Record<string, string>>;
}

/**
 * The part of a plugin's codes after `THEMIS_`: its name upper-cased, every run of other characters
 * than letters and digits made one `_` (`headers` → `HEADERS`, `recipient-allowlist` → `RECIPIENT_ALLOWLIST`).
 */
export function errorPrefix(plugin: string): string {
  return plugin.toUpperCase().replace(/[^A-Z0-9]+/g, '_').replace(/^_+|_+$/g, '');
}

const CORE_ERRORS: ReadonlyMap<string, RegisteredError> = new Map(
  (
    [
      ['milter', MILTER_ERRORS],
      ['store', STORE_ERRORS],
      ['kernel', KERNEL_ERRORS],
    ] as const
  ).flatMap(([owner, codes]) => Object.entries(codes).map(([code, template]) => [code, { code, template, owner }] as const)),
);

/**
 * Checks a plugin's declared codes and adds them to `registry` (which holds the core codes and the
 * plugins added before). Each code must be `THEMIS_<PREFIX>_<WORD>` ({@link errorPrefix}) with a
 * non-empty template, and must not be a core code or another plugin's; otherwise a
 * `THEMIS_ERR_PLUGIN_INVALID` naming the code.
 */
export function registerPluginErrors(registry: Map<string, RegisteredError>, plugin: ErrorDeclaringPlugin): void {
  const errors = plugin.errors;
  if (errors === undefined) return;
  const fail = (reason: string): never => {
    throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: plugin.name, reason });
  };
  if (errors === null || typeof errors !== 'object' || Array.isArray(errors)) fail('errors is not an object of error codes and message templates');
  const prefix = errorPrefix(plugin.name);
  if (prefix === '' || /^ERR(_|$)/.test(prefix)) fail(`cannot declare error codes: its codes would begin THEMIS_${prefix}, and THEMIS_ERR_ is the core's (rename the plugin)`);
  const shape = new RegExp(`^THEMIS_${prefix}_[A-Z0-9]+(?:_[A-Z0-9]+)*$`);
  for (const [code, template] of Object.entries(errors)) {
    if (!shape.test(code)) fail(`error code ${code} is not named THEMIS_${prefix}_<WORD> (upper-case letters, digits and _)`);
    if (typeof template !== 'string' || template.trim() === '') fail(`error code ${code} has no message template`);
    const other = registry.get(code);
    if (other && other.owner !== plugin.name) fail(`error code ${code} is already ${CORE_ERRORS.has(code) ? 'a core code' : `declared by plugin ${other.owner}`}`);
    registry.set(code, { code, template, owner: plugin.name });
  }
}

/**
 * The one registry: every core code (engine, store, kernel) and every code the given plugins declare,
 * by code, in that order. Refuses a badly named or colliding plugin code with `THEMIS_ERR_PLUGIN_INVALID`.
 */
export function errorRegistry(plugins: readonly ErrorDeclaringPlugin[] = []): ReadonlyMap<string, RegisteredError> {
  const registry = new Map(CORE_ERRORS);
  for (const p of plugins) registerPluginErrors(registry, p);
  return registry;
}

/**
 * An error a plugin raises: one of the codes its definition declares, the message built from that
 * code's template, and the plugin's name. Make one with the plugin context's `error`, or {@link pluginErrors}.
 */
export class PluginError<TCode extends string = string> extends CodedError<TCode> {
  /** The plugin that raised it. */
  readonly plugin: string;

  constructor(plugin: string, code: TCode, template: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(code, template, details, options);
    this.name = 'PluginError';
    this.plugin = plugin;
  }
}

/** Makes a {@link PluginError} of one of a plugin's declared codes. */
export type PluginErrorFactory<TCode extends string = string> = (code: TCode, details?: Record<string, unknown>, options?: ErrorOptions) => PluginError<TCode>;

/**
 * The error factory of a plugin: `pluginErrors('headers', HEADERS_ERRORS)('THEMIS_HEADERS_BUDGET', { … })`.
 * Setup gets the same as `ctx.error`; this one serves code outside setup (helpers, schemas). A code the
 * plugin does not declare throws `THEMIS_ERR_PLUGIN_UNDECLARED_ERROR`.
 */
export function pluginErrors<TCode extends string>(plugin: string, errors: Readonly<Record<TCode, string>> | undefined): PluginErrorFactory<TCode> {
  const templates: Readonly<Record<string, string>> = errors ?? {};
  return (code, details, options) => {
    if (!Object.hasOwn(templates, code)) throw new ThemisError('THEMIS_ERR_PLUGIN_UNDECLARED_ERROR', { plugin, code, declared: Object.keys(templates).join(', ') || 'none' });
    return new PluginError(plugin, code, templates[code], details, options);
  };
}

/** True when `err` is a {@link PluginError}, optionally of the given code. */
export function isPluginError(err: unknown, code?: string): err is PluginError {
  return err instanceof PluginError && (code === undefined || err.code === code);
}

/** True when `err` is a {@link ThemisError}, optionally of the given code. */
export function isThemisError(err: unknown, code?: KernelErrorCode): err is ThemisError {
  return err instanceof ThemisError && (code === undefined || err.code === code);
}
