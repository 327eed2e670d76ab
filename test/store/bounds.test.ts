// The memory store's bounds (issue 21): at most `maxKeys` keys whatever the traffic (the least
// recently written key with an expiry goes first; keys without one are never evicted), and every key
// with an expiry gone after it passes — dropped when read, and by the sweep when nobody reads it
// again — so the key count returns to its base. Time is the test's clock (the store follows Date).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, defineAtomicOperation, isStoreError } from '../../src/store/index.ts';
import { useTestClock } from '../../src/testing/clock.ts';

/** A hash counter with an expiry renewed on every call: an atomic operation's key, as plugins write them. */
const TOUCH = defineAtomicOperation({
  name: 'TEST.TOUCH',
  type: 'hash',
  lua: "redis.call('HINCRBY', KEYS[1], 'n', 1) redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1",
  validate(a: { ttlMs: number }) {
    if (!(a.ttlMs > 0)) throw new Error('ttlMs');
  },
  encode: (a) => [a.ttlMs],
  decode: () => 1,
  memory(key, a) {
    key.fields.set('n', String(Number(key.fields.get('n') ?? 0) + 1));
    key.pexpire(a.ttlMs);
    return 1;
  },
});

describe('MemoryStore bounds', () => {
  it('1,000,000 distinct keys never take it past maxKeys; the most recently written stay', async () => {
    const store = new MemoryStore({ maxKeys: 10_000 });
    const N = 1_000_000;
    let most = 0;
    for (let i = 0; i < N; i += 10_000) {
      // The memory store writes synchronously, within the call: a batch is awaited at once (an await
      // per call costs more than the write under the test runner).
      const writes: Promise<void>[] = [];
      for (let j = i; j < i + 10_000; j++) {
        writes.push(store.set(`k:${j}`, '1', 3_600_000));
        if (store.size > most) most = store.size;
      }
      await Promise.all(writes);
    }
    assert.equal(most, 10_000);
    assert.equal(store.size, 10_000);
    assert.equal(store.evictions, N - 10_000);
    assert.equal(await store.get(`k:${N - 1}`), '1', 'the newest key stays');
    assert.equal(await store.get(`k:${N - 10_000}`), '1', 'the oldest of the last maxKeys stays');
    assert.equal(await store.get(`k:${N - 10_001}`), undefined, 'the one before went');
    await store.close();
  });

  it('every kind of write counts against maxKeys (strings, counters, rankings, hashes of atomic operations)', async () => {
    const store = new MemoryStore({ maxKeys: 100 });
    for (let i = 0; i < 10_000; i++) {
      await store.increment(`i:${i}`, 1, 60_000);
      await store.counterAdd(`c:${i}`, { n: 1 }, 60_000);
      await store.rankAdd(`r:${i}`, { m: 1 }, { keep: 5, ttlMs: 60_000 });
      await store.setIfAbsent(`s:${i}`, '1', 60_000);
      await store.atomic(TOUCH, [{ key: `a:${i}`, args: { ttlMs: 60_000 } }]);
      assert.ok(store.size <= 100, `size ${store.size} after ${i}`);
    }
    assert.equal(store.evictions, 5 * 10_000 - 100);
    await store.close();
  });

  it('evicts the least recently written: a key written again outlives older ones', async () => {
    const store = new MemoryStore({ maxKeys: 3 });
    await store.set('a', '1', 60_000);
    await store.set('b', '1', 60_000);
    await store.set('c', '1', 60_000);
    await store.increment('a', 1); // written again (keeps its expiry): now the most recent
    await store.set('d', '1', 60_000); // b goes
    assert.equal(await store.get('b'), undefined);
    assert.equal(await store.get('a'), '2');
    await store.set('e', '1', 60_000); // c goes
    assert.equal(await store.get('c'), undefined);
    assert.deepEqual([await store.get('a'), await store.get('d'), await store.get('e')], ['2', '1', '1']);
    await store.close();
  });

  it('keys without an expiry are never evicted (they may take it past maxKeys); keys with one make room', async () => {
    const store = new MemoryStore({ maxKeys: 10 });
    for (let i = 0; i < 12; i++) await store.set(`live:${i}`, 'policy');
    assert.equal(store.size, 12, 'administrators’ keys all stay');
    await store.set('t:1', '1', 60_000);
    await store.set('t:2', '1', 60_000);
    assert.equal(store.size, 13, 'one key with an expiry at a time: each new one evicts the previous');
    assert.equal(await store.get('t:1'), undefined);
    for (let i = 0; i < 12; i++) assert.equal(await store.get(`live:${i}`), 'policy');
    // A key that loses its expiry is no longer a candidate, one that gains one becomes it.
    await store.set('t:2', '2');
    await store.set('live:0', 'x', 60_000);
    await store.set('t:3', '1', 60_000);
    assert.equal(await store.get('live:0'), undefined);
    assert.equal(await store.get('t:2'), '2');
    await store.close();
  });

  it('a key that expired is dropped to make room without counting as an eviction', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const store = new MemoryStore({ maxKeys: 2, sweepIntervalMs: 3_600_000 });
    await store.set('a', '1', 1_000);
    await store.set('b', '1', 1_000);
    await clock.advance(2_000);
    await store.set('c', '1', 1_000);
    await store.set('d', '1', 1_000);
    assert.equal(store.size, 2);
    assert.equal(store.evictions, 0);
    await store.close();
  });

  it('every key with an expiry is gone after it, unread: the sweep brings the count back to its base', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const store = new MemoryStore({ sweepIntervalMs: 1_000 });
    await store.set('base:config', '{}');
    await store.increment('base:seq', 1);
    const base = store.size;
    for (let i = 0; i < 2_000; i++) {
      await store.set(`s:${i}`, '1', 30_000);
      await store.increment(`i:${i}`, 1, 30_000);
      await store.counterAdd(`c:${i}`, { n: 1 }, 30_000);
      await store.rankAdd(`r:${i}`, { m: 1 }, { keep: 5, ttlMs: 30_000 });
      await store.setIfAbsent(`n:${i}`, '1', 30_000);
      await store.atomic(TOUCH, [{ key: `a:${i}`, args: { ttlMs: 30_000 } }]);
    }
    assert.equal(store.size, base + 6 * 2_000);
    await clock.advance(29_000);
    assert.equal(store.size, base + 6 * 2_000, 'nothing expires early');
    await clock.advance(2_000);
    assert.equal(store.size, base, 'swept without being read');
    assert.equal(await store.get('base:config'), '{}');
    await store.close();
  });

  it('settings are checked', () => {
    for (const maxKeys of [0, -1, 1.5, Number.NaN]) assert.throws(() => new MemoryStore({ maxKeys }), (e: unknown) => isStoreError(e, 'THEMIS_ERR_STORE_ARGUMENT') && /maxKeys/.test((e as Error).message), String(maxKeys));
    for (const sweepIntervalMs of [0, -5, Number.NaN]) assert.throws(() => new MemoryStore({ sweepIntervalMs }), (e: unknown) => isStoreError(e, 'THEMIS_ERR_STORE_ARGUMENT') && /sweepIntervalMs/.test((e as Error).message), String(sweepIntervalMs));
    const unbounded = new MemoryStore({ maxKeys: Infinity });
    void unbounded.close();
  });

  it('defaults: 500,000 keys, a sweep a minute', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const store = new MemoryStore();
    assert.equal(store.maxKeys, 500_000);
    await store.set('x', '1', 10);
    await clock.advance(59_000);
    assert.equal(store.size, 1);
    await clock.advance(1_000);
    assert.equal(store.size, 0);
    await store.close();
  });
});
