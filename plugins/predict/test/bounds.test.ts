// The predict plugin's bounds (issue 21). It keeps nothing per subject in the process: a profile is
// one store hash per subject (a ring of at most 1,440 minutes and, per timeframe, at most `keep`
// learned counts) and a recipient memory one string of at most `recipientMemory` hashes, both
// expiring `retentionDays` after the subject's last message. In the embedded store that is process
// memory, capped there by `maxKeys`. The million goes to the store operations directly; a smaller run
// goes through the kernel.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, RedisStore, type Store } from 'themis-milter';
import { createTestKernel, eventually, problemsOf, redisAvailable, startRedis, useTestClock } from 'themis-milter/testing';
import predict, { profileUpdate, recipientHash, seenAdd, type ProfileRequest } from '../src/index.ts';
import { PROFILE_RING, profileField } from '../src/store/profile.ts';

const MINUTE = 60_000;
const DAY = 86_400_000;

/** The hash a memory store holds at `key` (for sizes). */
const hashAt = (store: MemoryStore, key: string) => (store as unknown as { data: Map<string, { value: Map<string, string> }> }).data.get(key)?.value;

describe('predict bounds', () => {
  it('1,000,000 distinct subjects stay within the memory store’s maxKeys; each profile has a bounded size', async () => {
    const cap = 20_000;
    const store = new MemoryStore({ maxKeys: cap });
    // The plugin's key ends with 22 characters of the value's hash: left out here for speed.
    const base = { amount: 3, timeframes: [1, 5, 10], span: 30, keep: 30, clipK: 6, clipAfter: 10, ttlMs: 30 * DAY };
    let most = 0;
    const batch = 1_000;
    for (let i = 0; i < 1_000_000; i += batch) {
      const requests: ProfileRequest[] = [];
      for (let j = i; j < i + batch; j++) requests.push({ ...base, key: `predict:sender:recipients10:1-5-10:${String(j).padStart(22, '0')}` });
      await profileUpdate(store, requests);
      most = Math.max(most, store.size);
    }
    assert.equal(most, cap);
    assert.equal(store.evictions, 1_000_000 - cap);
    const last = hashAt(store, `predict:sender:recipients10:1-5-10:${String(999_999).padStart(22, '0')}`);
    assert.deepEqual([...last!.keys()].sort(), [PROFILE_RING, profileField(1), profileField(10), profileField(5)].sort(), 'the ring and one field per timeframe');
    await store.close();
  });

  it('a profile’s size is bounded by its timeframes and keep, however long it learns', async () => {
    const store = new MemoryStore({ testClock: true });
    const keep = 30;
    const start = Date.UTC(2026, 0, 1);
    // Ten days of one message a minute with a changing count: every bucket closes and is learned.
    for (let m = 0; m < 10 * 1440; m += 10) {
      const requests: ProfileRequest[] = [];
      for (let k = 0; k < 10; k++) requests.push({ key: 'p', amount: 1 + ((m + k) % 7), timeframes: [1, 5, 10, 60], span: 30, keep, clipK: 6, clipAfter: 10, ttlMs: DAY, now: start + (m + k) * MINUTE });
      await profileUpdate(store, requests);
    }
    const hash = hashAt(store, 'p')!;
    assert.equal(hash.size, 5);
    assert.equal(hash.get(PROFILE_RING)!.split(',').length, 1 + 60, 'the ring holds the longest timeframe');
    for (const t of [1, 5, 10, 60]) assert.ok(hash.get(profileField(t))!.split(',').length <= 4 + keep, `f${t} keeps at most ${keep} counts`);
    await store.close();
  });

  it('100,000 distinct recipients: a subject’s memory keeps recipientMemory of them', async () => {
    const store = new MemoryStore();
    const keep = 1_000;
    let largest = 0;
    // Each new recipient is looked for in the whole memory (as the Lua script does): 100,000 make the point.
    for (let i = 0; i < 100_000; i += 1_000) {
      const members = Array.from({ length: 1_000 }, (_, j) => recipientHash(`r${i + j}@example.net`));
      const r = await seenAdd(store, 'predict:seen:sender:x', members, { keep, ttlMs: 30 * DAY });
      largest = Math.max(largest, r.size);
    }
    assert.equal(largest, keep);
    assert.equal((await store.get('predict:seen:sender:x'))!.length, keep * 8, '8 characters a recipient');
    await store.close();
  });

  it('retentionDays, the expiry of every key, is checked: at most 3,650 days', async () => {
    await assert.rejects(createTestKernel({ plugins: [{ plugin: predict, options: { retentionDays: 1e9 } }] }), (err: unknown) => problemsOf(err).some((p) => /retentionDays/.test(p.message) && /at most 3650 days/.test(p.message)));
  });

  it('through the kernel: every profile and recipient memory is gone retentionDays after the subject’s last message', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const store = new MemoryStore({ sweepIntervalMs: 60 * MINUTE });
    await store.set('other:plugin', 'kept');
    const base = store.size;
    const k = await createTestKernel({
      store,
      plugins: [{ plugin: predict, options: { retentionDays: 2, recipientMemory: 10 } }],
      policies: [
        { name: 'fresh', predict: { by: 'sender', count: 'newRecipients' } },
        { name: 'volume', predict: { by: 'sender', count: 'recipients' } },
      ],
    });
    for (let i = 0; i < 100; i++) await k.message({ from: `s${i % 50}@example.org`, rcpt: Array.from({ length: 15 }, (_, j) => `r${i}-${j}@example.net`), client: { address: '192.0.2.7' } });
    assert.equal(store.size, base + 50 * 3, 'per sender: two profiles and a recipient memory');
    for await (const key of store.scanKeys('predict:seen:')) assert.equal((await store.get(key))!.length, 10 * 8, 'recipientMemory: 10');
    await clock.advance(2 * DAY - MINUTE);
    assert.equal(store.size, base + 50 * 3, 'nothing expires early');
    await clock.advance(2 * 60 * MINUTE);
    assert.equal(store.size, base, 'after the retention, every key is gone');
    await k.close();
  });

  it('on Redis, with a short retention: every profile and memory expires, back to the base count', { skip: redisAvailable() ? false : 'redis-server not installed' }, async (t) => {
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
      plugins: [{ plugin: predict, options: { retentionDays: 1 / 86_400 } }],
      policies: [{ name: 'fresh', predict: { by: 'sender', count: 'newRecipients' } }],
    });
    for (let i = 0; i < 40; i++) await k.message({ from: `s${i % 20}@example.org`, rcpt: [`r${i}@example.net`], client: { address: '192.0.2.7' } });
    assert.equal(await count(store), base + 20 * 2, 'a profile and a recipient memory per sender');
    // retentionDays 1/86,400: one second after each sender's last message.
    await eventually(async () => (await count(store)) === base, 5_000, 'every key expired');
    await k.close();
  });
});
