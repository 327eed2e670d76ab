/**
 * The `themis` command line.
 * @module
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { DEFAULT_LISTEN, createMilterServer, isMilterError, type MilterLogger } from '../milter/index.ts';
import { acceptAllApplication } from './accept-all.ts';
import { check } from './check.ts';

const USAGE = `Usage: themis <command> [options]

Commands:
  start     run the milter daemon
  check     send a test transaction to a milter and print its answers (themis check --help)

Options for start:
  --listen SPEC        socket to listen on: inet:PORT@HOST, inet6:PORT@[ADDR] or unix:/path
                       (default ${DEFAULT_LISTEN}; environment THEMIS_LISTEN)
  --log-level LEVEL    trace, debug, info, warn, error or fatal (default info; environment THEMIS_LOG_LEVEL)
  --max-connections N  most simultaneous MTA connections (default 10000)
  --drain-timeout MS   on SIGTERM, how long open connections may finish (default 10000)

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
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`themis start: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const level = (values['log-level'] as string | undefined) ?? process.env.THEMIS_LOG_LEVEL ?? 'info';
  const logger: Logger = pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
  const listen = (values.listen as string | undefined) ?? process.env.THEMIS_LISTEN ?? DEFAULT_LISTEN;
  const maxConnections = intOption(values['max-connections'], 'max-connections', 10_000);
  const drainTimeout = intOption(values['drain-timeout'], 'drain-timeout', 10_000);
  if (maxConnections === undefined || drainTimeout === undefined) return 2;

  // One bad connection, handler or promise must never take the daemon down: log it, keep serving.
  process.on('unhandledRejection', (reason) => logger.error({ code: 'THEMIS_ERR_UNHANDLED_REJECTION', err: reason }, 'unhandled promise rejection'));
  process.on('uncaughtException', (err) => logger.error({ code: 'THEMIS_ERR_UNCAUGHT_EXCEPTION', err }, 'uncaught exception'));

  const server = createMilterServer(acceptAllApplication(), { logger: logger as unknown as MilterLogger, maxConnections });
  try {
    await server.listen(listen);
  } catch (err) {
    const code = isMilterError(err) ? err.code : (err as NodeJS.ErrnoException).code;
    logger.fatal({ code, err }, `cannot listen on ${listen}: ${(err as Error).message}`);
    return 1;
  }
  logger.info({ listen: server.address, version: version(), node: process.version }, 'themis started (accept-all application)');

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal, open: server.connectionCount }, 'stopping: draining connections');
      server.close({ drainTimeout }).then(
        () => {
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
