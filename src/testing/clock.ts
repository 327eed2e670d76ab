/**
 * Time under the test's control: a clock on `node:test`'s mock timers, so that what a plugin does
 * with time — the memory store's expiries, a rate limit's windows, a greylisting delay, the kernel's
 * hook deadlines, `Date.now()` anywhere in the plugin — moves only when the test says so.
 * @module
 */
import type { MockTimers } from 'node:test';

/** The clock a test drives. */
export interface TestClock {
  /** The simulated time, ms since the epoch (what `Date.now()` returns while the clock is in use). */
  now(): number;
  /**
   * Moves time forward by `ms`: `Date` moves, and every timer due by then fires, in order (hook
   * deadlines, intervals); then pending callbacks run before it resolves.
   */
  advance(ms: number): Promise<void>;
}

/**
 * Puts `Date`, `setTimeout` and `setInterval` of this process under `timers` (a test's
 * `t.mock.timers`, restored when the test ends) from `start` (default 2026-01-01T00:00:00Z), and
 * returns the clock. Use it before `createTestKernel`, so the kernel and the memory store are built
 * on simulated time. The Redis store keeps Redis' own clock: drive time with the memory store.
 */
export function useTestClock(timers: MockTimers, start = Date.UTC(2026, 0, 1)): TestClock {
  timers.enable({ apis: ['Date', 'setTimeout', 'setInterval'], now: start });
  return {
    now: () => Date.now(),
    async advance(ms: number) {
      timers.tick(ms);
      // Let what the timers started (a rejected deadline, an interval's work) run before returning.
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}
