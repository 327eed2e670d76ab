// Shared by the predict tests that drive the kernel: a store that counts the plugin's store calls, and a
// plugin that keeps the predict note of every decision.
import { MemoryStore } from 'themis-milter';
import type { PredictNote } from '../src/index.ts';

/** A memory store on a test clock that counts its atomic calls: each is one store round trip of the plugin. */
export function countingStore(): { store: MemoryStore; calls: () => number } {
  const store = new MemoryStore({ testClock: true });
  let calls = 0;
  const atomic = store.atomic.bind(store);
  (store as { atomic: typeof store.atomic }).atomic = ((op: never, requests: never) => {
    calls++;
    return atomic(op, requests);
  }) as typeof store.atomic;
  return { store, calls: () => calls };
}

/** A plugin entry (give it to `createTestKernel` `as never`: it is untyped) that pushes the predict note of every decision (undefined when there was none) onto `notes`. */
export function noteObserver(notes: (PredictNote | undefined)[]) {
  return { plugin: { name: 'observer', version: '1', kernel: '^1', setup: () => ({ decision: (ctx: { message?: { notes: { of: (p: string) => unknown } } }) => void notes.push(ctx.message?.notes.of('predict') as PredictNote | undefined) }) } };
}
