// The ratelimit plugin's bounds (issue 21). It keeps nothing per subject in the process: its
// counters are store keys, one hash per policy and subject, each expiring with its longest window
// (or its penalty block) — in the embedded store, process memory, capped there by `maxKeys`. So:
// 1,000,000 distinct senders never take the memory store past its cap, and every key the plugin
// writes is gone once its windows and blocks have passed (an administrator's flag excepted, until
// lifted). The million goes to the store operation directly; a smaller run goes through the kernel.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, RedisStore, type Store } from 'themis-milter';
import { createTestKernel, eventually, redisAvailable, startRedis, useTestClock } from 'themis-milter/testing';
import ratelimit, { parseSubject, rateAdmin, rateInspect, rateLimit, subjectKey, type RateRequest } from '../src/index.ts';

const MINUTE = 60_000;

describe('ratelimit bounds', () => {
  it('1,000,000 distinct senders stay within the memory store’s maxKeys, and are gone after the window', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const cap = 20_000;
    const store = new MemoryStore({ maxKeys: cap, sweepIntervalMs: MINUTE });
    const windows = [{ windowMs: MINUTE, slots: 12, limit: 10 }];
    // The plugin's key is `rl:<policy>:<subject>:<26 characters of the value's hash>`: the hash is
    // left out here for speed (same shape, same count).
    const prefix = subjectKey('p', parseSubject('sender'), 'x').slice(0, -26);
    let most = 0;
    const batch = 1_000;
    for (let i = 0; i < 1_000_000; i += batch) {
      const requests: RateRequest[] = [];
      for (let j = i; j < i + batch; j++) requests.push({ key: `${prefix}${String(j).padStart(26, '0')}`, cost: 1, windows });
      const results = await rateLimit(store, requests);
      assert.equal(results[batch - 1].outcome, 'allowed');
      most = Math.max(most, store.size);
    }
    assert.equal(most, cap);
    assert.equal(store.evictions, 1_000_000 - cap);
    const newest = await rateInspect(store, `${prefix}${String(999_999).padStart(26, '0')}`, windows);
    assert.equal(newest.windows[0].used, 1, 'the most recent senders keep their counters');
    // A 1-minute window in 12 slots lives 13 slots of 5 s; the sweep comes within a minute.
    await clock.advance(65_000 + MINUTE);
    assert.equal(store.size, 0);
    await store.close();
  });

  it('through the kernel: every counter and penalty block expires; an administrator’s block lasts until lifted', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const store = new MemoryStore({ sweepIntervalMs: MINUTE });
    await store.set('other:plugin', 'kept');
    const base = store.size;
    const k = await createTestKernel({
      store,
      plugins: [ratelimit],
      policies: [
        { name: 'senders', ratelimit: { windows: '2/1m,100/1h', by: 'sender' } },
        { name: 'networks', ratelimit: { windows: '50/10m', by: 'clientIp/24', jail: '30m' } },
        { name: 'recipients', ratelimit: { windows: '20/5m', by: 'recipient' } },
      ],
    });
    for (let i = 0; i < 120; i++) await k.message({ from: `s${i % 60}@example.org`, rcpt: [`r${i % 7}@example.net`], client: { address: `192.0.2.${(i % 250) + 1}` } });
    const spec = parseSubject('clientIp/24');
    const network = subjectKey('networks', spec, '192.0.2.0/24');
    assert.ok((await rateInspect(store, network, [{ windowMs: 10 * MINUTE, slots: 12, limit: 50 }])).jailedForMs > 0, 'the network went over and is in its penalty block');
    const admin = subjectKey('senders', parseSubject('sender'), 'blocked@example.org');
    await rateAdmin(store, admin, { block: true, label: 'senders sender blocked@example.org' });
    assert.ok(store.size > base + 60, `${store.size} keys`);

    // The hourly window of the senders policy lives 13 × 5 min; the penalty block 30 min; the others less.
    await clock.advance(64 * MINUTE);
    assert.ok(store.size > base + 1, 'the hourly counters are still there');
    await clock.advance(2 * MINUTE + MINUTE);
    assert.equal(store.size, base + 1, 'only the administrator’s block is left');
    await rateAdmin(store, admin, { block: false });
    await clock.advance(24 * 60 * MINUTE + MINUTE);
    assert.equal(store.size, base, 'lifted, it expires like any other subject (after a day)');
    assert.equal(await store.get('other:plugin'), 'kept');
    await k.close();
  });

  it('on Redis, with short windows: every key the plugin wrote expires, back to the base count', { skip: redisAvailable() ? false : 'redis-server not installed' }, async (t) => {
    const redis = await startRedis();
    const store = new RedisStore({ url: redis.url });
    t.after(async () => {
      await store.close();
      await redis.stop();
    });
    const count = async (s: Store) => {
      let n = 0;
      for await (const _ of s.scanKeys('')) n++;
      return n;
    };
    await store.set('other:plugin', 'kept');
    const base = await count(store);
    const k = await createTestKernel({
      store,
      plugins: [ratelimit],
      policies: [
        { name: 'senders', ratelimit: { windows: '2/1s,5/2s', by: 'sender', jail: '1s' } },
        { name: 'recipients', ratelimit: { windows: '50/1s', by: 'recipient' } },
      ],
    });
    for (let i = 0; i < 60; i++) await k.message({ from: `s${i % 20}@example.org`, rcpt: [`r${i % 7}@example.net`], client: { address: '192.0.2.7' } });
    assert.ok((await count(store)) >= base + 20 + 7, 'a key per sender and per recipient');
    // The 2 s window lives 13 slots of 167 ms; the penalty block 1 s.
    await eventually(async () => (await count(store)) === base, 5_000, 'every key expired');
    await k.close();
  });
});
