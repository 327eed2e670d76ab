/**
 * The behaviour every store owes plugins, run against each implementation: the in-memory store
 * (store.test.ts) and the Redis store against a real redis-server (redis.test.ts).
 */
import assert from 'node:assert/strict';
import { afterEach, it } from 'node:test';
import type { Store } from '../../src/store/index.ts';
import { eventually } from '../helpers/redis.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
