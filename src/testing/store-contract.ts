/**
 * The behaviour every store owes plugins, as `node:test` suites a store implementation runs against
 * itself ({@link storeContract}: Themis runs it on memory, Redis and a Cluster), and the contract of
 * a plugin's atomic operation ({@link atomicOperationContract}): its in-memory twin gives what its
 * script gives, on a real redis-server and a real 3-master Cluster.
 * @module
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { MemoryStore, RedisStore, StoreError, defineAtomicOperation, invalidAtomicArgument, type AtomicCall, type AtomicKeyType, type AtomicOperation, type Store, type StoreErrorCode } from '../store/index.ts';
import { eventually, redisAvailable, redisCliAvailable, startRedis, startRedisCluster, type RedisClusterServers, type RedisServer } from './redis.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const code = (c: StoreErrorCode) => (e: unknown) => e instanceof StoreError && e.code === c;

/** Adds `by` to field `f` of a hash, deletes the field at 0, then PEXPIRE (ttl > 0) or PERSIST (ttl < 0): the value and the PTTL (1 for any positive). */
const CONTRACT_HASH = defineAtomicOperation({
  name: 'CONTRACT.HASH',
  type: 'hash',
  lua: `local v = redis.call('HINCRBY', KEYS[1], 'f', ARGV[1])
if v == 0 then redis.call('HDEL', KEYS[1], 'f') end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) elseif ttl < 0 then redis.call('PERSIST', KEYS[1]) end
local p = redis.call('PTTL', KEYS[1])
if p > 0 then p = 1 end
return {v, p}`,
  validate(a: { by: number; ttlMs: number }) {
    if (!Number.isSafeInteger(a.by)) throw invalidAtomicArgument('CONTRACT.HASH', `by ${a.by} is not a safe integer`);
  },
  encode: (a) => [a.by, a.ttlMs],
  decode: (reply) => ({ value: Number((reply as unknown[])[0]), ttl: Number((reply as unknown[])[1]) }),
  memory(key, a) {
    const value = Number(key.fields.get('f') ?? 0) + a.by;
    if (value === 0) key.fields.delete('f');
    else key.fields.set('f', String(value));
    if (a.ttlMs > 0) key.pexpire(a.ttlMs);
    else if (a.ttlMs < 0) key.persist();
    const p = key.pttl();
    return { value, ttl: p > 0 ? 1 : p };
  },
});
const add = (key: string, by: number, ttlMs = 0) => ({ key, args: { by, ttlMs } });

/** Appends to a string, keeps its last `keep` characters (SET: the expiry goes), then PEXPIRE when ttl > 0: the length and the PTTL (1 for any positive). */
const CONTRACT_STRING = defineAtomicOperation({
  name: 'CONTRACT.STRING',
  type: 'string',
  lua: `local s = (redis.call('GET', KEYS[1]) or '') .. ARGV[1]
local keep = tonumber(ARGV[2])
if #s > keep then s = string.sub(s, #s - keep + 1) end
redis.call('SET', KEYS[1], s)
local ttl = tonumber(ARGV[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
local p = redis.call('PTTL', KEYS[1])
if p > 0 then p = 1 end
return {#s, p}`,
  encode: (a: { text: string; keep: number; ttlMs: number }) => [a.text, a.keep, a.ttlMs],
  decode: (reply) => ({ length: Number((reply as unknown[])[0]), ttl: Number((reply as unknown[])[1]) }),
  memory(key, a) {
    let s = (key.get() ?? '') + a.text;
    if (s.length > a.keep) s = s.slice(s.length - a.keep);
    key.set(s);
    if (a.ttlMs > 0) key.pexpire(a.ttlMs);
    const p = key.pttl();
    return { length: s.length, ttl: p > 0 ? 1 : p };
  },
});
const append = (key: string, text: string, keep: number, ttlMs: number) => ({ key, args: { text, keep, ttlMs } });

/**
 * For a suite of store tests: a function that makes a fresh store with `make`, each closed after the
 * test that made it (an `afterEach` registered in the current suite).
 */
export function freshStores(make: () => Promise<Store> | Store): () => Promise<Store> {
  let stores: Store[] = [];
  afterEach(async () => {
    await Promise.all(stores.map((s) => s.close()));
    stores = [];
  });
  return async () => {
    const s = await make();
    stores.push(s);
    return s;
  };
}

/**
 * Defines the store contract's tests in the current suite (call it inside `describe`); `make` gives a
 * fresh, empty store per test, closed after it.
 */
export function storeContract(make: () => Promise<Store> | Store): void {
  const fresh = freshStores(make);

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

  it('atomic: a batch runs in order (a key twice sees the first write), results in call order; an empty batch does nothing', async () => {
    const s = await fresh();
    assert.deepEqual(await s.atomic(CONTRACT_HASH, []), []);
    const r = await s.atomic(CONTRACT_HASH, [add('ah:1', 2), add('ah:2', 5), add('ah:1', 3)]);
    assert.deepEqual(r, [{ value: 2, ttl: -1 }, { value: 5, ttl: -1 }, { value: 5, ttl: -1 }]);
    const keys: string[] = [];
    for await (const k of s.scanKeys('ah:')) keys.push(k);
    assert.deepEqual(keys.sort(), ['ah:1', 'ah:2']);
  });

  it('atomic: an emptied hash is deleted; an expiry is kept by a write without one, dropped by PERSIST, and expires the key', async () => {
    const s = await fresh();
    assert.deepEqual(await s.atomic(CONTRACT_HASH, [add('ae:k', 1, 60_000), add('ae:k', 1), add('ae:k', -2)]), [
      { value: 1, ttl: 1 },
      { value: 2, ttl: 1 },
      { value: 0, ttl: -2 },
    ]);
    assert.deepEqual(await s.atomic(CONTRACT_HASH, [add('ae:p', 1, 150), add('ae:p', 1, -1), add('ae:x', 1, 150)]), [
      { value: 1, ttl: 1 },
      { value: 2, ttl: -1 },
      { value: 1, ttl: 1 },
    ]);
    await eventually(async () => (await s.atomic(CONTRACT_HASH, [add('ae:x', 0)]))[0].ttl === -2, 2000, 'expiry');
    assert.deepEqual(await s.atomic(CONTRACT_HASH, [add('ae:p', 0)]), [{ value: 2, ttl: -1 }], 'persisted');
  });

  it('atomic on a string key: read, rewrite (SET drops the expiry), PEXPIRE; the twin sees what the script sees', async () => {
    const s = await fresh();
    assert.deepEqual(await s.atomic(CONTRACT_STRING, [append('as:k', 'abc', 5, 60_000), append('as:k', 'def', 5, 0), append('as:k', 'g', 5, 60_000)]), [
      { length: 3, ttl: 1 },
      { length: 5, ttl: -1 },
      { length: 5, ttl: 1 },
    ]);
    assert.equal(await s.get('as:k'), 'cdefg');
  });

  it('atomic: validate refuses a call before any runs; a key of another kind is WRONGTYPE and changes nothing', async () => {
    const s = await fresh();
    await assert.rejects(s.atomic(CONTRACT_HASH, [add('av:ok', 1), add('av:bad', 0.5)]), code('THEMIS_ERR_STORE_ARGUMENT'));
    assert.deepEqual(await s.atomic(CONTRACT_HASH, [add('av:ok', 0)]), [{ value: 0, ttl: -2 }], 'the valid call was not run either');
    await s.set('av:str', 'x');
    await s.rankAdd('av:rnk', { a: 1 }, { keep: 2 });
    await s.atomic(CONTRACT_HASH, [add('av:hash', 1)]);
    const wrong = code('THEMIS_ERR_STORE_WRONGTYPE');
    await assert.rejects(s.atomic(CONTRACT_HASH, [add('av:str', 1)]), wrong);
    await assert.rejects(s.atomic(CONTRACT_HASH, [add('av:rnk', 1)]), wrong);
    await assert.rejects(s.atomic(CONTRACT_STRING, [append('av:hash', 'x', 2, 0)]), wrong);
    await assert.rejects(s.get('av:hash'), wrong);
    assert.equal(await s.get('av:str'), 'x', 'nothing changed');
    assert.deepEqual(await s.rankRead(['av:rnk'], 2), [[['a', 1]]], 'nothing changed');
  });

  it('setIfAbsent: sets only an absent key (of any kind), with an optional TTL; once expired it sets again', async () => {
    const s = await fresh();
    assert.equal(await s.setIfAbsent('sn:a', '1'), true);
    assert.equal(await s.setIfAbsent('sn:a', '2'), false);
    assert.equal(await s.get('sn:a'), '1');
    await s.counterAdd('sn:c', { a: 1 });
    assert.equal(await s.setIfAbsent('sn:c', 'x'), false);
    assert.deepEqual(await s.counterRead(['sn:c']), [{ a: 1 }]);
    assert.equal(await s.setIfAbsent('sn:t', 'first', 150), true);
    assert.equal(await s.setIfAbsent('sn:t', 'second', 150), false);
    await eventually(async () => s.setIfAbsent('sn:t', 'third', 60_000), 2000, 'set after expiry');
    assert.equal(await s.get('sn:t'), 'third');
  });

  it('close is idempotent', async () => {
    const s = await fresh();
    await s.set('x', '1');
    await s.close();
    await s.close();
  });
}

/** mulberry32: a small seeded PRNG, so a failing run can be replayed from its seed. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)] };
}


/** Options of {@link atomicOperationContract}. */
export interface AtomicContractOptions<Args, Result> {
  /**
   * Named scenarios. Each runs once on a fresh in-memory store and once on a fresh Redis and Cluster
   * store (all built with `testClock`, so a call's `now` is honoured everywhere); what it returns must
   * be deep-equal (`assert.deepStrictEqual`: to the last bit of a double) on every backend. `run`
   * sends one batch of calls; `store` is the store itself (to read what the operation left, with
   * `get`, `scanKeys`, another operation…).
   */
  scenarios: Record<string, (run: (calls: readonly AtomicCall<Args>[]) => Promise<Result[]>, store: Store) => Promise<unknown>>;
  /** Compare with a real redis-server (default true; skipped with a printed reason when `redis-server` is not on PATH). */
  redis?: boolean;
  /** Compare with a real 3-master Redis Cluster (default true; needs `redis-cli` too). */
  cluster?: boolean;
}

let prefixes = 0;

/**
 * Proves an atomic operation's in-memory twin equal to its Lua script: defines a `describe` suite
 * with one test per scenario, which runs the scenario on the memory store, a real redis-server and a
 * real 3-master Cluster (started by the suite on loopback, random ports, temporary directories, and
 * stopped after it) and compares the results. Call it at the top level of a test file.
 */
export function atomicOperationContract<Args, Result, Type extends AtomicKeyType>(op: AtomicOperation<Args, Result, Type>, options: AtomicContractOptions<Args, Result>): void {
  const noRedis = redisAvailable() ? undefined : 'redis-server is not on PATH';
  const noCluster = noRedis ?? (redisCliAvailable() ? undefined : 'redis-cli is not on PATH');
  const useRedis = options.redis !== false && noRedis === undefined;
  const useCluster = options.cluster !== false && noCluster === undefined;
  if (options.redis !== false && noRedis) console.log(`# ${op.name}: the comparison with Redis is skipped: ${noRedis}`);
  if (options.cluster !== false && noCluster) console.log(`# ${op.name}: the comparison with a Redis Cluster is skipped: ${noCluster}`);
  const skip = useRedis || useCluster ? false : `nothing to compare the in-memory twin with (${noRedis ?? noCluster ?? 'redis and cluster turned off'})`;

  describe(`atomic operation ${op.name}: the in-memory twin gives what the script gives`, { skip }, () => {
    let server: RedisServer | undefined;
    let cluster: RedisClusterServers | undefined;
    before(async () => {
      if (useRedis) server = await startRedis();
      if (useCluster) cluster = await startRedisCluster(3);
    });
    after(async () => {
      await server?.stop();
      await cluster?.stop();
    });

    const runOn = async (store: Store, scenario: AtomicContractOptions<Args, Result>['scenarios'][string]) => {
      try {
        if (store instanceof RedisStore) await store.connect();
        return await scenario((calls) => store.atomic(op, calls), store);
      } finally {
        await store.close();
      }
    };

    for (const [name, scenario] of Object.entries(options.scenarios)) {
      it(name, async () => {
        const expected = await runOn(new MemoryStore({ testClock: true }), scenario);
        const keyPrefix = `contract${process.pid}-${++prefixes}:`;
        if (server) assert.deepStrictEqual(await runOn(new RedisStore({ url: server.url, keyPrefix }, { testClock: true }), scenario), expected, `${op.name} / ${name}: Redis differs from the in-memory twin`);
        if (cluster) assert.deepStrictEqual(await runOn(new RedisStore({ cluster: { nodes: cluster.nodes }, keyPrefix }, { testClock: true }), scenario), expected, `${op.name} / ${name}: the Cluster differs from the in-memory twin`);
      });
    }
  });
}
