/**
 * The daemon's logger: pino JSON lines, or pino-pretty's readable lines when stdout is a terminal
 * (an administrator trying Themis by hand) unless `log.pretty` says otherwise.
 * @module
 */
import { pino, type Logger } from 'pino';

/** Settings of {@link createLogger}. */
export interface LoggerSettings {
  /** pino level. */
  level: string;
  /** Human-readable lines; default: when stdout is a terminal. */
  pretty?: boolean;
  /** Fields on every line. */
  base?: Record<string, unknown>;
}

/** Creates the daemon's logger. */
export async function createLogger(settings: LoggerSettings): Promise<Logger> {
  const options = { level: settings.level, base: { pid: process.pid, ...settings.base }, timestamp: pino.stdTimeFunctions.isoTime };
  if (settings.pretty ?? process.stdout.isTTY === true) {
    // Loaded only for terminals: production (systemd, pipes) writes JSON and never pays for it.
    const { default: pretty } = await import('pino-pretty');
    return pino(options, pretty({ colorize: process.stdout.isTTY === true, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }));
  }
  return pino(options);
}
