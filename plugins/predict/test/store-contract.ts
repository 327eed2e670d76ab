/**
 * What predict's store operations owe it on every store: the bounded memory of recently seen members
 * and the rate profiles, run against the in-memory store, a real redis-server and a real Cluster.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { StoreError, defineAtomicOperation, type Store, type StoreErrorCode } from 'themis-milter';
import { eventually } from '../../../test/helpers/redis.ts';
import { freshStores, prng } from 'themis-milter/testing';
import { profileUpdate, seenAdd, type ProfileRequest, type ProfileResult } from '../src/store/index.ts';

/** Sets one unrelated field (`v`: a rate-limit label, say) in a hash. */
const HASH_FIELD = defineAtomicOperation({
  name: 'TEST.HASHFIELD',
  type: 'hash',
  lua: `redis.call('HSET', KEYS[1], 'v', 'x') return 0`,
  encode: () => [],
  decode: () => undefined,
  memory(key) {
    key.fields.set('v', 'x');
  },
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const code = (c: StoreErrorCode) => (e: unknown) => e instanceof StoreError && e.code === c;

/** predict's part of the store contract; `make` gives a fresh, empty store per test (real clock). */
export function predictStoreContract(make: () => Promise<Store> | Store): void {
  const fresh = freshStores(make);

  it('seenAdd: tells which members are new and how deep the known ones were, most recently seen kept, the oldest beyond keep forgotten', async () => {
    const s = await fresh();
    const o = { keep: 3, ttlMs: 60_000 };
    assert.deepEqual(await seenAdd(s, 'seen:a', ['aa', 'bb', 'aa'], o), { fresh: [true, true, false], depth: [-1, -1, 1], size: 2 });
    // Depth: how many distinct members were seen after it (bb was, then aa).
    assert.deepEqual(await seenAdd(s, 'seen:a', ['bb', 'cc'], o), { fresh: [false, true], depth: [1, -1], size: 3 });
    // aa is the least recently seen: dd pushes it out; bb, seen again, stays.
    assert.deepEqual(await seenAdd(s, 'seen:a', ['bb', 'dd'], o), { fresh: [false, true], depth: [1, -1], size: 3 });
    // Within one call the members told before are more recent: aa (new) is above bb, and both above cc.
    assert.deepEqual(await seenAdd(s, 'seen:a', ['aa', 'bb', 'cc'], { ...o, inspect: true }), { fresh: [true, false, false], depth: [-1, 2, 3], size: 3 });
    assert.equal(await s.get('seen:a'), 'ccbbdd', 'inspect wrote nothing; the memory is the members, least recent first');
    // A match across two members does not count: "bd" is in "ccbbdd" but not at a member boundary.
    assert.deepEqual(await seenAdd(s, 'seen:a', ['bd'], o), { fresh: [true], depth: [-1], size: 3 });
    assert.deepEqual(await seenAdd(s, 'seen:a', [], o), { fresh: [], depth: [], size: 0 });
    assert.deepEqual(await seenAdd(s, 'seen:b', ['x'], { keep: 1, ttlMs: 60_000 }), { fresh: [true], depth: [-1], size: 1 });
    assert.deepEqual(await seenAdd(s, 'seen:b', ['x'], { keep: 1, ttlMs: 60_000 }), { fresh: [false], depth: [0], size: 1 }, 'the last one seen is at depth 0');
  });

  it('seenAdd: a memory of another width, or an unreadable one, starts again; bad arguments are refused and change nothing', async () => {
    const s = await fresh();
    await s.set('seen:w', 'abcde');
    assert.deepEqual(await seenAdd(s, 'seen:w', ['ab', 'cd'], { keep: 10, ttlMs: 60_000 }), { fresh: [true, true], depth: [-1, -1], size: 2 });
    const bad = code('THEMIS_ERR_STORE_ARGUMENT');
    await assert.rejects(seenAdd(s, 'seen:w', ['ab', 'abc'], { keep: 10, ttlMs: 1000 }), bad);
    await assert.rejects(seenAdd(s, 'seen:w', ['a b'], { keep: 10, ttlMs: 1000 }), bad);
    await assert.rejects(seenAdd(s, 'seen:w', ['é'], { keep: 10, ttlMs: 1000 }), bad);
    await assert.rejects(seenAdd(s, 'seen:w', ['ab'], { keep: 0, ttlMs: 1000 }), bad);
    await assert.rejects(seenAdd(s, 'seen:w', ['ab'], { keep: 10, ttlMs: 0 }), bad);
    assert.equal(await s.get('seen:w'), 'abcd');
    await s.counterAdd('cnt:w', { a: 1 });
    await assert.rejects(seenAdd(s, 'cnt:w', ['ab'], { keep: 10, ttlMs: 1000 }), code('THEMIS_ERR_STORE_WRONGTYPE'));
  });

  it('seenAdd sets the expiry on every call that is not an inspection', async () => {
    const s = await fresh();
    await seenAdd(s, 'seen:t', ['aa'], { keep: 5, ttlMs: 150 });
    await seenAdd(s, 'seen:t', ['aa'], { keep: 5, ttlMs: 150, inspect: true });
    await eventually(async () => (await s.get('seen:t')) === undefined, 2000, 'expiry');
    assert.deepEqual(await seenAdd(s, 'seen:t', ['aa'], { keep: 5, ttlMs: 60_000 }), { fresh: [true], depth: [-1], size: 1 });
  });

  // Profiles on the store's own clock: only what does not depend on it (a 1440-minute count holds both calls whatever the minute).
  const day = (key: string, amount: number, extra: Partial<ProfileRequest> = {}): ProfileRequest => ({ key, amount, timeframes: [1440], span: 9, keep: 5, clipK: 0, clipAfter: 0, ttlMs: 60_000, ...extra });
  const dayCount = (r: ProfileResult) => r.timeframes[0].count;

  it('profileUpdate on the real clock: counts add up per key in one batch (a key twice too); inspect writes nothing; [] for no request', async () => {
    const s = await fresh();
    assert.deepEqual(await profileUpdate(s, []), []);
    const first = await profileUpdate(s, [day('p:a', 3), day('p:b', 1), day('p:a', 2)]);
    assert.deepEqual(first.map(dayCount), [3, 1, 5]);
    assert.deepEqual(first[0].timeframes[0], { minutes: 1440, count: 3, n: 0, mean: 0, variance: 0, history: [] });
    const look = await profileUpdate(s, [day('p:a', 4, { inspect: true }), day('p:none', 0, { inspect: true })]);
    assert.deepEqual(look.map(dayCount), [9, 0]);
    assert.deepEqual((await profileUpdate(s, [day('p:a', 0, { inspect: true })])).map(dayCount), [5], 'the inspection counted nothing');
    const keys: string[] = [];
    for await (const k of s.scanKeys('p:')) keys.push(k);
    assert.deepEqual(keys.sort(), ['p:a', 'p:b'], 'an inspection creates no key');
  });

  it('profileUpdate sets the expiry on every update; an inspection leaves it alone', async () => {
    const s = await fresh();
    await profileUpdate(s, [day('pt:gone', 1, { ttlMs: 150 }), day('pt:ext', 1, { ttlMs: 150 }), day('pt:look', 1, { ttlMs: 150 })]);
    await profileUpdate(s, [day('pt:ext', 1, { ttlMs: 5000 }), day('pt:look', 0, { ttlMs: 5000, inspect: true })]);
    await sleep(400);
    const after = await profileUpdate(s, ['pt:gone', 'pt:ext', 'pt:look'].map((k) => day(k, 0, { inspect: true })));
    assert.deepEqual(after.map(dayCount), [0, 2, 0]);
    await profileUpdate(s, [day('pt:gone', 1, { ttlMs: 150 })]);
    assert.deepEqual((await profileUpdate(s, [day('pt:gone', 0, { inspect: true })])).map(dayCount), [1], 'starts afresh');
  });

  it('profileUpdate: a key holding a string or a ranking is a WRONGTYPE error; a profile is not a string', async () => {
    const s = await fresh();
    const wrong = code('THEMIS_ERR_STORE_WRONGTYPE');
    await s.set('pw:str', 'x');
    await s.rankAdd('pw:rnk', { a: 1 }, { keep: 2 });
    await profileUpdate(s, [day('pw:ok', 1)]);
    await assert.rejects(profileUpdate(s, [day('pw:str', 1)]), wrong);
    await assert.rejects(profileUpdate(s, [day('pw:rnk', 1, { inspect: true })]), wrong);
    await assert.rejects(s.get('pw:ok'), wrong);
    await assert.rejects(s.rankAdd('pw:ok', { a: 1 }, { keep: 1 }), wrong);
    assert.equal(await s.get('pw:str'), 'x', 'nothing changed');
    assert.deepEqual(await s.rankRead(['pw:rnk'], 2), [[['a', 1]]], 'nothing changed');
    assert.deepEqual((await profileUpdate(s, [day('pw:ok', 0, { inspect: true })])).map(dayCount), [1]);
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
      { traits: 'n' as unknown as [] }, { traits: Array.from({ length: 9 }, (_, i) => ({ name: 'abcdefghi'[i], value: 'v', max: 1, cap: 2 })) },
      { traits: [{ name: 'N', value: 'v', max: 1, cap: 2 }] }, { traits: [{ name: 'n', value: 'v', max: 1, cap: 2 }, { name: 'n', value: 'w', max: 1, cap: 2 }] },
      { traits: [{ name: 'n', value: 'a,b', max: 1, cap: 2 }] }, { traits: [{ name: 'n', value: 'a;b', max: 1, cap: 2 }] }, { traits: [{ name: 'n', value: 'a b', max: 1, cap: 2 }] }, { traits: [{ name: 'n', value: '', max: 1, cap: 2 }] },
      { traits: [{ name: 'n', value: 'v', max: 0, cap: 2 }] }, { traits: [{ name: 'n', value: 'v', max: 65, cap: 2 }] }, { traits: [{ name: 'n', value: 'v', max: 1, cap: 1 }] }, { traits: [{ name: 'n', value: 'v', max: 1, cap: 2.5 }] },
    ];
    for (const change of invalid) await assert.rejects(profileUpdate(s, [day('pv:ok', 1), day('pv:bad', 1, change)]), bad, JSON.stringify(change));
    await assert.rejects(profileUpdate(s, [null as unknown as ProfileRequest]), bad);
    const keys: string[] = [];
    for await (const k of s.scanKeys('pv:')) keys.push(k);
    assert.deepEqual(keys, [], 'the valid request of each batch was not applied either');
    // The bounds themselves are valid.
    const edge = await profileUpdate(s, [day('pv:edge', 0, { timeframes: [1, 1440], span: 1, keep: 200, clipK: 0, clipAfter: 0, ttlMs: 0.5, now: 0 })]);
    assert.equal(edge[0].timeframes.length, 2);
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
      const step = async (minute: number, amount: number) => (await profileUpdate(s, [{ key: 'ks', amount, ...base, now: at(minute) }]))[0].timeframes;
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
      const r = (minute: number, amount: number) => profileUpdate(s, [{ key: 'edge', amount, ...base, timeframes: [10], now: at(minute) }]).then((x) => x[0].timeframes[0]);
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
      for (const amount of [2, 4, 6, 8, 10, 0]) [last] = await profileUpdate(s, [{ key: 'alpha', amount, ...cfg, now: at(minute++) }]);
      const t = last!.timeframes[0];
      // Buckets 2, 4, 6, 8: alpha 1, 1/2, 1/3, 1/4: the plain mean 5 and population variance 5; then 10 with alpha 0.2: mean 6, variance 0.8·(5 + 5·1) = 8.
      assert.equal(t.n, 5);
      assert.ok(Math.abs(t.mean - 6) < 1e-12 && Math.abs(t.variance - 8) < 1e-12, JSON.stringify(t));
      assert.deepEqual(t.history, [4, 6, 8, 10]);
      // A smaller keep trims at once; a larger one keeps what there is.
      const [small] = await profileUpdate(s, [{ key: 'alpha', amount: 0, ...cfg, keep: 2, now: at(minute), inspect: true }]);
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
        for (const amount of [...amounts, 0]) [last] = await profileUpdate(s, [{ key, amount, ...base, timeframes: [1], span: 9, keep: 10, clipK: 1, clipAfter, now: at(minute++) }]);
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
      const call = (minute: number, amount: number, inspect = false, ms?: number) => profileUpdate(s, [{ key: 'behind', amount, ...cfg, now: at(minute, ms), inspect }]).then((x) => x[0].timeframes);
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
      const call = (minute: number, amount: number, timeframes: number[]) => profileUpdate(s, [{ key: 'cfg', amount, ...base, timeframes, now: at(minute) }]).then((x) => x[0].timeframes);
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
      await s.atomic(HASH_FIELD, [{ key: 'odd', args: undefined }]); // a hash with an unrelated field, on every store
      const [r] = await profileUpdate(s, [{ key: 'odd', amount: 2, ...base, now: at(0) }]);
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
          const results = await profileUpdate(s, requests);
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
