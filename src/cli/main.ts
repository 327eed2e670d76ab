/**
 * The `themis` command line.
 * @module
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { DEFAULT_LISTEN, createMilterServer, isMilterError, type MilterLogger } from '../milter/index.ts';
import { acceptAllApplication } from './accept-all.ts';
import type { Kernel, KernelLogger } from '../kernel/index.ts';
import type { LoadedConfig } from '../config.ts';
import type { MilterApplication } from '../milter/index.ts';
import { check } from './check.ts';

const USAGE = `Usage: themis <command> [options]

Commands:
  start     run the milter daemon
  plugins   show, per stage, which plugins run in which order with which priority
  check     send a test transaction to a milter and print its answers (themis check --help)

Options for start:
  --config PATH        configuration file (default ./themis.config.ts, .js, .mjs or .json; environment THEMIS_CONFIG)
  --listen SPEC        socket to listen on: inet:PORT@HOST, inet6:PORT@[ADDR] or unix:/path
                       (default ${DEFAULT_LISTEN}; environment THEMIS_LISTEN)
  --log-level LEVEL    trace, debug, info, warn, error or fatal (default info; environment THEMIS_LOG_LEVEL)
  --max-connections N  most simultaneous MTA connections (default 10000)
  --drain-timeout MS   on SIGTERM, how long open connections may finish (default 10000)
  --engine-only        serve the bare milter engine with an accept-all application that taps every
                       stage (the benchmark's reference), instead of the kernel and its plugins

Other:
  themis --version     print the version
  themis --help        print this text
`;

/** Exit codes: 0 success, 1 runtime failure, 2 bad usage. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command === '--version' || command === '-v') {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  if (command === 'start') return start(rest);
  if (command === 'check') return check(rest);
  if (command === 'plugins') return plugins(rest);
  process.stderr.write(`themis: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
  return 2;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function start(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        listen: { type: 'string' },
        'log-level': { type: 'string' },
        'max-connections': { type: 'string' },
        'drain-timeout': { type: 'string' },
        config: { type: 'string' },
        'engine-only': { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`themis start: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const level = (values['log-level'] as string | undefined) ?? process.env.THEMIS_LOG_LEVEL ?? 'info';
  const logger: Logger = pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
  let config: LoadedConfig | undefined;
  let app: MilterApplication;
  let kernel: Kernel | undefined;
  if (values['engine-only']) app = acceptAllApplication();
  else {
    // Loaded only when needed: --engine-only (the benchmark's bare engine) carries none of it.
    const { Kernel, isThemisError } = await import('../kernel/index.ts');
    const { findConfig, loadConfig } = await import('../config.ts');
    try {
      const file = findConfig((values.config as string | undefined) ?? process.env.THEMIS_CONFIG);
      if (file) config = await loadConfig(file);
      else logger.warn({ looked: 'themis.config.{ts,js,mjs,json}' }, 'no configuration file found: running with no plugins (every message is accepted)');
      kernel = await Kernel.create({ plugins: config?.plugins ?? [], policies: config?.policies ?? [], policySettings: config?.policySettings, hookTimeout: config?.hookTimeout, onError: config?.onError, logger: logger as unknown as KernelLogger });
      await kernel.ready();
    } catch (err) {
      logger.fatal({ code: isThemisError(err) ? err.code : undefined, err }, (err as Error).message);
      return 1;
    }
    app = kernel.application;
  }
  const listen = (values.listen as string | undefined) ?? process.env.THEMIS_LISTEN ?? config?.listen ?? DEFAULT_LISTEN;
  const maxConnections = intOption(values['max-connections'], 'max-connections', 10_000);
  const drainTimeout = intOption(values['drain-timeout'], 'drain-timeout', 10_000);
  if (maxConnections === undefined || drainTimeout === undefined) return 2;

  // One bad connection, handler or promise must never take the daemon down: log it, keep serving.
  process.on('unhandledRejection', (reason) => logger.error({ code: 'THEMIS_ERR_UNHANDLED_REJECTION', err: reason }, 'unhandled promise rejection'));
  process.on('uncaughtException', (err) => logger.error({ code: 'THEMIS_ERR_UNCAUGHT_EXCEPTION', err }, 'uncaught exception'));

  const server = createMilterServer(app, { logger: logger as unknown as MilterLogger, maxConnections });
  try {
    await server.listen(listen);
  } catch (err) {
    const code = isMilterError(err) ? err.code : (err as NodeJS.ErrnoException).code;
    logger.fatal({ code, err }, `cannot listen on ${listen}: ${(err as Error).message}`);
    return 1;
  }
  const mode = kernel ? { config: config?.file ?? null, plugins: (config?.plugins ?? []).map((p) => p.plugin.name), policies: (config?.policies ?? []).length } : { engineOnly: true };
  logger.info({ listen: server.address, version: version(), node: process.version, ...mode }, kernel ? 'themis started' : 'themis started (engine only, accept-all application)');

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal, open: server.connectionCount }, 'stopping: draining connections');
      server.close({ drainTimeout }).then(
        async () => {
          await kernel?.shutdown();
          logger.info('themis stopped');
          resolve(0);
        },
        (err: unknown) => {
          logger.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

function intOption(value: string | boolean | undefined, name: string, fallback: number): number | undefined {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !/^\d+$/.test(value)) {
    process.stderr.write(`themis start: --${name} expects a whole number, got ${JSON.stringify(value)}\n`);
    return undefined;
  }
  return Number(value);
}

async function plugins(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, json: { type: 'boolean' } }, strict: true }));
  } catch (err) {
    process.stderr.write(`themis plugins: ${(err as Error).message}\n`);
    return 2;
  }
  const { Kernel, isThemisError } = await import('../kernel/index.ts');
  const { findConfig, loadConfig } = await import('../config.ts');
  try {
    const file = findConfig((values.config as string | undefined) ?? process.env.THEMIS_CONFIG);
    const config = file ? await loadConfig(file) : undefined;
    const kernel = await Kernel.create({ plugins: config?.plugins ?? [], policies: config?.policies ?? [], policySettings: config?.policySettings });
    const table = kernel.describe();
    await kernel.shutdown();
    if (values.json) process.stdout.write(`${JSON.stringify({ config: file ?? null, stages: table }, null, 2)}\n`);
    else {
      process.stdout.write(`configuration: ${file ?? '(none)'}\n`);
      if (table.length === 0) process.stdout.write('no plugin taps any stage: every message is accepted\n');
      for (const row of table) process.stdout.write(`${row.stage.padEnd(14)} ${row.plugins.map((p) => `${p.name} (${p.priority})`).join(' → ')}\n`);
    }
    return 0;
  } catch (err) {
    process.stderr.write(`themis plugins: ${isThemisError(err) ? `${err.code}: ` : ''}${(err as Error).message}\n`);
    return 1;
  }
}
