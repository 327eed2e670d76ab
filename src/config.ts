/**
 * The configuration file, first cut: `themis.config.ts` (or `.js`/`.json`) exporting
 * `defineConfig({ … })`. Discovery with cosmiconfig, YAML, groups, pools and policy matching come
 * with the policy engine; what is here is what the kernel needs to load plugins and policies.
 * @module
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { ThemisError } from './kernel/errors.ts';
import { loadPlugin, type PluginSpec } from './kernel/loader.ts';
import type { PluginEntry, PolicyInput } from './kernel/kernel.ts';
import type { PolicySettings } from './kernel/policy.ts';

/** A plugin in the configuration: a reference alone, or with its settings. */
export type PluginConfig = PluginSpec | { plugin: PluginSpec; options?: unknown; priority?: number; onError?: 'accept' | 'tempfail' | 'reject' };

/** The configuration. */
export interface ThemisConfig {
  /** Socket to listen on (`inet:PORT@HOST`, `inet6:PORT@[ADDR]`, `unix:/path`); `--listen` and `THEMIS_LISTEN` win. */
  listen?: string;
  /** Plugins, in load order. */
  plugins?: PluginConfig[];
  /** Policies: name, priority, `match` (source, destination, direction, pool), `type`, `stopHere`, and the fields plugins claim. */
  policies?: PolicyInput[];
  /** Named sets of `@domain`, `user@domain`, IPs, CIDRs and `sasl:login` that policies refer to. */
  groups?: PolicySettings['groups'];
  /** Named pools of MTA host names (`{j}`); a policy with `match.pool` applies only there. */
  pools?: PolicySettings['pools'];
  /** Client networks whose mail counts as outbound without SMTP AUTH. */
  outboundNetworks?: string[];
  /** Deadline of each hook call, in ms (default 10,000). */
  hookTimeout?: number;
  /** Verdict of a plugin whose hook fails, unless the plugin sets its own (default tempfail). */
  onError?: 'accept' | 'tempfail' | 'reject';
}

/** Gives a configuration object its type (editor completion); returns it unchanged. */
export function defineConfig(config: ThemisConfig): ThemisConfig {
  return config;
}

const pluginRef = z.union([z.string().min(1), z.object({ name: z.string(), setup: z.function() }).passthrough()]);
const Schema = z
  .object({
    listen: z.string().optional(),
    plugins: z.array(z.union([pluginRef, z.object({ plugin: pluginRef, options: z.unknown().optional(), priority: z.number().optional(), onError: z.enum(['accept', 'tempfail', 'reject']).optional() }).strict()])).default([]),
    policies: z.array(z.object({ name: z.string().min(1) }).passthrough()).default([]),
    hookTimeout: z.number().int().positive().optional(),
    groups: z.record(z.string(), z.array(z.string())).optional(),
    pools: z.record(z.string(), z.object({ servers: z.array(z.string().min(1)).min(1), fallbackToGlobal: z.boolean().optional() }).strict()).optional(),
    outboundNetworks: z.array(z.string()).optional(),
    onError: z.enum(['accept', 'tempfail', 'reject']).optional(),
  })
  .strict();

/** A loaded configuration: plugins resolved to definitions. */
export interface LoadedConfig {
  /** The file it came from. */
  file: string;
  /** The configured socket, if any. */
  listen: string | undefined;
  /** Plugins, resolved to their definitions, in load order. */
  plugins: PluginEntry[];
  /** Policies as written (validated against the plugins' claims when the kernel loads). */
  policies: PolicyInput[];
  /** Deadline of each hook call, in ms. */
  hookTimeout: number | undefined;
  /** Groups, pools and outbound networks for policy matching. */
  policySettings: PolicySettings;
  /** Default verdict of failing plugins. */
  onError: 'accept' | 'tempfail' | 'reject' | undefined;
}

/** Default file names looked for in the working directory. */
export const CONFIG_FILES = ['themis.config.ts', 'themis.config.js', 'themis.config.mjs', 'themis.config.json'];

/** The configuration file to use: the given path, else the first default name in `cwd`, else undefined. */
export function findConfig(path: string | undefined, cwd = process.cwd()): string | undefined {
  if (path) return resolve(cwd, path);
  for (const name of CONFIG_FILES) if (existsSync(resolve(cwd, name))) return resolve(cwd, name);
  return undefined;
}

/** Loads and validates a configuration file; throws a coded error naming the file and the path inside it. */
export async function loadConfig(file: string): Promise<LoadedConfig> {
  if (!existsSync(file)) throw new ThemisError('THEMIS_ERR_CONFIG', { file, path: '(file)', reason: 'no such file' });
  let raw: unknown;
  try {
    raw = file.endsWith('.json') ? JSON.parse(readFileSync(file, 'utf8')) : ((await import(pathToFileURL(file).href)) as { default?: unknown }).default;
  } catch (err) {
    throw new ThemisError('THEMIS_ERR_CONFIG', { file, path: '(file)', reason: (err as Error).message.split('\n')[0] }, { cause: err });
  }
  const parsed = Schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue.path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)), '') || '(root)';
    throw new ThemisError('THEMIS_ERR_CONFIG', { file, path, reason: issue.message });
  }
  const c = parsed.data;
  const base = dirname(file);
  const plugins: PluginEntry[] = [];
  for (const p of c.plugins) {
    const entry = typeof p === 'object' && 'plugin' in p ? (p as { plugin: PluginSpec; options?: unknown; priority?: number; onError?: 'accept' | 'tempfail' | 'reject' }) : { plugin: p as PluginSpec };
    plugins.push({ ...entry, plugin: await loadPlugin(entry.plugin, base) });
  }
  return { file, listen: c.listen, plugins, policies: c.policies as PolicyInput[], hookTimeout: c.hookTimeout, onError: c.onError, policySettings: { groups: c.groups, pools: c.pools, outboundNetworks: c.outboundNetworks } };
}
