import { CodedError, MILTER_ERRORS } from '../milter/errors.ts';
import { STORE_ERRORS } from '../store/errors.ts';

/**
 * The kernel's error registry: every error a plugin author or an administrator can meet has a stable
 * `THEMIS_ERR_*` code and a message template. Milter-level codes live in `src/milter/errors.ts`.
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
  THEMIS_ERR_HOOK_LISTENER_VERDICT: 'plugin {plugin} listens to {hook} (it is not answered) but returned {action}; ignored',
  THEMIS_ERR_MODIFICATION: 'plugin {plugin}: {reason}',
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

/** The one registry of every `THEMIS_ERR_*` code — engine, store and kernel: code → message template. */
export const THEMIS_ERRORS = { ...MILTER_ERRORS, ...STORE_ERRORS, ...KERNEL_ERRORS } as const;

/** True when `err` is a {@link ThemisError}, optionally of the given code. */
export function isThemisError(err: unknown, code?: KernelErrorCode): err is ThemisError {
  return err instanceof ThemisError && (code === undefined || err.code === code);
}
