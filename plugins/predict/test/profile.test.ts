// Rate profiles (Store.profileUpdate): the pure algorithm of profile.ts on known series and its stored
// fields; then the profile contract against the in-memory store, a real redis-server and a real
// 3-master Redis Cluster (all with testClock); then what only Redis shows: the same doubles as the
// in-memory store to the last bit over random sequences (clock behind, configuration changes,
// inspections), the fields as stored, the expiry, one round trip per batch, the server's clock.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { MemoryStore, RedisStore, StoreError, type Store } from 'themis-milter';
import { prng } from 'themis-milter/testing';
import { profileUpdate, type ProfileRequest, type ProfileResult } from '../src/store/index.ts';
import { parseTrait, profileCompute, validateProfileRequest } from '../src/store/profile.ts';
import { PROFILE_UPDATE_LUA, parseProfileReply, profileUpdateArgs } from '../src/store/profile-lua.ts';
import { countRoundTrips, rawCluster, redisAvailable, redisCliAvailable, startRedis, startRedisCluster, type RedisClusterServers, type RedisServer } from '../../../test/helpers/redis.ts';
import { assertSameProfile, profileContract, randomProfileConfig } from './store-contract.ts';

const skipRedis = redisAvailable() ? false : 'redis-server not installed';
const skipCluster = skipRedis || (redisCliAvailable() ? false : 'redis-cli not installed');

const T0 = 1_700_000_000_000 - (1_700_000_000_000 % 3_600_000);
const MIN0 = T0 / 60_000;
const at = (minute: number, ms = 5_000) => T0 + minute * 60_000 + ms;
const base = { key: 'k', timeframes: [1, 5], span: 3, keep: 3, clipK: 0, clipAfter: 0, ttlMs: 60_000 };

/** One call on a hash: computed, then written unless it inspects (what MemoryStore does). */
function apply(hash: Map<string, string>, r: ProfileRequest, now: number): ProfileResult {
  const { result, fields } = profileCompute(hash, r, now);
  if (!r.inspect) for (const [f, v] of fields) hash.set(f, v);
  return result;
}

const ring = (start: number, ...counts: number[]) => [start, ...counts].join(',');

describe('profile algorithm (profile.ts)', () => {
  it('the first call learns nothing and stores the ring and each timeframe: "start,c…" and "bucket,n,mean,variance"', () => {
    const h = new Map<string, string>();
    const r = apply(h, { ...base, amount: 3 }, at(12));
    assert.deepEqual(r.timeframes, [
      { minutes: 1, count: 3, n: 0, mean: 0, variance: 0, history: [] },
      { minutes: 5, count: 3, n: 0, mean: 0, variance: 0, history: [] },
    ]);
    assert.deepEqual(Object.fromEntries(h), { r: ring(MIN0 + 8, 0, 0, 0, 0, 3), f1: `${MIN0 + 12},0,0,0`, f5: `${(MIN0 + 10) / 5},0,0,0` });
  });

  it('one call a minute, amounts 3 0 5 2 4 1: empty buckets skipped, alpha 1/n then 2/(span+1), keep, the 5-minute bucket at minute 5, sliding counts', () => {
    const h = new Map<string, string>();
    const results = [3, 0, 5, 2, 4, 1].map((amount, m) => apply(h, { ...base, amount }, at(m)));
    assert.deepEqual(results.map((r) => r.timeframes.map((t) => t.count)), [[3, 3], [0, 3], [5, 8], [2, 10], [4, 14], [1, 12]]);
    assert.deepEqual(results.map((r) => r.timeframes[0].n), [0, 1, 1, 2, 3, 4]);
    assert.deepEqual(results.map((r) => r.timeframes[1].n), [0, 0, 0, 0, 0, 1]);
    assert.deepEqual(results[5].timeframes, [
      { minutes: 1, count: 1, n: 4, mean: 3.5, variance: 1, history: [5, 2, 4] },
      { minutes: 5, count: 12, n: 1, mean: 14, variance: 0, history: [14] },
    ]);
    assert.equal(h.get('f1'), `${MIN0 + 5},4,3.5,1,5,2,4`);
    assert.equal(h.get('f5'), `${MIN0 / 5 + 1},1,14,0,14`);
    assert.equal(h.get('r'), ring(MIN0 + 1, 0, 5, 2, 4, 1));
  });

  it('many calls in one minute add up; the bucket closes only when the minute crosses a multiple of T', () => {
    const h = new Map<string, string>();
    for (let m = 0; m < 5; m++) for (let k = 0; k < 3; k++) apply(h, { ...base, timeframes: [5], amount: 1 }, at(m, k * 10_000));
    assert.equal(apply(h, { ...base, timeframes: [5], amount: 0 }, at(4, 59_999)).timeframes[0].n, 0);
    assert.deepEqual(apply(h, { ...base, timeframes: [5], amount: 0 }, at(5, 0)).timeframes[0], { minutes: 5, count: 12, n: 1, mean: 15, variance: 0, history: [15] });
  });

  it('learns the closed bucket from the ring before it moves on, however long the gap; the buckets between are skipped', () => {
    const h = new Map<string, string>();
    apply(h, { ...base, timeframes: [10], amount: 3 }, at(10));
    apply(h, { ...base, timeframes: [10], amount: 4 }, at(19));
    const r = apply(h, { ...base, timeframes: [10], amount: 1 }, at(500));
    assert.deepEqual(r.timeframes[0], { minutes: 10, count: 1, n: 1, mean: 7, variance: 0, history: [7] });
    assert.equal(h.get('r'), ring(MIN0 + 491, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1));
    assert.equal(h.get('f10'), `${MIN0 / 10 + 50},1,7,0,7`);
  });

  it('clip: a spike is learned as mean + clipK·√variance once n ≥ clipAfter; the stored double reads back exactly', () => {
    const h = new Map<string, string>();
    const cfg = { ...base, timeframes: [1], span: 9, keep: 10, clipK: 2, clipAfter: 3 };
    [2, 6, 4, 1000, 0].forEach((amount, m) => apply(h, { ...cfg, amount }, at(m)));
    const [t] = apply(h, { ...cfg, amount: 0, inspect: true }, at(5)).timeframes;
    const cap = 4 + 2 * Math.sqrt(8 / 3);
    assert.equal(t.history[3], cap);
    assert.equal(Number(h.get('f1')!.split(',')[7]), cap);
    assert.equal(Number(h.get('f1')!.split(',')[2]), t.mean);
    assert.equal(Number(h.get('f1')!.split(',')[3]), t.variance);
  });

  it('a clock behind: the ring is not moved back; the amount goes to its minute, or to the oldest; buckets never go back', () => {
    const h = new Map<string, string>();
    apply(h, { ...base, amount: 1 }, at(20));
    const before = new Map(h);
    const r = apply(h, { ...base, amount: 2 }, at(18));
    assert.deepEqual(r.timeframes.map((t) => t.count), [2, 2], 'minutes (M − T, M]: minute 20 is after M');
    assert.equal(h.get('r'), ring(MIN0 + 16, 0, 0, 2, 0, 1));
    assert.equal(h.get('f1'), before.get('f1'));
    assert.equal(h.get('f5'), before.get('f5'));
    const far = apply(h, { ...base, amount: 5 }, at(3));
    assert.deepEqual(far.timeframes.map((t) => t.count), [5, 5], 'counted at minute 16, the oldest');
    assert.equal(h.get('r'), ring(MIN0 + 16, 5, 0, 2, 0, 1));
  });

  it('inspect computes the same as an update but the hash is not changed (profileCompute never writes)', () => {
    const h = new Map<string, string>();
    [3, 0, 5].forEach((amount, m) => apply(h, { ...base, amount }, at(m)));
    const snapshot = JSON.stringify([...h]);
    const look = profileCompute(h, { ...base, amount: 2, inspect: true }, at(7));
    assert.equal(JSON.stringify([...h]), snapshot);
    assert.deepEqual(look.result, apply(new Map(h), { ...base, amount: 2 }, at(7)));
  });

  it('a changed configuration: fields of timeframes no longer asked are left alone; a new one starts fresh; the ring takes the new length', () => {
    const h = new Map<string, string>();
    [1, 1, 1, 1, 1, 1].forEach((amount, m) => apply(h, { ...base, amount }, at(m)));
    const f5 = h.get('f5');
    const r = apply(h, { ...base, timeframes: [2, 3], amount: 1 }, at(6));
    assert.equal(h.get('f5'), f5);
    assert.ok(h.has('f1'));
    assert.deepEqual(r.timeframes.map((t) => [t.count, t.n]), [[2, 0], [3, 0]]);
    assert.equal(h.get('r'), ring(MIN0 + 4, 1, 1, 1));
  });

  it('fields that cannot be read are taken as absent', () => {
    for (const [r, f1] of [['garbage', 'x'], ['', '1,2'], ['5', `${MIN0},,0,0`], ['[1]', `${MIN0}.5,1,0,0`], ['1,"a"', `${MIN0},1.5,0,0`], ['null,1', `${MIN0},1,nan,0`]]) {
      const h = new Map([['r', r], ['f1', f1]]);
      const res = apply(h, { ...base, timeframes: [1], amount: 2 }, at(1));
      assert.deepEqual(res.timeframes[0], { minutes: 1, count: 2, n: 0, mean: 0, variance: 0, history: [] }, `${r} / ${f1}`);
      assert.equal(h.get('r'), ring(MIN0 + 1, 2));
    }
  });

  it('validation names the request and the field', () => {
    assert.throws(
      () => validateProfileRequest({ ...base, amount: 1, keep: 0 }, 3),
      (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_ARGUMENT' && /requests\[3\]\.keep/.test(e.message) && /PREDICT\.PROFILE/.test(e.message),
    );
  });

  it('the Lua script reads its arguments in the order they are sent, and the reply parses (Buffers too)', () => {
    const args = profileUpdateArgs({ ...base, amount: 7, span: 2.5, clipK: 1e-7, ttlMs: 1000.2, inspect: true }, 1234.9);
    assert.deepEqual(args, ['1234', '7', '2.5', '3', '1e-7', '0', '1001', '1', '2', '1', '5']);
    assert.match(PROFILE_UPDATE_LUA, /local nt = tonumber\(ARGV\[9\]\)/);
    const reply = [[1, 4, 2, Buffer.from('0.10000000000000001'), '2.5', Buffer.from('1,2.5')], [5, 9, 0, '0', '0', '']];
    assert.deepEqual(parseProfileReply({ ...base, amount: 0 }, reply).timeframes, [
      { minutes: 1, count: 4, n: 2, mean: 0.1, variance: 2.5, history: [1, 2.5] },
      { minutes: 5, count: 9, n: 0, mean: 0, variance: 0, history: [] },
    ]);
  });
});

describe('profiles: MemoryStore', () => {
  profileContract(async () => new MemoryStore({ testClock: true }), { subjects: 24, batch: 6, steps: 300 });

  it('without testClock the real clock decides: now is ignored', async () => {
    const s = new MemoryStore();
    await profileUpdate(s, [{ ...base, amount: 1, now: 0 }]);
    const hash = (s as unknown as { data: Map<string, { value: Map<string, string> }> }).data.get('k')!.value;
    assert.ok(Math.abs(Number(hash.get('r')!.split(',')[0]) + 4 - Math.floor(Date.now() / 60_000)) <= 1, hash.get('r'));
    await s.close();
  });
});

/** A fresh RedisStore with a prefix of its own, honouring `now` unless told otherwise. */
function redisMaker(options: () => ConstructorParameters<typeof RedisStore>[0], opened: Set<RedisStore>) {
  return async (o: { testClock?: boolean } = {}): Promise<RedisStore> => {
    const s = new RedisStore(options(), { testClock: o.testClock ?? true });
    opened.add(s);
    await s.connect(5000);
    return s;
  };
}

/** A stored profile hash with every number parsed (Lua writes %.17g, JavaScript the shortest form: the same doubles); traits (`t…`, integers only) as written. */
const parsed = (hash: Record<string, string>) => Object.fromEntries(Object.entries(hash).map(([f, v]) => [f, f.startsWith('t') ? v : v.split(',').map(Number)]));

/** Random traits for a request (or none, a third of the time): few values so they repeat, small max and cap so eviction and halving happen. */
function randomTraits(rng: ReturnType<typeof prng>): ProfileRequest['traits'] {
  if (rng.next() < 0.33) return undefined;
  const pool = ['10.0.0.0/24', '10.0.1.0/24', '2001:db8:0:1::/64', 'none', 'Xy-_9', 'a', 'b', 'c', 'd', 'e'];
  const names = rng.next() < 0.5 ? ['n', 'c'] : ['n'];
  return names.map((name) => ({ name, value: rng.pick(pool), max: 1 + rng.int(5), cap: 2 + rng.int(12) }));
}

/**
 * Random sequences on a MemoryStore and `redis` side by side: jittered clocks (sometimes a minute
 * behind), configuration changes, inspections, several keys per batch. Every result must be equal to
 * the bit, and so must the stored fields at the end.
 */
async function sameAsMemory(redis: Store, hgetall: (key: string) => Promise<Record<string, string>>, seeds: number, steps: number): Promise<number> {
  const memory = new MemoryStore({ testClock: true });
  let compared = 0;
  try {
    for (let seed = 1; seed <= seeds; seed++) {
      const rng = prng(seed * 104_729);
      const keys = Array.from({ length: 3 }, (_, i) => `same:${seed}:${i}`);
      let cfg = randomProfileConfig(rng);
      let t = T0 + rng.int(1e9);
      for (let step = 0; step < steps; step++) {
        if (rng.next() < 0.03) cfg = randomProfileConfig(rng);
        const r = rng.next();
        t += r < 0.4 ? rng.int(30_000) : r < 0.85 ? rng.int(150_000) : r < 0.98 ? rng.int(1_800_000) : rng.int(10_000_000);
        const requests: ProfileRequest[] = Array.from({ length: 1 + rng.int(4) }, () => {
          const behind = rng.next() < 0.1 ? rng.int(rng.next() < 0.8 ? 90_000 : 5_000_000) : 0;
          const amount = rng.next() < 0.2 ? 0 : rng.next() < 0.05 ? 100 + rng.int(5000) : 1 + rng.int(9);
          const traits = randomTraits(rng);
          return { key: rng.pick(keys), amount, ...cfg, now: Math.max(0, t - behind) + rng.next(), inspect: rng.next() < 0.1, ...(traits ? { traits } : {}) };
        });
        const [a, b] = await Promise.all([profileUpdate(memory, requests), profileUpdate(redis, requests)]);
        a.forEach((x, i) => assertSameProfile(b[i], x, `seed ${seed} step ${step} request ${i} ${JSON.stringify(requests[i])}`));
        compared += a.length;
      }
      for (const key of keys) {
        const m = (memory as unknown as { data: Map<string, { value: Map<string, string> }> }).data.get(key)?.value;
        assert.deepStrictEqual(parsed(await hgetall(key)), parsed(Object.fromEntries(m ?? [])), `seed ${seed} ${key}: stored fields`);
      }
    }
  } finally {
    await memory.close();
  }
  return compared;
}

describe('profiles: RedisStore against redis-server', { skip: skipRedis }, () => {
  let server: RedisServer;
  let raw: Redis;
  let n = 0;
  const opened = new Set<RedisStore>();
  const make = redisMaker(() => ({ url: server.url, keyPrefix: `pf${++n}:`, commandTimeout: 2000 }), opened);
  before(async () => {
    server = await startRedis();
    raw = new Redis(server.url, { retryStrategy: () => null });
  });
  after(async () => {
    await Promise.all([...opened].map((s) => s.close()));
    raw?.disconnect();
    await server?.stop();
  });

  profileContract(() => make(), { subjects: 24, batch: 6, steps: 300 });

  it('the same results as MemoryStore to the last bit, and the same stored numbers: clock behind, configuration changes, inspections, batches', async () => {
    const s = await make();
    const compared = await sameAsMemory(s, (key) => raw.hgetall(s.keyPrefix + key), 30, 150);
    assert.ok(compared > 30 * 150, String(compared));
  });

  it('stores the ring and doubles as %.17g; sets PTTL on an update, not on an inspection', async () => {
    const s = await make();
    const cfg = { ...base, timeframes: [1], span: 2, keep: 5, ttlMs: 90_000 };
    for (const [m, amount] of [[0, 1], [1, 2], [2, 0]]) await profileUpdate(s, [{ ...cfg, amount, now: at(m) }]);
    const key = `${s.keyPrefix}k`;
    assert.deepEqual(await raw.hgetall(key), { r: `${MIN0 + 2},0`, f1: `${MIN0 + 2},2,1.6666666666666665,0.22222222222222224,1,2` });
    const ttl = await raw.pttl(key);
    assert.ok(ttl > 85_000 && ttl <= 90_000, String(ttl));
    await raw.pexpire(key, 5000);
    await profileUpdate(s, [{ ...cfg, amount: 3, now: at(3), inspect: true }]);
    assert.ok((await raw.pttl(key)) <= 5000, 'an inspection leaves the expiry');
    assert.equal(await raw.hget(key, 'r'), `${MIN0 + 2},0`, 'and writes nothing');
  });

  it('traits: the same answers and the same stored text as the TypeScript twin on a known series; unreadable trait fields start again', async () => {
    const s = await make();
    const memory = new MemoryStore({ testClock: true });
    const key = `${s.keyPrefix}tr`;
    const calls: [string, number][] = [['a', 0], ['a', 1], ['b', 1], ['c', 61], ['a', 122], ['d', 183], ['b', 250]];
    for (const [value, minute] of calls) {
      const r = { ...base, key: 'tr', amount: 1, now: at(minute), traits: [{ name: 'n', value, max: 2, cap: 4, young: 2 }, { name: 'c', value: 'none', max: 8, cap: 200 }] };
      const [a, b] = await Promise.all([profileUpdate(s, [r]), profileUpdate(memory, [r])]);
      assert.deepStrictEqual(a, b, `${value} at ${minute}`);
    }
    const stored = await raw.hgetall(key);
    assert.equal(stored.tn, (memory as unknown as { data: Map<string, { value: Map<string, string> }> }).data.get('tr')!.value.get('tn'));
    assert.match(stored.tn, /^\d+,\d+(;[^,;]+,\d+,\d+,\d+){1,2}$/);
    // A trait stored before first hours were kept (value,count,hour) reads the same on both: old values, never young.
    const mem = (memory as unknown as { data: Map<string, { value: Map<string, string> }> }).data.get('tr')!.value;
    await raw.hset(key, 'tn', '6,4;a,2,4;c,2,4');
    mem.set('tn', '6,4;a,2,4;c,2,4');
    const old = { ...base, key: 'tr', amount: 0, now: at(299), traits: [{ name: 'n', value: 'e', max: 3, cap: 40, young: 24 }] };
    const [x, y] = await Promise.all([profileUpdate(s, [old]), profileUpdate(memory, [old])]);
    assert.deepStrictEqual(x, y);
    assert.deepEqual([x[0].traits![0].youngValues, x[0].traits![0].first], [0, 0]);
    const h = Math.floor(at(299) / 3_600_000);
    assert.equal(await raw.hget(key, 'tn'), `7,5;a,2,4,0;c,2,4,0;e,1,${h},${h}`);
    assert.equal(mem.get('tn'), `7,5;a,2,4,0;c,2,4,0;e,1,${h},${h}`);
    for (const odd of ['x', '1,1;', '1,1;a,1', '1,1;a,1,2;;b,1,2', '1234567890123456,1', '1,1 ;a,1,2', '1,1;a,b,c', '1,1;a,1,2,3,4', '1,1;a,1,2,x']) {
      await raw.hset(key, 'tn', odd);
      const r = { ...base, key: 'tr', amount: 0, now: at(300), inspect: true, traits: [{ name: 'n', value: 'a', max: 2, cap: 4 }] };
      assert.equal(parseTrait(odd), undefined, odd);
      const [res] = await profileUpdate(s, [r]);
      assert.deepEqual(res.traits, [{ name: 'n', total: 0, distinct: 0, count: 0, hour: 0, size: 0, now: Math.floor(at(300) / 3_600_000), first: 0, youngValues: 0, youngHours: 0 }], odd);
    }
    await memory.close();
  });

  it('fields that cannot be read (written by something else) are taken as absent and replaced', async () => {
    const s = await make();
    const key = `${s.keyPrefix}odd`;
    await raw.hset(key, 'r', 'garbage', 'f1', '1,2', 'f5', `${MIN0 / 5},1,nan,0`, 'other', 'kept');
    const [r] = await profileUpdate(s, [{ ...base, key: 'odd', amount: 2, now: at(1) }]);
    assert.deepEqual(r.timeframes, [
      { minutes: 1, count: 2, n: 0, mean: 0, variance: 0, history: [] },
      { minutes: 5, count: 2, n: 0, mean: 0, variance: 0, history: [] },
    ]);
    assert.deepEqual(await raw.hgetall(key), { r: ring(MIN0 - 3, 0, 0, 0, 0, 2), f1: `${MIN0 + 1},0,0,0`, f5: `${MIN0 / 5},0,0,0`, other: 'kept' });
  });

  it('a batch of three keys: one write on the socket, three EVALSHA and nothing else from the client', async () => {
    const s = await make();
    const requests = ['a', 'b', 'c'].map((key) => ({ ...base, key, amount: 1, now: at(0) }));
    await profileUpdate(s, requests); // loads the script (NOSCRIPT → EVAL) on a fresh server
    const { result: results, writes, commands: delta } = await countRoundTrips(s, raw, () => profileUpdate(s, requests));
    assert.deepEqual(results.map((r) => r.timeframes[0].count), [2, 2, 2]);
    assert.equal(delta.get('evalsha'), 3);
    const byScripts = new Set(['hmget', 'hset', 'pexpire']);
    assert.deepEqual([...delta.keys()].filter((name) => name !== 'evalsha' && !byScripts.has(name)), []);
    assert.equal(writes, 1, 'one network write: one round trip');
  });

  it('survives a flushed script cache (NOSCRIPT → EVAL)', async () => {
    const s = await make();
    await profileUpdate(s, [{ ...base, amount: 1, now: at(0) }]);
    await raw.script('FLUSH');
    const results = await profileUpdate(s, ['k', 'other'].map((key) => ({ ...base, key, amount: 1, now: at(0) })));
    assert.deepEqual(results.map((r) => r.timeframes[0].count), [2, 1]);
  });

  it("without testClock the server's TIME decides: a request's now is ignored", async () => {
    const s = await make({ testClock: false });
    await profileUpdate(s, [{ ...base, amount: 1, now: 0 }]);
    const [sec] = await raw.time();
    const start = Number((await raw.hget(`${s.keyPrefix}k`, 'r'))!.split(',')[0]);
    assert.ok(Math.abs(start + 4 - Math.floor(Number(sec) / 60)) <= 1, String(start));
  });

  it('a WRONGTYPE key rejects the batch with a coded error', async () => {
    const s = await make();
    await s.set('str', 'x');
    await assert.rejects(
      profileUpdate(s, [{ ...base, key: 'fine', amount: 1 }, { ...base, key: 'str', amount: 1 }]),
      (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_WRONGTYPE' && /PREDICT\.PROFILE/.test(e.message),
    );
  });
});

describe('profiles: RedisStore on a Redis Cluster (3 masters)', { skip: skipCluster }, () => {
  let cluster: RedisClusterServers;
  let raw: Cluster;
  let n = 0;
  const opened = new Set<RedisStore>();
  const make = redisMaker(() => ({ cluster: { nodes: cluster.nodes }, keyPrefix: `pc${++n}:`, commandTimeout: 2000 }), opened);
  before(async () => {
    cluster = await startRedisCluster(3);
    raw = await rawCluster(cluster.nodes);
  });
  after(async () => {
    await Promise.all([...opened].map((s) => s.close()));
    raw?.disconnect();
    await cluster?.stop();
  });

  profileContract(() => make(), { subjects: 18, batch: 6, steps: 200 });

  it('keys on every master in one batch (no CROSSSLOT), the same results as MemoryStore to the last bit', async () => {
    const s = await make();
    const compared = await sameAsMemory(s, (key) => raw.hgetall(s.keyPrefix + key), 10, 100);
    assert.ok(compared > 1000, String(compared));
    const perNode = await Promise.all(raw.nodes('master').map((node) => node.keys(`${s.keyPrefix}same:*`)));
    assert.ok(perNode.filter((k) => k.length > 0).length >= 2, `keys on several masters: ${perNode.map((k) => k.length).join(',')}`);
  });
});
