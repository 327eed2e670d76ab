// A plugin that is not built in (test/fixtures/greylist) defines its own atomic operation and proves
// it with the exported contract, as any plugin author would: the in-memory twin against a real
// redis-server and a real 3-master Cluster, scenario by scenario; then the plugin runs in the kernel.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StoreError, defineAtomicOperation, isStoreError } from 'themis-milter';
import { atomicOperationContract, createTestKernel, prng } from 'themis-milter/testing';
import greylist, { TRIPLET, tripletKey } from '../fixtures/greylist/index.ts';

const T0 = 1_750_000_000_000;
const check = (key: string, now: number, delayMs = 300_000, ttlMs = 86_400_000) => ({ key, args: { delayMs, ttlMs }, now });

atomicOperationContract(TRIPLET, {
  scenarios: {
    'new, then early, then passed; triplets apart; one batch with a key twice': async (run) => [
      await run([check('g:a', T0)]),
      await run([check('g:a', T0 + 1000), check('g:b', T0 + 1000)]),
      await run([check('g:a', T0 + 300_000), check('g:a', T0 + 300_001), check('g:b', T0 + 2000)]),
    ],
    'the record expires after delay + ttl of its last use, and starts again as new': async (run, store) => {
      const first = await run([check('g:x', T0, 100, 100)]);
      await new Promise((r) => setTimeout(r, 400));
      const keys: string[] = [];
      for await (const k of store.scanKeys('g:')) keys.push(k);
      return { first, keys, again: (await run([check('g:x', T0 + 10_000, 100, 100)]))[0].state };
    },
    'invalid arguments are refused before anything runs; a string there is WRONGTYPE': async (run, store) => {
      const refused = await run([check('g:ok', T0), check('g:bad', T0, 0)]).catch((e: unknown) => (isStoreError(e) ? e.code : e));
      await store.set('g:str', 'x');
      const wrong = await run([check('g:str', T0)]).catch((e: unknown) => (isStoreError(e) ? e.code : e));
      return { refused, wrong, untouched: (await run([check('g:ok', T0 + 1)]))[0] };
    },
    '250 seeded random batches of 1 to 8 checks over 40 triplets': async (run) => {
      const rng = prng(7);
      const out = [];
      let now = T0;
      for (let i = 0; i < 250; i++) {
        now += rng.int(120_000);
        const batch = Array.from({ length: 1 + rng.int(8) }, () => check(`g:r${rng.int(40)}`, now, 60_000 + rng.int(4) * 60_000));
        out.push(await run(batch));
      }
      return out;
    },
  },
});

describe('greylist: a third-party plugin on its own atomic operation', () => {
  it('a new triplet is told to come back (451 4.7.1); a retry after the delay passes; other recipients are their own triplets', async () => {
    const t = await createTestKernel({ plugins: [greylist], policies: [{ name: 'in', greylist: { delay: 150, ttl: 60_000 } }] });
    try {
      const m = { client: { address: '198.51.100.7' }, from: 'a@example.org', rcpt: ['r@example.net'] };
      const first = await t.message(m);
      assert.equal(first.recipients[0].action, 'tempfail');
      assert.equal(first.recipients[0].reply?.code, 451);
      await new Promise((r) => setTimeout(r, 200));
      const retry = await t.message({ ...m, rcpt: ['r@example.net', 'other@example.net'] });
      assert.deepEqual(retry.recipients.map((r) => r.action), ['continue', 'tempfail']);
      assert.equal(tripletKey('198.51.100.7', 'A@example.org', 'R@example.net'), tripletKey('198.51.100.99', 'a@example.org', 'r@example.net'), 'one /24, case-insensitive addresses');
    } finally {
      await t.close();
    }
  });

  it('defineAtomicOperation refuses a malformed definition with a coded error', () => {
    const base = { name: 'X.Y', type: 'hash' as const, lua: 'return 0', encode: () => [], decode: () => 0, memory: () => 0 };
    assert.throws(() => defineAtomicOperation({ ...base, name: 'lowercase.name' }), (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_ARGUMENT' && /PLUGIN\.OPERATION/.test(e.message));
    assert.throws(() => defineAtomicOperation({ ...base, type: 'list' as 'hash' }), /type must be/);
    assert.throws(() => defineAtomicOperation({ ...base, lua: ' ' }), /lua must be/);
    assert.equal(defineAtomicOperation(base).sha.length, 40);
  });
});
