/**
 * The logger the engine writes to: the subset of pino's API it uses, so a pino logger fits as is.
 * @module
 */

/** A structured log method: an object of fields, then a message. */
export type LogMethod = (fields: object, message?: string) => void;

/** The pino-compatible logger the milter engine logs to. */
export interface MilterLogger {
  /** Per-packet detail; off in production. */
  debug: LogMethod;
  /** Lifecycle: listening, closing. */
  info: LogMethod;
  /** A connection had a problem (timeout, protocol error); the process goes on. */
  warn: LogMethod;
  /** A handler or the engine failed. */
  error: LogMethod;
  /** A logger that adds `bindings` to every line. */
  child(bindings: object): MilterLogger;
}

const noop: LogMethod = () => {};

/** A logger that discards everything (the default when none is given). */
export const silentLogger: MilterLogger = { debug: noop, info: noop, warn: noop, error: noop, child: () => silentLogger };
