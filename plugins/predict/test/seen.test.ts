/**
 * Recipient memories (`Store.seenAdd`): the reference computation on known inputs, and the Redis
 * script against it on random calls (the contract in contract.ts covers each store's behaviour).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MemoryStore, RedisStore } from 'themis-milter';
import { prng } from 'themis-milter/testing';
import { seenAdd } from '../src/store/index.ts';
import { seenCompute } from '../src/store/seen.ts';
import { redisAvailable, startRedis, type RedisServer } from '../../../test/helpers/redis.ts';

const skipRedis = redisAvailable() ? false : 'redis-server not installed';

describe('seenCompute', () => {
  it('moves a seen member to the most recent end, appends a new one, drops the oldest beyond keep; tells how deep each known one was', () => {
    assert.deepEqual(seenCompute('aabbcc', ['bb', 'dd'], 3, 2), { text: 'ccbbdd', result: { fresh: [false, true], depth: [1, -1], size: 3 } });
    assert.deepEqual(seenCompute(undefined, ['x', 'y', 'x', 'z'], 2, 1), { text: 'xz', result: { fresh: [true, true, false, true], depth: [-1, -1, 1, -1], size: 2 } });
    // Width 3 over "abcabc": "bca" occurs at offset 1 only, which is not a member.
    assert.deepEqual(seenCompute('abcabc', ['bca'], 5, 3), { text: 'abcabcbca', result: { fresh: [true], depth: [-1], size: 3 } });
    assert.deepEqual(seenCompute('abc', ['ab'], 5, 2), { text: 'ab', result: { fresh: [true], depth: [-1], size: 1 } }, 'a text of another width starts again');
  });
});

describe('recipient memories: RedisStore against redis-server', { skip: skipRedis }, () => {
  let server: RedisServer;
  const opened: RedisStore[] = [];
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await Promise.all(opened.map((s) => s.close()));
    await server?.stop();
  });

  it('answers and stores exactly what the in-memory store does, over random calls (keeps, widths, repeats, inspections)', async () => {
    const redis = new RedisStore({ url: server.url, keyPrefix: 'seen-parity:', commandTimeout: 2000 });
    opened.push(redis);
    const memory = new MemoryStore();
    const r = prng(7);
    const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_';
    let calls = 0;
    let fresh = 0;
    let deepest = -1;
    for (let step = 0; step < 1500; step++) {
      const key = `k${r.int(6)}`;
      const width = key === 'k5' ? 1 + r.int(3) : 2; // k5 changes width now and then: both start again
      const members = Array.from({ length: r.int(6) }, () => Array.from({ length: width }, () => alphabet[r.int(6)]).join(''));
      const options = { keep: 1 + r.int(12), ttlMs: 60_000, inspect: r.next() < 0.1 };
      const [a, b] = await Promise.all([seenAdd(memory, key, members, options), seenAdd(redis, key, members, options)]);
      assert.deepEqual(b, a, `step ${step}: ${key} ${JSON.stringify(members)} ${JSON.stringify(options)}`);
      assert.equal(await redis.get(key), await memory.get(key), `step ${step}: stored text`);
      calls++;
      fresh += a.fresh.filter(Boolean).length;
      deepest = Math.max(deepest, ...a.depth);
    }
    assert.ok(fresh > 500 && fresh < calls * 5, `both new and known members were exercised (${fresh} new)`);
    assert.ok(deepest >= 5, `known members were found deep in the memory too (deepest ${deepest})`);
    await memory.close();
  });
});
