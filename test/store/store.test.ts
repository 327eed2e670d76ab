// The in-memory store (the default): the store contract, and what only it does.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../../src/store/index.ts';
import { storeContract } from '../../src/testing/store-contract.ts';

describe('MemoryStore: the store contract', () => {
  storeContract(() => new MemoryStore());
});

describe('MemoryStore', () => {
  it('delivers on a later tick, never inside the publisher call', async () => {
    const s = new MemoryStore();
    const got: string[] = [];
    await s.subscribe('c', (m) => got.push(m));
    const p = s.publish('c', 'x');
    assert.deepEqual(got, []);
    await p;
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(got, ['x']);
    await s.close();
  });

  it('sweeps expired keys nobody reads again', async () => {
    const s = new MemoryStore(20);
    await s.set('a', '1', 10);
    await s.set('b', '1');
    await new Promise((r) => setTimeout(r, 80));
    assert.equal((s as unknown as { data: Map<string, unknown> }).data.size, 1);
    await s.close();
  });
});
