/**
 * The behaviour every store owes plugins, run against each implementation: the in-memory store
 * (store.test.ts) and the Redis store against a real redis-server (redis.test.ts).
 */
import assert from 'node:assert/strict';
import { afterEach, it } from 'node:test';
import { StoreError, type Store, type StoreErrorCode } from '../../src/store/index.ts';
import { eventually } from '../helpers/redis.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const code = (c: StoreErrorCode) => (e: unknown) => e instanceof StoreError && e.code === c;

/** Defines the contract's tests in the current suite; `make` gives a fresh, empty store per test. */
export function storeContract(make: () => Promise<Store> | Store): void {
  let stores: Store[] = [];
  const fresh = async () => {
    const s = await make();
    stores.push(s);
    return s;
  };
  afterEach(async () => {
    await Promise.all(stores.map((s) => s.close()));
    stores = [];
  });

  it('get: undefined for an absent key; set then get; overwrite; empty and unicode values', async () => {
    const s = await fresh();
    assert.equal(await s.get('absent'), undefined);
    await s.set('k', 'v1');
    assert.equal(await s.get('k'), 'v1');
    await s.set('k', 'v2');
    assert.equal(await s.get('k'), 'v2');
    await s.set('empty', '');
    assert.equal(await s.get('empty'), '');
    await s.set('clé:with:colons é', 'välue ✓');
    assert.equal(await s.get('clé:with:colons é'), 'välue ✓');
    assert.equal(await s.get('clé:with:colons'), undefined);
  });

  it('set with a TTL expires; set without one clears an earlier TTL', async () => {
    const s = await fresh();
    await s.set('short', 'x', 150);
    assert.equal(await s.get('short'), 'x');
    await s.set('kept', 'a', 100);
    await s.set('kept', 'b');
    await eventually(async () => (await s.get('short')) === undefined, 2000, 'expiry');
    await sleep(50);
    assert.equal(await s.get('kept'), 'b');
  });

  it('delete: true when the key existed, false when absent or expired', async () => {
    const s = await fresh();
    await s.set('d', '1');
    assert.equal(await s.delete('d'), true);
    assert.equal(await s.get('d'), undefined);
    assert.equal(await s.delete('d'), false);
    assert.equal(await s.delete('never'), false);
    await s.set('e', '1', 30);
    await sleep(80);
    assert.equal(await s.delete('e'), false);
  });

  it('increment: created at 0, by 1 by default, any integer step, readable with get', async () => {
    const s = await fresh();
    assert.equal(await s.increment('n'), 1);
    assert.equal(await s.increment('n'), 2);
    assert.equal(await s.increment('n', 10), 12);
    assert.equal(await s.increment('n', -20), -8);
    assert.equal(await s.get('n'), '-8');
    await s.set('m', '41');
    assert.equal(await s.increment('m'), 42);
    assert.equal(await s.increment('other', 5), 5);
  });

  it('increment with a TTL expires and restarts at 0; with a new TTL extends; without keeps the expiry', async () => {
    const s = await fresh();
    assert.equal(await s.increment('w', 1, 150), 1);
    assert.equal(await s.increment('w', 1, 150), 2);
    await eventually(async () => (await s.get('w')) === undefined, 2000, 'counter expiry');
    assert.equal(await s.increment('w', 1, 150), 1);

    assert.equal(await s.increment('ext', 1, 100), 1);
    assert.equal(await s.increment('ext', 1, 400), 2);
    await sleep(150);
    assert.equal(await s.get('ext'), '2', 'the second TTL replaced the first');

    await s.set('keep', '5', 150);
    assert.equal(await s.increment('keep'), 6);
    await eventually(async () => (await s.get('keep')) === undefined, 2000, 'the earlier expiry still applies');
  });

  it('counterAdd accumulates integer fields in one key; zero amounts and empty fields do nothing; counterRead keeps the order, {} when missing', async () => {
    const s = await fresh();
    await s.counterAdd('c:1', { a: 1, b: 2 });
    await s.counterAdd('c:1', { a: 10, c: -3, zero: 0 });
    await s.counterAdd('c:2', { x: 5, 'é ✓:{tag}': 7 });
    await s.counterAdd('c:3', {});
    await s.counterAdd('c:4', { only: 0 });
    await s.counterAdd('c:5', { n: 2 });
    await s.counterAdd('c:5', { n: -2 });
    assert.deepEqual(await s.counterRead(['c:2', 'missing', 'c:1', 'c:3', 'c:4', 'c:5', 'c:1']), [{ x: 5, 'é ✓:{tag}': 7 }, {}, { a: 11, b: 2, c: -3 }, {}, {}, { n: 0 }, { a: 11, b: 2, c: -3 }]);
    assert.deepEqual(await s.counterRead([]), []);
    assert.deepEqual(await s.counterRead(['missing']), [{}]);
    assert.equal(await s.delete('c:1'), true, 'delete removes counters');
    assert.deepEqual(await s.counterRead(['c:1']), [{}]);
    // Many fields and many keys in one call.
    const many = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`f${i}`, i + 1]));
    await s.counterAdd('c:many', many);
    const keys = Array.from({ length: 50 }, (_, i) => `c:k${i}`);
    for (const [i, k] of keys.entries()) await s.counterAdd(k, { i });
    const read = await s.counterRead(['c:many', ...keys]);
    assert.deepEqual(read[0], many);
    assert.deepEqual(read.slice(1), keys.map((_, i) => (i === 0 ? {} : { i })));
  });

  it('counterAdd with a TTL expires the counters; a new TTL extends; without one the expiry stays', async () => {
    const s = await fresh();
    await s.counterAdd('t:gone', { a: 1 }, 100);
    await s.counterAdd('t:gone', { a: 1 }, 100);
    await s.counterAdd('t:kept', { a: 1 }, 100);
    await s.counterAdd('t:kept', { a: 1 });
    await s.counterAdd('t:ext', { a: 1 }, 100);
    await s.counterAdd('t:ext', { a: 1 }, 5000);
    await s.counterAdd('t:none', { a: 1 });
    assert.deepEqual(await s.counterRead(['t:gone']), [{ a: 2 }]);
    await sleep(300);
    assert.deepEqual(await s.counterRead(['t:gone', 't:kept', 't:ext', 't:none']), [{}, {}, { a: 2 }, { a: 1 }]);
    await s.counterAdd('t:gone', { a: 1 }, 100);
    assert.deepEqual(await s.counterRead(['t:gone']), [{ a: 1 }], 'restarts at 0');
  });

  it('rankAdd mode add: adds to the scores (negative and fractional too); rankRead: highest first, up to limit, [] when missing', async () => {
    const s = await fresh();
    await s.rankAdd('r:1', { a: 1, b: 2, c: 3 }, { keep: 10 });
    await s.rankAdd('r:1', { a: 5, d: 0.5, e: -1, f: 0 }, { keep: 10, mode: 'add' });
    await s.rankAdd('r:2', { x: 0.1 }, { keep: 10 });
    await s.rankAdd('r:2', { x: 0.2 }, { keep: 10 });
    await s.rankAdd('r:3', {}, { keep: 10 });
    assert.deepEqual(await s.rankRead(['r:1', 'missing', 'r:2', 'r:3'], 10), [
      [['a', 6], ['c', 3], ['b', 2], ['d', 0.5], ['f', 0], ['e', -1]],
      [],
      [['x', 0.1 + 0.2]],
      [],
    ]);
    assert.deepEqual(await s.rankRead(['r:1', 'r:1'], 2), [[['a', 6], ['c', 3]], [['a', 6], ['c', 3]]]);
    assert.deepEqual(await s.rankRead(['r:1', 'missing'], 0), [[], []]);
    assert.deepEqual(await s.rankRead([], 5), []);
    assert.equal(await s.delete('r:1'), true, 'delete removes a ranking');
    assert.deepEqual(await s.rankRead(['r:1'], 5), [[]]);
  });

  it('rankAdd mode max: the score becomes the higher of the two; modes mix on one key', async () => {
    const s = await fresh();
    await s.rankAdd('m', { a: 5, b: 1 }, { keep: 10, mode: 'max' });
    await s.rankAdd('m', { a: 3, b: 4, c: -1 }, { keep: 10, mode: 'max' });
    assert.deepEqual(await s.rankRead(['m'], 10), [[['a', 5], ['b', 4], ['c', -1]]]);
    await s.rankAdd('m', { c: 10 }, { keep: 10 });
    await s.rankAdd('m', { c: 2.5 }, { keep: 10, mode: 'max' });
    assert.deepEqual(await s.rankRead(['m'], 10), [[['c', 9], ['a', 5], ['b', 4]]]);
  });

  it('rankAdd keeps only the keep highest, never more; equal scores trimmed and read in byte order of the members', async () => {
    const s = await fresh();
    for (let i = 0; i < 30; i++) {
      await s.rankAdd('top', { [`m${i}`]: i % 7, [`n${i}`]: (i * 3) % 11 }, { keep: 5 });
      const [top] = await s.rankRead(['top'], 100);
      assert.ok(top.length <= 5, `${top.length} members`);
    }
    assert.deepEqual(await s.rankRead(['top'], 100), [[['n7', 10], ['n29', 10], ['n18', 10], ['n3', 9], ['n25', 9]]]);

    // One call adding more than keep; ties: the lowest byte-wise go first and read last.
    await s.rankAdd('ties', { b: 1, a: 1, c: 1, d: 2, aa: 1 }, { keep: 3 });
    assert.deepEqual(await s.rankRead(['ties'], 10), [[['d', 2], ['c', 1], ['b', 1]]]);
    // Redis compares UTF-8 bytes: U+1F600 (a surrogate pair in UTF-16) sorts after U+FB00.
    await s.rankAdd('utf', { '😀': 1, '\ufb00': 1, z: 1, é: 1 }, { keep: 3 });
    assert.deepEqual(await s.rankRead(['utf'], 10), [[['😀', 1], ['\ufb00', 1], ['é', 1]]]);
    await s.rankAdd('one', { a: 1, b: 2 }, { keep: 1 });
    await s.rankAdd('one', { c: 1 }, { keep: 1, mode: 'max' });
    assert.deepEqual(await s.rankRead(['one'], 10), [[['b', 2]]]);
  });

  it('rankAdd with a TTL expires the ranking; without one the expiry stays', async () => {
    const s = await fresh();
    await s.rankAdd('rt:gone', { a: 1 }, { keep: 3, ttlMs: 100 });
    await s.rankAdd('rt:kept', { a: 1 }, { keep: 3, ttlMs: 100 });
    await s.rankAdd('rt:kept', { b: 1 }, { keep: 3 });
    await s.rankAdd('rt:ext', { a: 1 }, { keep: 3, ttlMs: 100 });
    await s.rankAdd('rt:ext', { a: 1 }, { keep: 3, ttlMs: 5000, mode: 'max' });
    assert.deepEqual(await s.rankRead(['rt:gone'], 3), [[['a', 1]]]);
    await sleep(300);
    assert.deepEqual(await s.rankRead(['rt:gone', 'rt:kept', 'rt:ext'], 3), [[], [], [['a', 1]]]);
  });

  it('counters, rankings and strings are different kinds: using one as another is a WRONGTYPE error; set replaces any', async () => {
    const s = await fresh();
    await s.set('str', 'x');
    await s.counterAdd('cnt', { a: 1 });
    await s.rankAdd('rnk', { a: 1 }, { keep: 2 });
    const wrong = code('THEMIS_ERR_STORE_WRONGTYPE');
    await assert.rejects(s.counterAdd('str', { a: 1 }), wrong);
    await assert.rejects(s.counterRead(['cnt', 'str']), wrong);
    await assert.rejects(s.rankAdd('str', { a: 1 }, { keep: 2 }), wrong);
    await assert.rejects(s.rankRead(['rnk', 'str'], 2), wrong);
    await assert.rejects(s.get('cnt'), wrong);
    await assert.rejects(s.increment('cnt'), wrong);
    await assert.rejects(s.rankAdd('cnt', { a: 1 }, { keep: 2 }), wrong);
    await assert.rejects(s.rankRead(['cnt'], 2), wrong);
    await assert.rejects(s.get('rnk'), wrong);
    await assert.rejects(s.increment('rnk', 1, 1000), wrong);
    await assert.rejects(s.counterAdd('rnk', { a: 1 }), wrong);
    await assert.rejects(s.counterRead(['rnk']), wrong);
    await assert.rejects(s.rateInspect('rnk', [{ windowMs: 1000, slots: 2, limit: 1 }]), wrong);
    assert.deepEqual(await s.counterRead(['cnt']), [{ a: 1 }], 'nothing changed');
    assert.deepEqual(await s.rankRead(['rnk'], 2), [[['a', 1]]], 'nothing changed');
    assert.equal(await s.get('str'), 'x', 'nothing changed');
    await s.set('cnt', 'now a string');
    assert.equal(await s.get('cnt'), 'now a string');
    await s.counterAdd('cnt2', { a: 1 });
    await s.delete('cnt2');
    await s.rankAdd('cnt2', { a: 1 }, { keep: 1 });
    assert.deepEqual(await s.rankRead(['cnt2'], 1), [[['a', 1]]], 'a deleted key takes any kind');
  });

  it('counterAdd, rankAdd and rankRead reject invalid arguments with THEMIS_ERR_STORE_ARGUMENT, changing nothing', async () => {
    const s = await fresh();
    const bad = code('THEMIS_ERR_STORE_ARGUMENT');
    for (const amount of [1.5, NaN, Infinity, 2 ** 53, '1' as unknown as number]) await assert.rejects(s.counterAdd('k', { ok: 1, bad: amount }), bad, String(amount));
    await assert.rejects(s.counterAdd('k', { a: 1 }, NaN), bad);
    await assert.rejects(s.counterAdd('k', { a: 1 }, Infinity), bad);
    assert.deepEqual(await s.counterRead(['k']), [{}]);
    for (const keep of [0, -1, 1.5, NaN]) await assert.rejects(s.rankAdd('r', { a: 1 }, { keep }), bad, String(keep));
    for (const amount of [NaN, Infinity, -Infinity]) await assert.rejects(s.rankAdd('r', { ok: 1, bad: amount }, { keep: 3 }), bad, String(amount));
    await assert.rejects(s.rankAdd('r', { a: 1 }, { keep: 3, mode: 'min' as 'max' }), bad);
    await assert.rejects(s.rankAdd('r', { a: 1 }, { keep: 3, ttlMs: NaN }), bad);
    for (const limit of [-1, 1.5, NaN]) await assert.rejects(s.rankRead(['r'], limit), bad, String(limit));
    assert.deepEqual(await s.rankRead(['r'], 5), [[]]);
  });

  it('publish/subscribe: a subscriber hears what is published after subscribe resolves, in order', async () => {
    const s = await fresh();
    const got: string[] = [];
    const off = await s.subscribe('ch', (m) => got.push(m));
    await s.publish('ch', 'one');
    await s.publish('ch', 'two');
    await eventually(() => got.length === 2, 2000, 'delivery');
    assert.deepEqual(got, ['one', 'two']);
    await s.publish('nobody-listens', 'x');
    await off();
  });

  it('publish/subscribe: channels are separate; each subscription is independent; unsubscribe removes only its own', async () => {
    const s = await fresh();
    const a: string[] = [];
    const b: string[] = [];
    const other: string[] = [];
    const twice: string[] = [];
    const onTwice = (m: string) => twice.push(m);
    const offA = await s.subscribe('ch', (m) => a.push(m));
    const offB = await s.subscribe('ch', (m) => b.push(m));
    const offT1 = await s.subscribe('ch', onTwice);
    const offT2 = await s.subscribe('ch', onTwice);
    const offOther = await s.subscribe('other', (m) => other.push(m));

    await s.publish('ch', 'm1');
    await eventually(() => a.length === 1 && b.length === 1 && twice.length === 2, 2000, 'm1 to every handler');
    assert.deepEqual(twice, ['m1', 'm1'], 'one function subscribed twice hears twice');
    assert.deepEqual(other, []);

    await offA();
    await offA(); // twice is harmless
    await offT1();
    await s.publish('ch', 'm2');
    await eventually(() => b.length === 2 && twice.length === 3, 2000, 'm2 to the remaining handlers');
    assert.deepEqual(a, ['m1'], 'an unsubscribed handler hears nothing more');
    assert.deepEqual(b, ['m1', 'm2']);

    await offB();
    await offT2();
    await s.publish('ch', 'm3');
    await s.publish('other', 'probe');
    await eventually(() => other.length === 1, 2000, 'the probe');
    assert.deepEqual([a, b, twice], [['m1'], ['m1', 'm2'], ['m1', 'm1', 'm2']], 'nothing after the last unsubscribe');
    await offOther();
  });

  it('close is idempotent', async () => {
    const s = await fresh();
    await s.set('x', '1');
    await s.close();
    await s.close();
  });
}
