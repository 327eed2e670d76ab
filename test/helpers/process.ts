/**
 * Small process helpers shared by the throwaway MTAs of the tests (Postfix, Sendmail): polling, free
 * loopback ports, and a last-chance cleanup when the test process exits or is interrupted.
 */
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `cond` every `stepMs` until it holds (true) or `timeoutMs` passed (false). */
export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= end) return false;
    await sleep(stepMs);
  }
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const exitCleanups = new Set<() => void>();

/**
 * Runs `cleanup` when the process exits or gets SIGINT/SIGTERM (then re-raises the signal), so that a
 * failing or interrupted test never leaves an MTA running. Installing the same function twice is harmless.
 */
export function onProcessExit(cleanup: () => void): void {
  if (exitCleanups.size === 0) {
    const runAll = (): void => {
      for (const fn of exitCleanups) fn();
    };
    process.on('exit', runAll);
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      const handler = (): void => {
        runAll();
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      };
      process.on(sig, handler);
    }
  }
  exitCleanups.add(cleanup);
}
