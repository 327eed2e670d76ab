/**
 * `themis config check` (validate without starting), `themis config resync` (make every daemon that
 * shares the store reload) and `themis status` (ask a running daemon what it serves).
 * @module
 */
import { parseArgs } from 'node:util';
import { DEFAULT_HTTP, fetchStatus } from './http.ts';
import { announceResync } from '../live/resync.ts';
import { stdio, type CommandIO } from './io.ts';
import { envConfigPath } from './env.ts';
import { commandStoreConfig } from './store-flags.ts';

export type { CommandIO } from './io.ts';

/** Usage text of `themis config`. */
export const CONFIG_USAGE = `Usage: themis config <check|resync> [options]

  themis config check [--config PATH] [--json]
      Loads and validates the configuration the way \`themis start\` does — every plugin loaded and set
      up, every policy field checked by the plugin that claims it — without listening or touching the
      store. Prints every problem, each with the file and the path inside it. Exit 0 valid, 1 invalid.

  themis config resync [--config PATH] [--redis-url URL] [--redis-password PW] [--json]
      Makes every daemon that shares the store (Redis) reload its configuration now: bumps the
      configuration version in the store and announces it. Daemons that miss the announcement catch
      up within reload.pollInterval. With the in-memory store, send SIGHUP instead
      (systemctl reload themis). Exit 0 sent, 1 error.
`;

/** Usage text of `themis status`. */
export const STATUS_USAGE = `Usage: themis status [--http SPEC] [--http-token TOKEN] [--config PATH] [--json]

Asks a running Themis what it serves: version, uptime, open connections, the configuration's hash,
load time and generation, the last refused reload, the store and, with --workers, every worker.
--http is the daemon's status endpoint (default: the configuration's http.listen, else ${DEFAULT_HTTP};
environment THEMIS_HTTP); --http-token its bearer token (THEMIS_HTTP_TOKEN, or http.token). Exit 0 when
the daemon answered, 1 when it did not.
`;

/** `themis config …`. */
export async function configCommand(args: string[], io: CommandIO = stdio): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    (sub === undefined ? io.err : io.out)(CONFIG_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub === 'check') return configCheck(rest, io);
  if (sub === 'resync') return configResync(rest, io);
  io.err(`themis config: unknown subcommand ${JSON.stringify(sub)}\n\n${CONFIG_USAGE}`);
  return 2;
}

function parse(args: string[], options: NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>, io: CommandIO, name: string, usage: string): Record<string, string | boolean | undefined> | number {
  try {
    const { values } = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true }) as { values: Record<string, string | boolean | undefined> };
    if (values.help) {
      io.out(usage);
      return 0;
    }
    return values as Record<string, string | boolean | undefined>;
  } catch (err) {
    io.err(`themis ${name}: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
}

async function configCheck(args: string[], io: CommandIO): Promise<number> {
  const values = parse(args, { config: { type: 'string' }, json: { type: 'boolean' } }, io, 'config check', CONFIG_USAGE);
  if (typeof values === 'number') return values;
  const { findConfig, loadConfig, kernelOptionsOf } = await import('../config.ts');
  const { Kernel } = await import('../kernel/index.ts');
  const file = findConfig((values.config as string | undefined) ?? envConfigPath());
  if (!file) {
    io.err('themis config check: no configuration file found (themis.config.{ts,mts,js,mjs,json,yaml,yml}, .themisrc*, package.json "themis"); give one with --config\n');
    return 1;
  }
  try {
    const config = await loadConfig(file);
    // A kernel is built exactly as the daemon builds it (in-memory store: checking touches nothing shared).
    const kernel = await Kernel.create(kernelOptionsOf(config));
    await kernel.shutdown();
    const summary = { valid: true, file, hash: config.hash, plugins: config.plugins.map((p) => p.plugin.name), policies: config.policies.length, store: config.store.type };
    if (values.json) io.out(`${JSON.stringify(summary, null, 2)}\n`);
    else io.out(`configuration ${file} is valid: hash ${config.hash}, ${summary.plugins.length} plugin(s)${summary.plugins.length ? ` (${summary.plugins.join(', ')})` : ''}, ${summary.policies} polic${summary.policies === 1 ? 'y' : 'ies'}, ${summary.store} store\n`);
    return 0;
  } catch (err) {
    const e = err as Error & { code?: string; details?: { problems?: { code: string; path?: string; message: string }[] } };
    const message = e.message.includes(file) ? e.message : `configuration ${file}: ${e.message}`;
    if (values.json) io.out(`${JSON.stringify({ valid: false, file, code: e.code, message, problems: e.details?.problems }, null, 2)}\n`);
    else io.err(`${e.code ? `${e.code}: ` : ''}${message}\n`);
    return 1;
  }
}

async function configResync(args: string[], io: CommandIO): Promise<number> {
  const values = parse(args, { config: { type: 'string' }, 'redis-url': { type: 'string' }, 'redis-password': { type: 'string' }, json: { type: 'boolean' } }, io, 'config resync', CONFIG_USAGE);
  if (typeof values === 'number') return values;
  const { findConfig, loadConfig } = await import('../config.ts');
  const { createStore } = await import('../store/index.ts');
  const file = findConfig((values.config as string | undefined) ?? envConfigPath());
  let storeConfig;
  try {
    const config = file ? await loadConfig(file) : undefined;
    storeConfig = commandStoreConfig(config?.store, { url: values['redis-url'] as string | undefined, password: values['redis-password'] as string | undefined });
  } catch (err) {
    io.err(`themis config resync: ${(err as { code?: string }).code ?? ''} ${(err as Error).message}\n`);
    return 1;
  }
  if (storeConfig.type === 'memory') {
    io.err('themis config resync: the configuration uses the in-memory store, which no other process shares; reload a daemon with SIGHUP instead (systemctl reload themis), or give --redis-url\n');
    return 1;
  }
  const store = createStore(storeConfig);
  try {
    const version = await announceResync(store);
    if (values.json) io.out(`${JSON.stringify({ resync: true, version })}\n`);
    else io.out(`resync ${version} published: every daemon sharing this store reloads its configuration\n`);
    return 0;
  } catch (err) {
    io.err(`themis config resync: the store did not answer: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await store.close();
  }
}

/**
 * The daemon's status endpoint and its token, as a command reaches them: `--http`/`THEMIS_HTTP` and
 * `--http-token`/`THEMIS_HTTP_TOKEN`, else the configuration's `http`, else the default. A number is
 * the exit code of a failure already reported.
 */
export async function statusEndpoint(values: Record<string, unknown>, io: CommandIO, command: string): Promise<{ spec: string; token: string | undefined } | number> {
  let spec = (values.http as string | undefined) ?? process.env.THEMIS_HTTP;
  let token = (values['http-token'] as string | undefined) ?? process.env.THEMIS_HTTP_TOKEN;
  if (!spec || token === undefined) {
    const { findConfig, loadConfig } = await import('../config.ts');
    const file = findConfig((values.config as string | undefined) ?? envConfigPath());
    const configured = file ? await loadConfig(file).then((c) => c, () => undefined) : undefined;
    if (!spec && configured?.http === false) {
      io.err(`themis ${command}: the configuration disables the status endpoint (http.listen: false)\n`);
      return 1;
    }
    spec ??= configured?.http || DEFAULT_HTTP;
    token ??= configured?.httpToken;
  }
  return { spec, token };
}

/** `themis status`. */
export async function statusCommand(args: string[], io: CommandIO = stdio): Promise<number> {
  const values = parse(args, { http: { type: 'string' }, 'http-token': { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean' } }, io, 'status', STATUS_USAGE);
  if (typeof values === 'number') return values;
  const endpoint = await statusEndpoint(values, io, 'status');
  if (typeof endpoint === 'number') return endpoint;
  const { spec, token } = endpoint;
  let status: Record<string, any>;
  try {
    status = (await fetchStatus(spec, '/status', 5_000, token)) as Record<string, any>;
  } catch (err) {
    io.err(`themis status: no answer from ${spec}: ${(err as Error).message}\n`);
    return 1;
  }
  if (values.json) {
    io.out(`${JSON.stringify(status, null, 2)}\n`);
    return 0;
  }
  const c = status.config;
  const lines = [
    `themis ${status.version} (node ${status.node}), pid ${status.pid}${status.mode === 'cluster' ? `, ${status.workers.length} workers` : ''}, up ${status.uptimeSeconds} s`,
    `listen      ${status.listen}`,
    `connections ${status.connections}`,
    c ? `config      ${c.file ?? '(none)'}` : 'config      (engine only)',
    c ? `hash        ${c.hash}${c.hashes ? ` (${c.hashes.join(', ')})` : ''}${c.loadedAt ? `, loaded ${c.loadedAt}, generation ${c.generation}` : ''}` : '',
    c?.plugins ? `plugins     ${c.plugins.join(', ') || '(none)'}; ${c.policies} policies` : '',
    c?.lastReloadError ? `last reload refused at ${c.lastReloadError.at}: ${c.lastReloadError.message}` : '',
    `store       ${status.store?.type} (${status.store?.status})`,
    ...(status.workers ?? []).map((w: Record<string, any>) => `worker ${w.worker}    pid ${w.pid}, ${w.connections} connections, hash ${w.config?.hash}, generation ${w.config?.generation}`),
  ].filter(Boolean);
  io.out(`${lines.join('\n')}\n`);
  return 0;
}
