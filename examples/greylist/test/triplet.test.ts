// GREYLIST.TRIPLET: the Lua script and its in-memory twin give the same answers and leave the same
// key behind (fields and TTL), on a real redis-server and a real 3-master Cluster; then the plugin
// on a real Redis, where the script reads Redis' own clock.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RedisStore, defineAtomicOperation, isStoreError, replyText } from 'themis-milter';
import { atomicOperationContract, createTestKernel, prng, redisAvailable, startRedis, type RedisServer } from 'themis-milter/testing';
import greylist, { TRIPLET } from '../src/index.ts';

const T0 = 1_750_000_000_000;
const DELAY = 300_000;
const WINDOW = 2 * 86_400_000;
const EXPIRY = 36 * 86_400_000;
const check = (key: string, now: number | undefined, delayMs = DELAY, retryWindowMs = WINDOW, expiryMs = EXPIRY) => ({ key, args: { delayMs, retryWindowMs, expiryMs }, now });

/** What a triplet's key holds: its fields and its TTL in whole seconds (rounded up: a few ms pass between the calls). */
const PEEK = defineAtomicOperation({
  name: 'GREYLISTTEST.PEEK',
  type: 'hash',
  lua: `return {redis.call('HGET', KEYS[1], 'first') or '', redis.call('HGET', KEYS[1], 'passed') or '', redis.call('HGET', KEYS[1], 'n') or '', redis.call('PTTL', KEYS[1])}`,
  encode: () => [],
  decode: (reply) => {
    const [first, passed, n, pttl] = reply as unknown[];
    return { first: replyText(first), passed: replyText(passed), n: replyText(n), ttl: seconds(Number(pttl)) };
  },
  memory: (key) => ({ first: key.fields.get('first') ?? '', passed: key.fields.get('passed') ?? '', n: key.fields.get('n') ?? '', ttl: seconds(key.pttl()) }),
});

/** Writes one field of a key, as something other than the script might have. */
const POKE = defineAtomicOperation({
  name: 'GREYLISTTEST.POKE',
  type: 'hash',
  lua: `return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])`,
  encode: (a: { field: string; value: string }) => [a.field, a.value],
  decode: (reply) => Number(reply),
  memory(key, a) {
    const added = key.fields.has(a.field) ? 0 : 1;
    key.fields.set(a.field, a.value);
    return added;
  },
});

function seconds(pttl: number): number {
  return pttl < 0 ? pttl : Math.ceil(pttl / 1000);
}

atomicOperationContract(TRIPLET, {
  scenarios: {
    'new → early → passed → known, and what each state leaves in the key': async (run, store) => {
      const steps = [];
      for (const at of [T0, T0 + 1_000, T0 + 299_999, T0 + DELAY, T0 + DELAY + 5_000, T0 + 40 * 86_400_000]) {
        const [state] = await run([check('g:a', at)]);
        const [key] = await store.atomic(PEEK, [{ key: 'g:a', args: {} }]);
        steps.push({ state, key });
      }
      return steps;
    },
    'the boundaries: a retry at exactly the delay and at exactly the window passes; one ms later than the window starts over': async (run) => [
      await run([check('g:d', T0), check('g:w', T0), check('g:late', T0)]),
      await run([check('g:d', T0 + DELAY), check('g:w', T0 + WINDOW), check('g:late', T0 + WINDOW + 1)]),
      await run([check('g:late', T0 + WINDOW + 2)]),
    ],
    'an early retry leaves the TTL of the first attempt alone; starting over resets it': async (run, store) => {
      await run([check('g:t', T0, 60_000, 3_600_000)]);
      const first = await store.atomic(PEEK, [{ key: 'g:t', args: {} }]);
      await run([check('g:t', T0 + 30_000, 60_000, 7_200_000)]);
      const early = await store.atomic(PEEK, [{ key: 'g:t', args: {} }]);
      await run([check('g:t', T0 + 3_600_001, 60_000, 7_200_000)]);
      return { first, early, over: await store.atomic(PEEK, [{ key: 'g:t', args: {} }]) };
    },
    'one batch: several triplets, one of them twice (the second call sees the first)': async (run) => [
      await run([check('g:x', T0), check('g:y', T0), check('g:x', T0 + 1)]),
      await run([check('g:x', T0 + DELAY), check('g:x', T0 + DELAY), check('g:y', T0 + 10)]),
    ],
    'a key the script did not write as expected: a garbage first-seen time starts over': async (run, store) => {
      await run([check('g:z', T0)]);
      await store.atomic(POKE, [{ key: 'g:z', args: { field: 'first', value: 'garbage' } }]);
      const [corrupt] = await store.atomic(PEEK, [{ key: 'g:z', args: {} }]);
      return { corrupt, after: await run([check('g:z', T0 + DELAY)]), left: await store.atomic(PEEK, [{ key: 'g:z', args: {} }]) };
    },
    'invalid arguments are refused before anything runs; a string there is WRONGTYPE': async (run, store) => {
      const refused = await run([check('g:ok', T0), check('g:bad', T0, DELAY, DELAY)]).catch((e: unknown) => (isStoreError(e) ? e.code : e));
      const zero = await run([check('g:ok', T0, 0)]).catch((e: unknown) => (isStoreError(e) ? e.code : e));
      await store.set('g:str', 'x');
      const wrong = await run([check('g:str', T0)]).catch((e: unknown) => (isStoreError(e) ? e.code : e));
      return { refused, zero, wrong, untouched: (await run([check('g:ok', T0 + 1)]))[0] };
    },
    'without a clock from the caller the script reads Redis TIME: new, then early': async (run) => {
      const states = [(await run([check('g:time', undefined)]))[0].state, (await run([check('g:time', undefined)]))[0].state];
      return states;
    },
    '300 seeded random batches of 1 to 6 checks over 30 triplets and three policies': async (run) => {
      const rng = prng(11);
      const policies = [
        [60_000, 600_000, 3_600_000],
        [300_000, 7_200_000, 86_400_000],
        [1_000, 120_000, 300_000],
      ] as const;
      const out = [];
      let now = T0;
      for (let i = 0; i < 300; i++) {
        now += rng.int(240_000);
        const batch = Array.from({ length: 1 + rng.int(6) }, () => {
          const p = rng.int(3);
          return check(`g:p${p}:r${rng.int(30)}`, now, ...policies[p]);
        });
        out.push(await run(batch));
      }
      return out;
    },
  },
});

describe('the plugin on a real Redis (Redis’ own clock)', { skip: redisAvailable() ? false : 'redis-server is not on PATH' }, () => {
  let redis: RedisServer;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  it('greylists the first attempt and the immediate retry; the key is greylist:<policy>:<hash>, alive for the retry window', async (t) => {
    const store = new RedisStore({ url: redis.url, keyPrefix: 'gl-test:' });
    await store.connect();
    const k = await createTestKernel({ plugins: [greylist], policies: [{ name: 'inbound', greylist: { delay: '5m', retryWindow: '2d' } }], store });
    t.after(() => k.close());
    t.after(() => store.close());
    const m = { client: { address: '198.51.100.7' }, from: 'sender@example.org', rcpt: ['rcpt@example.net'] };
    const first = await k.message(m);
    assert.equal(first.recipients[0].reply?.text, 'Greylisted, try again in 300 seconds');
    const again = await k.message(m);
    assert.equal(again.recipients[0].action, 'tempfail');
    assert.match(String(again.recipients[0].reply?.text), /^Greylisted, try again in (299|300) seconds$/);
    const keys: string[] = [];
    for await (const key of store.scanKeys('greylist:')) keys.push(key);
    assert.equal(keys.length, 1);
    assert.match(keys[0], /^greylist:inbound:[0-9a-f]{32}$/);
    const [peek] = await store.atomic(PEEK, [{ key: keys[0], args: {} }]);
    assert.equal(peek.n, '2');
    assert.equal(peek.passed, '');
    assert.ok(peek.ttl > 2 * 86_400 - 5 && peek.ttl <= 2 * 86_400, `TTL ${peek.ttl}s ≈ the retry window`);
  });
});
