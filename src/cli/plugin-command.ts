/**
 * Commands that plugins add to the command line (`themis limits …` from the ratelimit plugin): the
 * configuration is loaded, the plugin offering the command is found, and the command runs with the
 * configured store and the policies that carry the plugin's field.
 * @module
 */
import { envConfigPath } from './env.ts';
import { commandStoreConfig } from './store-flags.ts';
import { stdio, type CommandIO } from './io.ts';
import type { PolicyInput } from '../kernel/kernel.ts';
import type { PolicySettings } from '../kernel/policy.ts';
import { DEFAULT_HTTP, fetchStatus } from './http.ts';

/** Global flags every plugin command accepts (taken out before the plugin sees its arguments). */
const GLOBAL_FLAGS = new Set(['--config', '--redis-url', '--redis-password', '--http', '--http-token']);

/**
 * The commands the configured plugins add, one line each (`  limits  (ratelimit) summary`), for
 * `themis --help`; [] without a configuration or when it cannot be loaded (help must always print).
 */
export async function pluginCommandLines(configPath: string | undefined): Promise<string[]> {
  try {
    const { findConfig, loadConfig } = await import('../config.ts');
    const file = findConfig(configPath);
    if (!file) return [];
    const config = await loadConfig(file);
    const lines: string[] = [];
    for (const { plugin } of config.plugins) {
      for (const [name, command] of Object.entries(plugin.commands ?? {})) lines.push(`  ${name.padEnd(13)}  ${command.summary} (${plugin.name})`);
    }
    return lines;
  } catch {
    return [];
  }
}

/**
 * Runs `themis <name> …` when a loaded plugin offers the command; resolves with undefined when none
 * does (the caller then reports an unknown command).
 */
export async function runPluginCommand(name: string, argv: string[], io: CommandIO = stdio): Promise<number | undefined> {
  const flags: Record<string, string> = {};
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (!GLOBAL_FLAGS.has(flag)) {
      args.push(a);
      continue;
    }
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) {
      io.err(`themis ${name}: ${flag} needs a value\n`);
      return 2;
    }
    flags[flag.slice(2)] = value;
  }
  const { findConfig, loadConfig, zodProblems, configError } = await import('../config.ts');
  const file = findConfig(flags.config ?? envConfigPath());
  if (!file) return undefined;
  let config;
  try {
    config = await loadConfig(file);
  } catch (err) {
    io.err(`themis ${name}: ${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}\n`);
    return 1;
  }
  const entry = config.plugins.find((p) => p.plugin.commands?.[name]);
  if (!entry) return undefined;
  const plugin = entry.plugin;
  const { PolicyMatcher } = await import('../kernel/index.ts');
  const { createStore } = await import('../store/index.ts');
  const storeConfig = commandStoreConfig(config.store, { url: flags['redis-url'], password: flags['redis-password'] });
  const store = createStore(storeConfig);
  // The policies as the daemons apply them: the file's, with the live ones of a shared store merged in.
  let all: { policies: readonly PolicyInput[]; settings: PolicySettings } = { policies: config.policies, settings: config.policySettings };
  if (storeConfig.type !== 'memory') {
    const { readLive, mergeLive } = await import('../live/index.ts');
    try {
      const merged = mergeLive(config, await readLive(store));
      all = { policies: merged.policies, settings: merged.policySettings };
    } catch (err) {
      io.err(`themis ${name}: the store did not answer (${(err as Error).message}); using the file's policies only\n`);
    }
  }
  let options: unknown = entry.options;
  const policies: { name: string; config: unknown }[] = [];
  try {
    if (plugin.options) {
      const r = plugin.options.safeParse(entry.options ?? {});
      if (!r.success) throw configError(file, zodProblems(r.error, ['plugins', config.plugins.indexOf(entry), 'options']));
      options = r.data;
    }
    const field = plugin.claims?.field;
    // Evaluation order, as the daemon applies them.
    const order = new PolicyMatcher(all.policies, all.settings).all.map((p) => p.name);
    for (const policyName of order) {
      const policy = all.policies.find((p) => p.name === policyName)!;
      if (!field || policy[field] === undefined) continue;
      const r = plugin.claims!.schema.safeParse(policy[field]);
      if (!r.success) throw configError(file, zodProblems(r.error, ['policies', all.policies.indexOf(policy), field]));
      policies.push({ name: policy.name, config: r.data });
    }
  } catch (err) {
    io.err(`themis ${name}: ${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}\n`);
    await store.close();
    return 1;
  }
  // The daemon's status endpoint, found as `themis status` finds it.
  const spec = flags.http ?? process.env.THEMIS_HTTP ?? (config.http === false ? undefined : (config.http ?? DEFAULT_HTTP));
  const token = flags['http-token'] ?? process.env.THEMIS_HTTP_TOKEN ?? config.httpToken;
  const readStatus = (path: string) => {
    if (spec === undefined) return Promise.reject(new Error('the configuration disables the status endpoint (http.listen: false); give --http'));
    return fetchStatus(spec, path, 5_000, token);
  };
  try {
    return await plugin.commands![name].run(args, { store, storeType: storeConfig.type, policies, options, configFile: file, readStatus, out: io.out, err: io.err });
  } catch (err) {
    io.err(`themis ${name}: ${(err as { code?: string }).code ? `${(err as { code?: string }).code}: ` : ''}${(err as Error).message}\n`);
    return 1;
  } finally {
    await store.close();
  }
}
