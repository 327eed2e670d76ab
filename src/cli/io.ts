/**
 * Where a command writes: the process's stdout and stderr, or what a test passes to capture them.
 * @module
 */

/** A command's output streams. */
export interface CommandIO {
  /** Standard output. */
  out(text: string): void;
  /** Standard error. */
  err(text: string): void;
}

/** The process's own streams. */
export const stdio: CommandIO = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};
