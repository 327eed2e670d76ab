/**
 * Process-wide safety of a daemon process: stray errors are logged instead of fatal, and a start
 * that cannot go on is reported once, with its code and file.
 * @module
 */
import type { Logger } from 'pino';

/** One bad connection, handler or promise must never take the daemon down: log it, keep serving. */
export function guardProcess(logger: Logger): void {
  process.on('unhandledRejection', (reason) => logger.error({ code: 'THEMIS_ERR_UNHANDLED_REJECTION', err: reason }, 'unhandled promise rejection'));
  process.on('uncaughtException', (err) => logger.error({ code: 'THEMIS_ERR_UNCAUGHT_EXCEPTION', err }, 'uncaught exception'));
}

/** Logs why the daemon cannot start (naming the file unless the message does) and returns exit code 1. */
export function fatal(logger: Logger, err: unknown, file: string | undefined): number {
  const e = err as Error & { code?: string };
  const inFile = file && !e.message.includes(file) ? `configuration ${file}: ` : '';
  logger.fatal({ code: e.code, file }, `${inFile}${e.message}`);
  return 1;
}
