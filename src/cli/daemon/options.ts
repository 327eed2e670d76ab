/**
 * The command line of `themis start`: its usage text, and its flags and environment variables
 * turned into {@link StartOptions}.
 * @module
 */
import { parseArgs } from 'node:util';
import { DEFAULT_LISTEN } from '../../milter/index.ts';
import { DEFAULT_HTTP } from '../http.ts';
import { envConfigPath, envRedisPassword, envRedisUrl } from '../env.ts';

/** Usage text of `themis start`. */
export const START_USAGE = `Usage: themis start [options]

Runs the milter daemon in the foreground.

Options:
  --config PATH          configuration file (default: themis.config.{ts,mts,js,mjs,json,yaml,yml},
                         .themisrc* or package.json "themis" in the working directory; env THEMIS_CONFIG)
  --listen SPEC          milter socket: inet:PORT@HOST, inet6:PORT@[ADDR] or unix:/path
                         (default ${DEFAULT_LISTEN}; env THEMIS_LISTEN; else the configuration's listen)
  --http SPEC|off        status endpoint (/status, /metrics, /healthz, plugin pages) (default ${DEFAULT_HTTP}; env THEMIS_HTTP)
  --http-token TOKEN     bearer token the status endpoint requires (env THEMIS_HTTP_TOKEN; config http.token)
  --redis-url URL        use Redis as the store (env THEMIS_REDIS_URL; overrides the configuration's store url)
  --redis-password PW    Redis password (env THEMIS_REDIS_PASSWORD)
  --workers N            N processes on one listening socket (needs a shared store; env THEMIS_WORKERS)
  --log-level LEVEL      trace, debug, info, warn, error or fatal (default info; env THEMIS_LOG_LEVEL)
  --max-connections N    most simultaneous MTA connections per process (default 10000)
  --drain-timeout MS     on SIGTERM, how long open connections may finish (default 10000)
  --engine-only          serve the bare milter engine with an accept-all application (the benchmark's reference)
  -h, --help             print this text

Memory: node runs with --max-semi-space-size=16 --max-old-space-size=1024 (the same process, restarted
with them) unless NODE_OPTIONS sets them; THEMIS_NODE_HEAP=v8 keeps V8's own sizing.
Signals: SIGHUP reloads the configuration; SIGTERM/SIGINT stop gracefully (a second one exits at once).
Exit codes: 0 after a clean stop, 1 when it cannot start, 2 for bad usage.
`;

/** The settings `themis start` was given, flags over environment (the configuration comes later). */
export interface StartOptions {
  /** Configuration file, if named. */
  config: string | undefined;
  /** Milter socket spec, if given. */
  listen: string | undefined;
  /** Status endpoint spec; false: off. */
  http: string | false | undefined;
  /** Bearer token of the status endpoint. */
  httpToken: string | undefined;
  /** Redis URL overriding the configuration's store. */
  redisUrl: string | undefined;
  /** Redis password. */
  redisPassword: string | undefined;
  /** Number of worker processes, if given. */
  workers: number | undefined;
  /** Log level, if given. */
  logLevel: string | undefined;
  /** Most simultaneous MTA connections per process. */
  maxConnections: number;
  /** How long open connections may finish on SIGTERM, in ms. */
  drainTimeout: number;
  /** Serve the bare engine with an accept-all application. */
  engineOnly: boolean;
}

/**
 * Parses the arguments of `themis start`. A number is the exit code when there is nothing to start:
 * 0 after `--help`, 2 after a usage error (both already printed).
 */
export function parseStartArgs(args: string[]): StartOptions | number {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: 'string' },
        listen: { type: 'string' },
        http: { type: 'string' },
        'http-token': { type: 'string' },
        'redis-url': { type: 'string' },
        'redis-password': { type: 'string' },
        workers: { type: 'string' },
        'log-level': { type: 'string' },
        'max-connections': { type: 'string' },
        'drain-timeout': { type: 'string' },
        'engine-only': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`themis start: ${(err as Error).message}\n\n${START_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(START_USAGE);
    return 0;
  }
  const env = process.env;
  const int = (value: string | undefined, name: string, fallback: number | undefined, min: number): number | undefined | null => {
    if (value === undefined || value === '') return fallback;
    if (!/^\d+$/.test(value) || Number(value) < min) {
      process.stderr.write(`themis start: --${name} expects a whole number ≥ ${min}, got ${JSON.stringify(value)}\n`);
      return null;
    }
    return Number(value);
  };
  const maxConnections = int(values['max-connections'] as string | undefined, 'max-connections', 10_000, 0);
  const drainTimeout = int(values['drain-timeout'] as string | undefined, 'drain-timeout', 10_000, 0);
  const workers = int((values.workers as string | undefined) ?? env.THEMIS_WORKERS, 'workers', undefined, 1);
  if (maxConnections === null || drainTimeout === null || workers === null) return 2;
  const http = (values.http as string | undefined) ?? env.THEMIS_HTTP;
  return {
    config: (values.config as string | undefined) ?? envConfigPath(),
    listen: (values.listen as string | undefined) ?? env.THEMIS_LISTEN,
    http: http === 'off' || http === 'false' ? false : http,
    httpToken: (values['http-token'] as string | undefined) ?? env.THEMIS_HTTP_TOKEN,
    redisUrl: (values['redis-url'] as string | undefined) ?? envRedisUrl(),
    redisPassword: (values['redis-password'] as string | undefined) ?? envRedisPassword(),
    workers,
    logLevel: (values['log-level'] as string | undefined) ?? env.THEMIS_LOG_LEVEL,
    maxConnections: maxConnections!,
    drainTimeout: drainTimeout!,
    engineOnly: values['engine-only'] === true,
  };
}
