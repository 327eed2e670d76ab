/**
 * The behaviour every store owes plugins, run against each implementation: the in-memory store
 * (store.test.ts) and the Redis store against a real redis-server (redis.test.ts).
 */
import assert from 'node:assert/strict';
import { afterEach, it } from 'node:test';
import { StoreError, type ProfileRequest, type ProfileResult, type Store, type StoreErrorCode } from '../../src/store/index.ts';
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

  it('seenAdd: tells which members are new, most recently seen kept, the oldest beyond keep forgotten', async () => {
    const s = await fresh();
    const o = { keep: 3, ttlMs: 60_000 };
    assert.deepEqual(await s.seenAdd('seen:a', ['aa', 'bb', 'aa'], o), { fresh: [true, true, false], size: 2 });
    assert.deepEqual(await s.seenAdd('seen:a', ['bb', 'cc'], o), { fresh: [false, true], size: 3 });
    // aa is the least recently seen: dd pushes it out; bb, seen again, stays.
    assert.deepEqual(await s.seenAdd('seen:a', ['bb', 'dd'], o), { fresh: [false, true], size: 3 });
    assert.deepEqual(await s.seenAdd('seen:a', ['aa', 'bb', 'cc'], { ...o, inspect: true }), { fresh: [true, false, false], size: 3 });
    assert.equal(await s.get('seen:a'), 'ccbbdd', 'inspect wrote nothing; the memory is the members, least recent first');
    // A match across two members does not count: "bd" is in "ccbbdd" but not at a member boundary.
    assert.deepEqual(await s.seenAdd('seen:a', ['bd'], o), { fresh: [true], size: 3 });
    assert.deepEqual(await s.seenAdd('seen:a', [], o), { fresh: [], size: 0 });
    assert.deepEqual(await s.seenAdd('seen:b', ['x'], { keep: 1, ttlMs: 60_000 }), { fresh: [true], size: 1 });
  });

  it('seenAdd: a memory of another width, or an unreadable one, starts again; bad arguments are refused and change nothing', async () => {
    const s = await fresh();
    await s.set('seen:w', 'abcde');
    assert.deepEqual(await s.seenAdd('seen:w', ['ab', 'cd'], { keep: 10, ttlMs: 60_000 }), { fresh: [true, true], size: 2 });
    const bad = code('THEMIS_ERR_STORE_ARGUMENT');
    await assert.rejects(s.seenAdd('seen:w', ['ab', 'abc'], { keep: 10, ttlMs: 1000 }), bad);
    await assert.rejects(s.seenAdd('seen:w', ['a b'], { keep: 10, ttlMs: 1000 }), bad);
    await assert.rejects(s.seenAdd('seen:w', ['é'], { keep: 10, ttlMs: 1000 }), bad);
    await assert.rejects(s.seenAdd('seen:w', ['ab'], { keep: 0, ttlMs: 1000 }), bad);
    await assert.rejects(s.seenAdd('seen:w', ['ab'], { keep: 10, ttlMs: 0 }), bad);
    assert.equal(await s.get('seen:w'), 'abcd');
    await s.counterAdd('cnt:w', { a: 1 });
    await assert.rejects(s.seenAdd('cnt:w', ['ab'], { keep: 10, ttlMs: 1000 }), code('THEMIS_ERR_STORE_WRONGTYPE'));
  });

  it('seenAdd sets the expiry on every call that is not an inspection', async () => {
    const s = await fresh();
    await s.seenAdd('seen:t', ['aa'], { keep: 5, ttlMs: 150 });
    await s.seenAdd('seen:t', ['aa'], { keep: 5, ttlMs: 150, inspect: true });
    await eventually(async () => (await s.get('seen:t')) === undefined, 2000, 'expiry');
    assert.deepEqual(await s.seenAdd('seen:t', ['aa'], { keep: 5, ttlMs: 60_000 }), { fresh: [true], size: 1 });
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

  // Profiles on the store's own clock: only what does not depend on it (a 1440-minute count holds both calls whatever the minute).
  const day = (key: string, amount: number, extra: Partial<ProfileRequest> = {}): ProfileRequest => ({ key, amount, timeframes: [1440], span: 9, keep: 5, clipK: 0, clipAfter: 0, ttlMs: 60_000, ...extra });
  const dayCount = (r: ProfileResult) => r.timeframes[0].count;

  it('profileUpdate on the real clock: counts add up per key in one batch (a key twice too); inspect writes nothing; [] for no request', async () => {
    const s = await fresh();
    assert.deepEqual(await s.profileUpdate([]), []);
    const first = await s.profileUpdate([day('p:a', 3), day('p:b', 1), day('p:a', 2)]);
    assert.deepEqual(first.map(dayCount), [3, 1, 5]);
    assert.deepEqual(first[0].timeframes[0], { minutes: 1440, count: 3, n: 0, mean: 0, variance: 0, history: [] });
    const look = await s.profileUpdate([day('p:a', 4, { inspect: true }), day('p:none', 0, { inspect: true })]);
    assert.deepEqual(look.map(dayCount), [9, 0]);
    assert.deepEqual((await s.profileUpdate([day('p:a', 0, { inspect: true })])).map(dayCount), [5], 'the inspection counted nothing');
    const keys: string[] = [];
    for await (const k of s.scanKeys('p:')) keys.push(k);
    assert.deepEqual(keys.sort(), ['p:a', 'p:b'], 'an inspection creates no key');
  });

  it('profileUpdate sets the expiry on every update; an inspection leaves it alone', async () => {
    const s = await fresh();
    await s.profileUpdate([day('pt:gone', 1, { ttlMs: 150 }), day('pt:ext', 1, { ttlMs: 150 }), day('pt:look', 1, { ttlMs: 150 })]);
    await s.profileUpdate([day('pt:ext', 1, { ttlMs: 5000 }), day('pt:look', 0, { ttlMs: 5000, inspect: true })]);
    await sleep(400);
    const after = await s.profileUpdate(['pt:gone', 'pt:ext', 'pt:look'].map((k) => day(k, 0, { inspect: true })));
    assert.deepEqual(after.map(dayCount), [0, 2, 0]);
    await s.profileUpdate([day('pt:gone', 1, { ttlMs: 150 })]);
    assert.deepEqual((await s.profileUpdate([day('pt:gone', 0, { inspect: true })])).map(dayCount), [1], 'starts afresh');
  });

  it('profileUpdate: a key holding a string or a ranking is a WRONGTYPE error; a profile is not a string', async () => {
    const s = await fresh();
    const wrong = code('THEMIS_ERR_STORE_WRONGTYPE');
    await s.set('pw:str', 'x');
    await s.rankAdd('pw:rnk', { a: 1 }, { keep: 2 });
    await s.profileUpdate([day('pw:ok', 1)]);
    await assert.rejects(s.profileUpdate([day('pw:str', 1)]), wrong);
    await assert.rejects(s.profileUpdate([day('pw:rnk', 1, { inspect: true })]), wrong);
    await assert.rejects(s.get('pw:ok'), wrong);
    await assert.rejects(s.rankAdd('pw:ok', { a: 1 }, { keep: 1 }), wrong);
    assert.equal(await s.get('pw:str'), 'x', 'nothing changed');
    assert.deepEqual(await s.rankRead(['pw:rnk'], 2), [[['a', 1]]], 'nothing changed');
    assert.deepEqual((await s.profileUpdate([day('pw:ok', 0, { inspect: true })])).map(dayCount), [1]);
  });

  it('profileUpdate rejects invalid requests with THEMIS_ERR_STORE_ARGUMENT before writing anything', async () => {
    const s = await fresh();
    const bad = code('THEMIS_ERR_STORE_ARGUMENT');
    const invalid: Partial<ProfileRequest>[] = [
      { amount: -1 }, { amount: 1.5 }, { amount: NaN }, { amount: 2 ** 53 }, { amount: '1' as unknown as number },
      { timeframes: [] }, { timeframes: [5, 1] }, { timeframes: [1, 1] }, { timeframes: [0] }, { timeframes: [1.5] }, { timeframes: [1441] }, { timeframes: 'x' as unknown as number[] },
      { span: 0.5 }, { span: NaN }, { span: Infinity },
      { keep: 0 }, { keep: 201 }, { keep: 2.5 },
      { clipK: -1 }, { clipK: NaN },
      { clipAfter: -1 }, { clipAfter: 0.5 },
      { ttlMs: 0 }, { ttlMs: -5 }, { ttlMs: NaN }, { ttlMs: Infinity },
      { now: NaN }, { now: Infinity }, { now: -1 },
      { inspect: 1 as unknown as boolean },
      { key: 5 as unknown as string },
    ];
    for (const change of invalid) await assert.rejects(s.profileUpdate([day('pv:ok', 1), day('pv:bad', 1, change)]), bad, JSON.stringify(change));
    await assert.rejects(s.profileUpdate([null as unknown as ProfileRequest]), bad);
    const keys: string[] = [];
    for await (const k of s.scanKeys('pv:')) keys.push(k);
    assert.deepEqual(keys, [], 'the valid request of each batch was not applied either');
    // The bounds themselves are valid.
    const edge = await s.profileUpdate([day('pv:edge', 0, { timeframes: [1, 1440], span: 1, keep: 200, clipK: 0, clipAfter: 0, ttlMs: 0.5, now: 0 })]);
    assert.equal(edge[0].timeframes.length, 2);
  });

  it('close is idempotent', async () => {
    const s = await fresh();
    await s.set('x', '1');
    await s.close();
    await s.close();
  });
}

/**
 * An independent model of one subject's profile, for a clock that never goes back and a fixed
 * configuration: every minute's count kept for ever (no ring), each timeframe's statistics learned as
 * the store's documentation says, with the same arithmetic in the same order (so equal to the bit).
 */
export class ProfileModel {
  readonly minutes = new Map<number, number>();
  readonly stats = new Map<number, { bucket: number; n: number; mean: number; variance: number; history: number[] }>();

  private sum(from: number, to: number): number {
    let x = 0;
    for (let m = from; m <= to; m++) x += this.minutes.get(m) ?? 0;
    return x;
  }

  /** The store's answer to `r` at `now`; applied unless `r.inspect`. */
  update(r: ProfileRequest, now: number): ProfileResult {
    const M = Math.floor(now / 60_000);
    const timeframes = r.timeframes.map((T) => {
      const B = Math.floor(M / T);
      const old = this.stats.get(T);
      const st = old ? { ...old, history: [...old.history] } : { bucket: B, n: 0, mean: 0, variance: 0, history: [] as number[] };
      if (B > st.bucket) {
        let x = this.sum(st.bucket * T, st.bucket * T + T - 1);
        if (x > 0) {
          if (r.clipK > 0 && st.n >= r.clipAfter) x = Math.min(x, Math.max(st.mean, st.mean + r.clipK * Math.sqrt(st.variance)));
          st.n++;
          if (st.n === 1) [st.mean, st.variance] = [x, 0];
          else {
            const alpha = Math.max(2 / (r.span + 1), 1 / st.n);
            const diff = x - st.mean;
            const incr = alpha * diff;
            st.mean += incr;
            st.variance = (1 - alpha) * (st.variance + diff * incr);
          }
          st.history = [...st.history, x].slice(-r.keep);
        }
        st.bucket = B;
      }
      if (!r.inspect) this.stats.set(T, st);
      return { minutes: T, count: this.sum(M - T + 1, M - 1) + (this.minutes.get(M) ?? 0) + r.amount, n: st.n, mean: st.mean, variance: st.variance, history: st.history.slice(-r.keep) };
    });
    if (!r.inspect) this.minutes.set(M, (this.minutes.get(M) ?? 0) + r.amount);
    return { timeframes };
  }
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

/** A random profile configuration: 1–3 timeframes, span, keep, clip. */
export function randomProfileConfig(rng: ReturnType<typeof prng>): Omit<ProfileRequest, 'key' | 'amount'> {
  const pool = [1, 2, 3, 5, 10, 15, 30, 60];
  const timeframes = [...new Set(Array.from({ length: 1 + rng.int(3) }, () => rng.pick(pool)))].sort((a, b) => a - b);
  return { timeframes, span: rng.pick([1, 2, 2.5, 5, 9, 20]), keep: 1 + rng.int(8), clipK: rng.pick([0, 0, 1, 2.5]), clipAfter: rng.int(7), ttlMs: 3_600_000 };
}

/** Exact equality, -0 and NaN included (no tolerance: the stores must compute the same doubles). */
export function assertSameProfile(actual: ProfileResult, expected: ProfileResult, where: string): void {
  assert.deepStrictEqual(actual, expected, where);
}

/**
 * The profile algorithm against stores built with `testClock` (`make`): known series, the bucket that
 * closes across the ring's edge, a clock behind, inspection, a configuration change, and a seeded
 * property test against {@link ProfileModel}, compared exactly.
 */
export function profileContract(make: () => Promise<Store>, runs: { subjects: number; batch: number; steps: number }): void {
  const T0 = 1_700_000_000_000 - (1_700_000_000_000 % 3_600_000); // a whole hour: minute 0 of a 60-minute bucket
  const at = (minute: number, ms = 17_345) => T0 + minute * 60_000 + ms;
  const base = { timeframes: [1, 5], span: 3, keep: 3, clipK: 0, clipAfter: 0, ttlMs: 3_600_000 };

  it('profileUpdate, a known series (timeframes 1 and 5, span 3, keep 3): first call learns nothing, empty buckets skipped, sliding counts, the 5-minute bucket closes at a multiple of 5', async () => {
    const s = await make();
    try {
      const step = async (minute: number, amount: number) => (await s.profileUpdate([{ key: 'ks', amount, ...base, now: at(minute) }]))[0].timeframes;
      assert.deepEqual(await step(0, 3), [
        { minutes: 1, count: 3, n: 0, mean: 0, variance: 0, history: [] },
        { minutes: 5, count: 3, n: 0, mean: 0, variance: 0, history: [] },
      ]);
      assert.deepEqual(await step(1, 0), [
        { minutes: 1, count: 0, n: 1, mean: 3, variance: 0, history: [3] },
        { minutes: 5, count: 3, n: 0, mean: 0, variance: 0, history: [] },
      ]);
      // Minute 1 was empty: not learned.
      assert.deepEqual((await step(2, 5))[0], { minutes: 1, count: 5, n: 1, mean: 3, variance: 0, history: [3] });
      // alpha = max(2/(3+1), 1/2) = 0.5: diff 2, mean 4, variance 0.5·(0 + 2·1) = 1.
      assert.deepEqual(await step(3, 2), [
        { minutes: 1, count: 2, n: 2, mean: 4, variance: 1, history: [3, 5] },
        { minutes: 5, count: 10, n: 0, mean: 0, variance: 0, history: [] },
      ]);
      assert.deepEqual((await step(4, 4))[0], { minutes: 1, count: 4, n: 3, mean: 3, variance: 1.5, history: [3, 5, 2] });
      // Minute 5: bucket 0 of 5 minutes (minutes 0–4: 3+0+5+2+4) closes; keep 3 drops the oldest.
      assert.deepEqual(await step(5, 1), [
        { minutes: 1, count: 1, n: 4, mean: 3.5, variance: 1, history: [5, 2, 4] },
        { minutes: 5, count: 12, n: 1, mean: 14, variance: 0, history: [14] },
      ]);
      // Minute 9, same 5-minute bucket: nothing learned for 5; minutes 6–8 empty, the count slides.
      assert.deepEqual(await step(9, 0), [
        { minutes: 1, count: 0, n: 5, mean: 2.25, variance: 2.0625, history: [2, 4, 1] },
        { minutes: 5, count: 1, n: 1, mean: 14, variance: 0, history: [14] },
      ]);
      // Minute 23: bucket 1 (minutes 5–9: 1) is learned, buckets 2–3 are skipped; the ring moved past all of it.
      assert.deepEqual(await step(23, 7), [
        { minutes: 1, count: 7, n: 5, mean: 2.25, variance: 2.0625, history: [2, 4, 1] },
        { minutes: 5, count: 7, n: 2, mean: 7.5, variance: 42.25, history: [14, 1] },
      ]);
    } finally {
      await s.close();
    }
  });

  it('profileUpdate: the bucket that closes is read from the ring before minutes leave it (T = W = 10)', async () => {
    const s = await make();
    try {
      const r = (minute: number, amount: number) => s.profileUpdate([{ key: 'edge', amount, ...base, timeframes: [10], now: at(minute) }]).then((x) => x[0].timeframes[0]);
      await r(10, 3);
      await r(14, 2);
      await r(19, 4);
      // At minute 25 the ring covers 16–25: minutes 10–15 have left it, but bucket 1 (10–19) counts 9.
      assert.deepEqual(await r(25, 1), { minutes: 10, count: 5, n: 1, mean: 9, variance: 0, history: [9] });
    } finally {
      await s.close();
    }
  });

  it('profileUpdate: alpha is 1/n while larger than 2/(span+1) (the mean and variance of the first buckets), then 2/(span+1); keep trims the history', async () => {
    const s = await make();
    try {
      const cfg = { ...base, timeframes: [1], span: 9, keep: 4 };
      let last: ProfileResult | undefined;
      let minute = 0;
      for (const amount of [2, 4, 6, 8, 10, 0]) [last] = await s.profileUpdate([{ key: 'alpha', amount, ...cfg, now: at(minute++) }]);
      const t = last!.timeframes[0];
      // Buckets 2, 4, 6, 8: alpha 1, 1/2, 1/3, 1/4: the plain mean 5 and population variance 5; then 10 with alpha 0.2: mean 6, variance 0.8·(5 + 5·1) = 8.
      assert.equal(t.n, 5);
      assert.ok(Math.abs(t.mean - 6) < 1e-12 && Math.abs(t.variance - 8) < 1e-12, JSON.stringify(t));
      assert.deepEqual(t.history, [4, 6, 8, 10]);
      // A smaller keep trims at once; a larger one keeps what there is.
      const [small] = await s.profileUpdate([{ key: 'alpha', amount: 0, ...cfg, keep: 2, now: at(minute), inspect: true }]);
      assert.deepEqual(small.timeframes[0].history, [8, 10]);
    } finally {
      await s.close();
    }
  });

  it('profileUpdate: clipK caps a spike at mean + clipK·√variance once n ≥ clipAfter, never a low bucket', async () => {
    const s = await make();
    try {
      const run = async (key: string, clipAfter: number, amounts: number[]) => {
        let last: ProfileResult | undefined;
        let minute = 0;
        for (const amount of [...amounts, 0]) [last] = await s.profileUpdate([{ key, amount, ...base, timeframes: [1], span: 9, keep: 10, clipK: 1, clipAfter, now: at(minute++) }]);
        return last!.timeframes[0];
      };
      // 2, 6, 4: mean 4, variance 8/3. Then 100 with n = 3 ≥ 3: learned as 4 + √(8/3).
      const capped = await run('clip', 3, [2, 6, 4, 100]);
      const cap = 4 + Math.sqrt(8 / 3);
      assert.equal(capped.n, 4);
      assert.ok(Math.abs(capped.history[3] - cap) < 1e-12, String(capped.history));
      assert.ok(Math.abs(capped.mean - (4 + Math.sqrt(8 / 3) / 4)) < 1e-12, String(capped.mean));
      // clipAfter 4: n = 3 is too early, the spike is learned whole.
      assert.deepEqual((await run('early', 4, [2, 6, 4, 100])).history, [2, 6, 4, 100]);
      // A low bucket is not raised to the mean.
      assert.deepEqual((await run('low', 3, [2, 6, 4, 1])).history, [2, 6, 4, 1]);
    } finally {
      await s.close();
    }
  });

  it('profileUpdate: a clock behind never rewrites history; inspect computes (folds, amount) but writes nothing', async () => {
    const s = await make();
    try {
      const cfg = { ...base, timeframes: [1, 5] };
      const call = (minute: number, amount: number, inspect = false, ms?: number) => s.profileUpdate([{ key: 'behind', amount, ...cfg, now: at(minute, ms), inspect }]).then((x) => x[0].timeframes);
      await call(10, 1);
      await call(11, 2);
      // Minute 10 again (another host, a little behind): counted at minute 10; nothing learned, no bucket goes back.
      assert.deepEqual(await call(10, 4, false, 59_999), [
        { minutes: 1, count: 5, n: 1, mean: 1, variance: 0, history: [1] },
        { minutes: 5, count: 5, n: 0, mean: 0, variance: 0, history: [] },
      ]);
      // Way behind (before the ring): the amount goes to the ring's oldest minute (7).
      assert.deepEqual((await call(2, 8))[1], { minutes: 5, count: 8, n: 0, mean: 0, variance: 0, history: [] });
      // Back on time: minute 11 (2) is learned; the 4 put into minute 10 stays in a closed bucket.
      const look = await call(12, 3, true);
      assert.deepEqual(look, [
        { minutes: 1, count: 3, n: 2, mean: 1.5, variance: 0.25, history: [1, 2] },
        { minutes: 5, count: 10, n: 0, mean: 0, variance: 0, history: [] },
      ]);
      // The inspection wrote nothing: the same call again gives the same, and a real one too.
      assert.deepEqual(await call(12, 3, true), look);
      assert.deepEqual(await call(12, 3), look);
      assert.deepEqual((await call(12, 0, true))[1].count, 10, 'minute 7 has left the ring');
    } finally {
      await s.close();
    }
  });

  it('profileUpdate: a changed configuration: a new timeframe starts fresh, a dropped one is left alone and found again', async () => {
    const s = await make();
    try {
      const call = (minute: number, amount: number, timeframes: number[]) => s.profileUpdate([{ key: 'cfg', amount, ...base, timeframes, now: at(minute) }]).then((x) => x[0].timeframes);
      for (let m = 0; m < 12; m++) await call(m, 2, [1, 5]);
      const before = await call(12, 2, [1, 5]);
      assert.deepEqual(before[1], { minutes: 5, count: 10, n: 2, mean: 10, variance: 0, history: [10, 10] });
      const changed = await call(13, 2, [1, 10]);
      assert.deepEqual(changed[1], { minutes: 10, count: 12, n: 0, mean: 0, variance: 0, history: [] }, 'the ring grew: minutes 4–7 had left the old one');
      assert.deepEqual((await call(14, 2, [1, 5]))[1], { minutes: 5, count: 10, n: 2, mean: 10, variance: 0, history: [10, 10] }, 'f5 kept');
      assert.deepEqual((await call(20, 0, [1, 10]))[1], { minutes: 10, count: 8, n: 1, mean: 10, variance: 0, history: [10] }, 'bucket 1 (minutes 10–19): 10–14 as the shorter ring held them');
    } finally {
      await s.close();
    }
  });

  it('profileUpdate: a hash with other fields (a rate-limit label) is used as it is', async () => {
    const s = await make();
    try {
      await s.rateAdmin('odd', { label: 'x' }); // a hash with an unrelated field, on both stores
      const [r] = await s.profileUpdate([{ key: 'odd', amount: 2, ...base, now: at(0) }]);
      assert.deepEqual(r.timeframes.map((t) => t.count), [2, 2]);
    } finally {
      await s.close();
    }
  });

  it(`profileUpdate property: ${runs.subjects} random subjects × ${runs.steps} steps, batched: every result exactly as the model`, async () => {
    const s = await make();
    let checked = 0;
    try {
      for (let first = 0; first < runs.subjects; first += runs.batch) {
        const subjects = Array.from({ length: Math.min(runs.batch, runs.subjects - first) }, (_, i) => {
          const seed = 0xfeed + first + i;
          const rng = prng(seed);
          return { seed, rng, cfg: randomProfileConfig(rng), model: new ProfileModel(), t: T0 + rng.int(1e9), key: `prop:${seed}` };
        });
        for (let step = 0; step < runs.steps; step++) {
          const requests: ProfileRequest[] = subjects.map((x) => {
            const r = x.rng.next();
            x.t += r < 0.3 ? x.rng.int(20_000) : r < 0.8 ? x.rng.int(120_000) : r < 0.97 ? x.rng.int(900_000) : x.rng.int(7_200_000);
            const amount = x.rng.next() < 0.2 ? 0 : x.rng.next() < 0.05 ? 50 + x.rng.int(500) : 1 + x.rng.int(6);
            return { key: x.key, amount, ...x.cfg, now: x.t, inspect: x.rng.next() < 0.1 };
          });
          const results = await s.profileUpdate(requests);
          subjects.forEach((x, i) => {
            assertSameProfile(results[i], x.model.update(requests[i], x.t), `seed ${x.seed} step ${step} ${JSON.stringify(requests[i])}`);
            checked++;
          });
        }
      }
    } finally {
      await s.close();
    }
    assert.equal(checked, runs.subjects * runs.steps);
  });
}
