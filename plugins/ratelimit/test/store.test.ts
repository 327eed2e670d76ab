// Multi-window rate limits, the same tests against the in-memory store, a real redis-server and a
// real 3-master Redis Cluster: a seeded property test (never more than the limit in any window,
// denied only for traffic at most one slot older than the window, and every decision equal to an
// independent model of the slots), refund exactness, flags, penalty blocks, expiry, key listing.
// Then what only Redis shows: one network round trip per batch, atomicity between two daemons,
// the server's clock, the script cache, failing fast.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { MemoryStore, RedisStore, StoreError, type Store, type StoreErrorCode } from 'themis-milter';
import { prng } from 'themis-milter/testing';
import { rateAdmin, rateInspect, rateLimit, rateRefund, rateSlotWidth, type RateRequest, type RateResult, type RateWindow } from '../src/store/index.ts';
import { countRoundTrips, rawCluster, redisAvailable, redisCliAvailable, startRedis, startRedisCluster, type RedisClusterServers, type RedisServer } from '../../../test/helpers/redis.ts';

const skipRedis = redisAvailable() ? false : 'redis-server not installed';
const skipCluster = skipRedis || (redisCliAvailable() ? false : 'redis-cli not installed');
if (skipRedis) console.log(`# Redis rate-limit tests skipped: ${skipRedis}`);
else if (skipCluster) console.log(`# Redis Cluster rate-limit tests skipped: ${skipCluster}`);

const code = (c: StoreErrorCode) => (e: unknown) => e instanceof StoreError && e.code === c;

type Rng = ReturnType<typeof prng>;

const LENGTHS = [1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000];

/** 1–3 windows of distinct length/slots: W in 1 s..1 h, 1–20 slots (not always dividing W), limit 0–50. */
function randomWindows(rng: Rng): RateWindow[] {
  const count = 1 + rng.int(3);
  const out: RateWindow[] = [];
  while (out.length < count) {
    const w = { windowMs: rng.pick(LENGTHS), slots: 1 + rng.int(20), limit: rng.int(51) };
    if (!out.some((o) => o.windowMs === w.windowMs && o.slots === w.slots)) out.push(w);
  }
  return out;
}

/**
 * An independent model of one subject: the admitted events, and from them what the slots hold. It
 * does not share code with the stores: slot counts are recomputed from the events.
 */
class Model {
  readonly events: { t: number; cost: number }[] = [];
  readonly windows: readonly RateWindow[];
  constructor(windows: readonly RateWindow[]) {
    this.windows = windows;
  }
  /** Units counted by window `w` at `t`: events whose epoch is in [E − N, E]. */
  counted(w: RateWindow, t: number): number {
    const g = rateSlotWidth(w);
    const e = Math.floor(t / g);
    let sum = 0;
    for (const ev of this.events) if (Math.floor(ev.t / g) >= e - w.slots && ev.t <= t) sum += ev.cost;
    return sum;
  }
  /** Units admitted in the interval (t − span, t]. */
  exact(t: number, span: number): number {
    let sum = 0;
    for (const ev of this.events) if (ev.t > t - span && ev.t <= t) sum += ev.cost;
    return sum;
  }
  /** The model's resetMs: when the oldest counted unit's slot leaves the span. */
  resetMs(w: RateWindow, t: number): number {
    const g = rateSlotWidth(w);
    const e = Math.floor(t / g);
    let oldest = Infinity;
    for (const ev of this.events) {
      const k = Math.floor(ev.t / g);
      if (ev.cost > 0 && k >= e - w.slots && ev.t <= t) oldest = Math.min(oldest, k);
    }
    return oldest === Infinity ? 0 : (oldest + w.slots + 1) * g - t;
  }
  fits(t: number, cost: number): boolean {
    return this.windows.every((w) => this.counted(w, t) + cost <= w.limit);
  }
}

/** What the tests need to look at a store from outside. */
interface Harness {
  /** A fresh store (its own key prefix) honouring `now`. */
  make(options?: { testClock?: boolean }): Promise<Store>;
  /** PTTL of a key as Redis reports it: -2 absent, -1 no expiry, else ms left. */
  pttl(store: Store, key: string): Promise<number>;
  /** Every key the store holds, as written (with its prefix, if any). */
  rawKeys(store: Store): Promise<string[]>;
}

/** The tests every store owes, run against each. */
function rateContract(h: Harness, runs: { subjects: number; batch: number; steps: number }): void {
  const T0 = 1_700_000_000_123;
  const W = (windowMs: number, slots: number, limit: number): RateWindow => ({ windowMs, slots, limit });

  it(`property: ${runs.subjects} random subjects × ${runs.steps} steps: never over the limit in any window, denied only for traffic of the last (N+1)·g, every decision as the model`, async () => {
    const store = await h.make();
    let checked = 0;
    try {
      for (let first = 0; first < runs.subjects; first += runs.batch) {
        // A batch of subjects decided in one rateLimit call per step (one pipeline on Redis).
        const subjects = Array.from({ length: Math.min(runs.batch, runs.subjects - first) }, (_, i) => {
          const seed = 0x5eed + first + i;
          const rng = prng(seed);
          const windows = randomWindows(rng);
          return { seed, rng, windows, model: new Model(windows), t: T0 + rng.int(1e9), key: `prop:${seed}` };
        });
        for (let step = 0; step < runs.steps; step++) {
          const requests: RateRequest[] = subjects.map((s) => {
            const minW = Math.min(...s.windows.map((w) => w.windowMs));
            const maxW = Math.max(...s.windows.map((w) => w.windowMs));
            const minG = Math.min(...s.windows.map(rateSlotWidth));
            const r = s.rng.next();
            // Mostly bursts within a slot, then gaps across slots, windows, and past every window.
            s.t += r < 0.45 ? s.rng.int(minG * 2) : r < 0.8 ? s.rng.int(Math.ceil(minW / 3)) : r < 0.96 ? s.rng.int(Math.ceil(maxW / 4)) : s.rng.int(maxW * 2);
            return { key: s.key, cost: s.rng.int(6), windows: s.windows, now: s.t };
          });
          const results = await rateLimit(store, requests);
          subjects.forEach((s, i) => {
            const { cost } = requests[i];
            const t = s.t;
            const res = results[i];
            const where = `seed ${s.seed} step ${step} t=${t} cost=${cost} windows=${JSON.stringify(s.windows)}`;
            const fits = s.model.fits(t, cost);
            assert.equal(res.outcome, fits ? 'allowed' : 'denied', where);
            if (fits && cost > 0) s.model.events.push({ t, cost });
            s.windows.forEach((w, j) => {
              const used = s.model.counted(w, t);
              assert.deepEqual(res.windows[j], { used, limit: w.limit, remaining: Math.max(0, w.limit - used), resetMs: s.model.resetMs(w, t) }, `${where} window ${j}`);
            });
            if (fits) {
              assert.equal(res.failing, -1, where);
              assert.equal(res.reservation !== undefined, cost > 0, where);
              // Never exceeded: the interval of every window's length ending at this admission.
              for (const w of s.windows) assert.ok(s.model.exact(t, w.windowMs) <= w.limit, `${where}: ${s.model.exact(t, w.windowMs)} > ${w.limit} in ${w.windowMs} ms`);
            } else {
              const w = s.windows[res.failing];
              assert.ok(w && s.model.counted(w, t) + cost > w.limit, `${where}: failing ${res.failing}`);
              assert.ok(s.windows.slice(0, res.failing).every((x) => s.model.counted(x, t) + cost <= x.limit), `${where}: the first failing window`);
              // Under-admission is bounded: the traffic that denied is at most one slot older than the window.
              const span = (w.slots + 1) * rateSlotWidth(w);
              assert.ok(s.model.exact(t, span) + cost > w.limit, `${where}: denied with only ${s.model.exact(t, span)} in ${span} ms`);
              if (s.windows.some((x) => cost > x.limit)) assert.equal(res.retryAfterMs, -1, where);
              else {
                // retryAfterMs is exact: the request fits then, and not a millisecond earlier.
                assert.ok(res.retryAfterMs > 0, where);
                assert.ok(s.model.fits(t + res.retryAfterMs, cost), `${where}: still full after ${res.retryAfterMs} ms`);
                assert.ok(!s.model.fits(t + res.retryAfterMs - 1, cost), `${where}: fits before ${res.retryAfterMs} ms`);
              }
            }
            checked++;
          });
        }
        // From first principles too: every interval of each window's length, over the whole run.
        for (const s of subjects)
          for (const w of s.windows) for (const ev of s.model.events) assert.ok(s.model.exact(ev.t, w.windowMs) <= w.limit, `seed ${s.seed}: over the limit at ${ev.t}`);
      }
    } finally {
      await store.close();
    }
    assert.equal(checked, runs.subjects * runs.steps);
  });

  it('refund: reserve then refund restores every window exactly; a slot that rolled over is left alone', async () => {
    const store = await h.make();
    let refunded = 0;
    try {
      for (let seed = 1; seed <= 25; seed++) {
        const rng = prng(seed * 7919);
        const windows = randomWindows(rng).map((w) => ({ ...w, limit: 60 + w.limit }));
        const key = `refund:${seed}`;
        let t = T0 + rng.int(1e9);
        for (let i = 0; i < 40; i++) {
          t += rng.int(rng.next() < 0.7 ? 1500 : 120_000);
          await rateLimit(store, [{ key, cost: rng.int(3), windows, now: t }]);
        }
        t += rng.int(500);
        const before = await rateInspect(store, key, windows, t);
        const cost = 1 + rng.int(3);
        const [r] = await rateLimit(store, [{ key, cost, windows, now: t }]);
        if (r.outcome !== 'allowed') continue;
        assert.ok(r.reservation);
        assert.notDeepEqual((await rateInspect(store, key, windows, t)).windows, before.windows);
        await rateRefund(store, [r.reservation]);
        const after = await rateInspect(store, key, windows, t);
        assert.deepEqual(after.windows, before.windows, `seed ${seed}`);
        // Later in the same slots too: the units are gone, not merely hidden.
        assert.deepEqual((await rateInspect(store, key, windows, t + 1)).windows.map((w) => w.used), before.windows.map((w) => w.used), `seed ${seed}`);
        refunded++;
      }
      // Rolled over: 1 s in 1 slot is a ring of 2 slots; 2 s later the same slot holds a newer epoch.
      const windows = [W(1000, 1, 10)];
      const [old] = await rateLimit(store, [{ key: 'rolled', cost: 3, windows, now: T0 }]);
      await rateLimit(store, [{ key: 'rolled', cost: 2, windows, now: T0 + 2000 }]);
      await rateRefund(store, [old.reservation!]);
      assert.equal((await rateInspect(store, 'rolled', windows, T0 + 2000)).windows[0].used, 2);
      // Refunds never go below zero, and refunding what expired does not bring the subject back.
      const [r] = await rateLimit(store, [{ key: 'twice', cost: 2, windows, now: T0 }]);
      await rateRefund(store, [r.reservation!, r.reservation!]);
      assert.equal((await rateInspect(store, 'twice', windows, T0)).windows[0].used, 0);
      await rateRefund(store, [{ key: 'never-seen', cost: 1, windows, epochs: [5] }]);
      assert.equal((await rateInspect(store, 'never-seen', windows, T0)).exists, false);
      assert.ok(refunded >= 20, `${refunded} of 25 random states reserved and refunded`);
    } finally {
      await store.close();
    }
  });

  it('retryAfterMs: when enough of the oldest slots have left; the latest of several full windows; -1 when the cost exceeds a limit', async () => {
    const store = await h.make();
    try {
      const windows = [W(10_000, 10, 3)]; // g = 1 s, 11 slots counted
      const t0 = 1_000_000_000_500; // epoch E = 1_000_000_000 for g = 1000
      const at = (dt: number, cost = 1, key = 'r') => rateLimit(store, [{ key, cost, windows, now: t0 + dt }]).then((r) => r[0]);
      await at(0);
      await at(2000);
      await at(4000);
      const d = await at(5000);
      assert.deepEqual([d.outcome, d.failing, d.retryAfterMs], ['denied', 0, 5500], 'slot E leaves at (E + 11)·g');
      assert.equal((await at(5000, 2)).retryAfterMs, 7500, 'two units: slots E and E+2 must leave');
      assert.equal((await at(5000, 4)).retryAfterMs, -1, 'more than the limit: never');
      assert.equal((await at(5000 + 5499)).outcome, 'denied');
      assert.equal((await at(5000 + 5500)).outcome, 'allowed');

      // Two windows full: the later retry wins, and failing names the first.
      const two = [W(10_000, 10, 2), W(60_000, 6, 2)];
      await rateLimit(store, [{ key: 'two', cost: 2, windows: two, now: t0 }]);
      const [x] = await rateLimit(store, [{ key: 'two', cost: 1, windows: two, now: t0 + 100 }]);
      assert.equal(x.failing, 0);
      assert.equal(x.retryAfterMs, (Math.floor(t0 / 10_000) + 7) * 10_000 - (t0 + 100), 'the 1-minute window frees later than the 10-second one');

      // limit 0 always denies a cost; cost 0 is allowed, counts and writes nothing.
      const [zero] = await rateLimit(store, [{ key: 'zero', cost: 1, windows: [W(60_000, 6, 0)], now: t0 }]);
      assert.deepEqual([zero.outcome, zero.retryAfterMs], ['denied', -1]);
      const [free] = await rateLimit(store, [{ key: 'free', cost: 0, windows, now: t0, label: 'x' }]);
      assert.deepEqual(free, { outcome: 'allowed', failing: -1, retryAfterMs: 0, windows: [{ used: 0, limit: 3, remaining: 3, resetMs: 0 }] });
      assert.equal((await rateInspect(store, 'free', windows, t0)).exists, false);
      assert.equal(await h.pttl(store, 'free'), -2);
    } finally {
      await store.close();
    }
  });

  it('a denial writes nothing; a penalty block (jail) is written on denial, reported as jailed, and expires', async () => {
    const store = await h.make();
    try {
      const windows = [W(60_000, 6, 2)];
      const t0 = T0;
      const ask = (dt: number, cost = 1, jailMs = 0) => rateLimit(store, [{ key: 'j', cost, windows, now: t0 + dt, jailMs, label: 'alice@example.com' }]).then((r) => r[0]);
      assert.equal((await rateLimit(store, [{ key: 'nothing', cost: 1, windows: [W(60_000, 6, 0)], now: t0, label: 'l' }]))[0].outcome, 'denied');
      assert.equal((await rateInspect(store, 'nothing', windows, t0)).exists, false, 'a denial without jail creates nothing');

      assert.equal((await ask(0, 2)).outcome, 'allowed');
      const ttlBefore = await h.pttl(store, 'j');
      assert.ok(ttlBefore > 0 && ttlBefore <= 70_000, `ring TTL ${ttlBefore}`);
      const denied = await ask(1000, 1, 300_000);
      assert.deepEqual([denied.outcome, denied.failing, denied.retryAfterMs], ['denied', 0, 300_000], 'retry is at least the jail');
      assert.deepEqual(denied.windows, [{ used: 2, limit: 2, remaining: 0, resetMs: (Math.floor(t0 / 10_000) + 7) * 10_000 - (t0 + 1000) }]);
      const ttl = await h.pttl(store, 'j');
      assert.ok(ttl > 250_000 && ttl <= 300_000, `the key outlives the jail: ${ttl}`);

      const jailed = await ask(71_000, 1, 300_000);
      assert.deepEqual([jailed.outcome, jailed.failing, jailed.retryAfterMs], ['jailed', -1, 230_000]);
      assert.deepEqual(jailed.windows.map((w) => w.used), [0], 'the usage is reported; the slots have left');
      const seen = await rateInspect(store, 'j', windows, t0 + 71_000);
      assert.equal(seen.jailedForMs, 230_000);
      assert.equal(seen.label, 'alice@example.com');
      assert.equal((await ask(301_000, 1, 300_000)).outcome, 'allowed', 'the jail is over');

      // A jail with a short window: retry = jail; with a cost over the limit: still -1 (never).
      const over = await ask(400_000, 5, 10_000);
      assert.deepEqual([over.outcome, over.retryAfterMs], ['denied', -1]);
      assert.equal((await ask(400_001)).outcome, 'jailed');
      await rateAdmin(store, 'j', { unjail: true });
      assert.equal((await ask(400_002)).outcome, 'allowed');
      // cost 0 only checks: allowed when full, denied only when already over (a lowered limit), never jailed.
      assert.equal((await ask(400_003)).outcome, 'allowed');
      assert.equal((await ask(400_004, 0, 10_000)).outcome, 'allowed');
      await rateAdmin(store, 'j', { limits: { 60_000: 1 } });
      const check = await ask(400_005, 0, 10_000);
      assert.deepEqual([check.outcome, check.failing, check.reservation], ['denied', 0, undefined]);
      assert.equal((await rateInspect(store, 'j', windows, t0 + 400_006)).jailedForMs, 0);
    } finally {
      await store.close();
    }
  });

  it('jailMs: an administrator (or the predict plugin) puts a subject in a penalty block on the real clock; a longer block stands', async () => {
    const store = await h.make();
    try {
      const windows = [W(60_000, 6, 100)];
      await rateAdmin(store, 'jm', { jailMs: 120_000, label: 'mallory@example.com' });
      const seen = await rateInspect(store, 'jm', windows);
      assert.ok(seen.jailedForMs > 110_000 && seen.jailedForMs <= 120_000, String(seen.jailedForMs));
      assert.equal(seen.label, 'mallory@example.com');
      assert.equal((await rateLimit(store, [{ key: 'jm', cost: 1, windows }]))[0].outcome, 'jailed');
      await rateAdmin(store, 'jm', { jailMs: 1_000 });
      assert.ok((await rateInspect(store, 'jm', windows)).jailedForMs > 110_000, 'the longer block is kept');
      await rateAdmin(store, 'jm', { unjail: true, jailMs: 5_000 });
      const again = await rateInspect(store, 'jm', windows);
      assert.ok(again.jailedForMs > 0 && again.jailedForMs <= 5_000, 'unjail first, then the new block');
      await assert.rejects(rateAdmin(store, 'jm', { jailMs: -1 }), /jailMs must be an integer/);
    } finally {
      await store.close();
    }
  });

  it('block and bypass: nothing counted, no expiry while set; reset and unset restore the usual rules', async () => {
    const store = await h.make();
    try {
      const windows = [W(60_000, 6, 1)];
      const ask = (key: string, dt = 0) => rateLimit(store, [{ key, cost: 1, windows, now: T0 + dt }]).then((r) => r[0]);
      assert.equal((await ask('b')).outcome, 'allowed');
      await rateAdmin(store, 'b', { block: true, label: 'blocked one' });
      assert.deepEqual(await ask('b'), { outcome: 'blocked', failing: -1, retryAfterMs: 0, windows: [] });
      assert.equal(await h.pttl(store, 'b'), -1, 'a block lasts until lifted');
      let seen = await rateInspect(store, 'b', windows, T0);
      assert.deepEqual([seen.blocked, seen.bypass, seen.label, seen.windows[0].used], [true, false, 'blocked one', 1]);
      await rateAdmin(store, 'b', { reset: true });
      seen = await rateInspect(store, 'b', windows, T0);
      assert.deepEqual([seen.blocked, seen.label, seen.windows[0].used], [true, 'blocked one', 0], 'reset keeps flags and label');
      await rateAdmin(store, 'b', { block: false });
      const ttl = await h.pttl(store, 'b');
      assert.ok(ttl > 86_000_000 && ttl <= 86_400_000, `unblocked: the default expiry (${ttl})`);
      assert.equal((await ask('b')).outcome, 'allowed');
      assert.ok((await h.pttl(store, 'b')) <= 70_000, 'a count sets the ring expiry again');

      await rateAdmin(store, 'p', { bypass: true });
      for (let i = 0; i < 3; i++) assert.deepEqual(await ask('p'), { outcome: 'bypassed', failing: -1, retryAfterMs: 0, windows: [] });
      assert.equal(await h.pttl(store, 'p'), -1);
      assert.equal((await rateInspect(store, 'p', windows, T0)).windows[0].used, 0, 'nothing counted while bypassed');
      await rateAdmin(store, 'p', { bypass: false });
      assert.equal((await rateInspect(store, 'p', windows, T0)).exists, false, 'the last flag gone, the subject is gone');
      assert.equal((await ask('p')).outcome, 'allowed');
      assert.equal((await ask('p')).outcome, 'denied');

      // Block wins over bypass, both over a jail.
      await rateAdmin(store, 'both', { block: true, bypass: true });
      assert.equal((await ask('both')).outcome, 'blocked');
    } finally {
      await store.close();
    }
  });

  it('limit overrides by window length: applied to that window only, reported, persistent until removed', async () => {
    const store = await h.make();
    try {
      const windows = [W(60_000, 6, 5), W(3_600_000, 12, 100)];
      const ask = (dt = 0) => rateLimit(store, [{ key: 'o', cost: 1, windows, now: T0 + dt }]).then((r) => r[0]);
      await rateAdmin(store, 'o', { limits: { 60_000: 1, 10_000: 0 } });
      assert.equal(await h.pttl(store, 'o'), -1);
      const a = await ask();
      assert.deepEqual(a.windows.map((w) => [w.used, w.limit, w.remaining]), [[1, 1, 0], [1, 100, 99]]);
      assert.equal(await h.pttl(store, 'o'), -1, 'a count keeps an overridden subject');
      const b = await ask(1);
      assert.deepEqual([b.outcome, b.failing], ['denied', 0]);
      assert.deepEqual((await rateInspect(store, 'o', windows, T0)).limits, { 10_000: 0, 60_000: 1 });
      await rateAdmin(store, 'o', { limits: null });
      assert.equal((await rateInspect(store, 'o', windows, T0)).limits, undefined);
      assert.equal((await ask(2)).outcome, 'allowed');
      assert.ok((await h.pttl(store, 'o')) > 0);
      // Reordering windows, or adding one, keeps each window's counters.
      const reordered = [W(30_000, 3, 50), windows[1], windows[0]];
      const r = (await rateLimit(store, [{ key: 'o', cost: 0, windows: reordered, now: T0 + 3 }]))[0];
      assert.deepEqual(r.windows.map((w) => w.used), [0, 2, 2]);
    } finally {
      await store.close();
    }
  });

  it('label: stored once (the first wins), never in a key name; the store writes no key but the subject', async () => {
    const store = await h.make();
    try {
      const windows = [W(60_000, 6, 5)];
      await rateLimit(store, [{ key: 'rl:p:abc', cost: 1, windows, now: T0, label: 'p sender alice@example.com' }]);
      await rateLimit(store, [{ key: 'rl:p:abc', cost: 1, windows, now: T0, label: 'p sender bob@example.com' }]);
      await rateAdmin(store, 'rl:p:abc', { label: 'admin' });
      await rateAdmin(store, 'rl:p:def', { block: true, label: 'p sender carol@example.com' });
      await rateLimit(store, [{ key: 'rl:p:ghi', cost: 1, windows, now: T0, label: 'p sender dave@example.com', jailMs: 1000 }]);
      assert.equal((await rateInspect(store, 'rl:p:abc', windows, T0)).label, 'p sender alice@example.com');
      assert.equal((await rateInspect(store, 'rl:p:def', windows, T0)).label, 'p sender carol@example.com');
      const keys = await h.rawKeys(store);
      assert.deepEqual(keys.filter((k) => /example|alice|carol|dave|@/.test(k)), []);
      assert.deepEqual(keys.map((k) => k.replace(/^.*?rl:/, 'rl:')).sort(), ['rl:p:abc', 'rl:p:def', 'rl:p:ghi']);
    } finally {
      await store.close();
    }
  });

  it('a clock that steps back: what was counted stays counted until the clock catches up', async () => {
    const store = await h.make();
    try {
      const windows = [W(10_000, 10, 3)];
      const t1 = 1_000_000_020_000;
      await rateLimit(store, [{ key: 'back', cost: 3, windows, now: t1 }]);
      const [r] = await rateLimit(store, [{ key: 'back', cost: 1, windows, now: t1 - 60_000 }]);
      assert.deepEqual([r.outcome, r.windows[0].used, r.retryAfterMs], ['denied', 3, 71_000], 'the later slot is the current one');
      const [ok] = await rateLimit(store, [{ key: 'back', cost: 1, windows, now: t1 + 11_000 }]);
      assert.equal(ok.outcome, 'allowed');
    } finally {
      await store.close();
    }
  });

  it('several subjects in one call, in order; the same subject twice is decided twice', async () => {
    const store = await h.make();
    try {
      const windows = [W(60_000, 6, 2)];
      const keys = Array.from({ length: 12 }, (_, i) => `multi:${i}`);
      const first = await rateLimit(store, keys.map((key, i) => ({ key, cost: i % 3, windows, now: T0 })));
      assert.deepEqual(first.map((r) => r.outcome), keys.map(() => 'allowed'));
      assert.deepEqual(first.map((r) => r.windows[0].used), keys.map((_, i) => i % 3));
      const again = await rateLimit(store, keys.map((key) => ({ key, cost: 1, windows, now: T0 })));
      assert.deepEqual(again.map((r) => r.outcome), keys.map((_, i) => (i % 3 === 2 ? 'denied' : 'allowed')));
      const same = await rateLimit(store, [0, 1, 2].map(() => ({ key: 'same', cost: 1, windows, now: T0 })));
      assert.deepEqual(same.map((r) => r.outcome), ['allowed', 'allowed', 'denied']);
      await rateRefund(store, same.flatMap((r) => (r.reservation ? [r.reservation] : [])));
      assert.equal((await rateInspect(store, 'same', windows, T0)).windows[0].used, 0);
      assert.deepEqual(await rateLimit(store, []), []);
    } finally {
      await store.close();
    }
  });

  it('rejects invalid requests and the wrong kind of key with coded errors', async () => {
    const store = await h.make();
    try {
      const ok = { key: 'v', cost: 1, windows: [W(60_000, 6, 1)] };
      for (const bad of [
        { ...ok, cost: -1 },
        { ...ok, cost: 1.5 },
        { ...ok, windows: [] },
        { ...ok, windows: [W(0, 1, 1)] },
        { ...ok, windows: [W(1000, 0, 1)] },
        { ...ok, windows: [W(1000, 1001, 1)] },
        { ...ok, windows: [W(1000, 2, -1)] },
        { ...ok, windows: [W(1000, 2, 1), W(1000, 2, 5)] },
        { ...ok, jailMs: -5 },
      ])
        await assert.rejects(rateLimit(store, [ok, bad as RateRequest]), code('THEMIS_ERR_STORE_ARGUMENT'), JSON.stringify(bad));
      await assert.rejects(rateAdmin(store, 'v', { limits: { 0: 1 } }), code('THEMIS_ERR_STORE_ARGUMENT'));
      await assert.rejects(rateRefund(store, [{ key: 'v', cost: 1, windows: ok.windows, epochs: [] }]), code('THEMIS_ERR_STORE_ARGUMENT'));
      assert.equal((await rateInspect(store, 'v', ok.windows, T0)).exists, false, 'nothing of a rejected batch ran');
      await store.set('text', 'x');
      await assert.rejects(rateLimit(store, [{ ...ok, key: 'text' }]), code('THEMIS_ERR_STORE_WRONGTYPE'));
      await rateLimit(store, [{ ...ok, key: 'hash', now: T0 }]);
      await assert.rejects(store.get('hash'), code('THEMIS_ERR_STORE_WRONGTYPE'));
      assert.equal(await store.delete('hash'), true, 'delete removes a subject');
    } finally {
      await store.close();
    }
  });

  it('scanKeys: the keys with a prefix (glob characters literal), without the store prefix, skipping expired ones', async () => {
    const store = await h.make();
    try {
      const windows = [W(60_000, 6, 5)];
      const made = Array.from({ length: 60 }, (_, i) => `rl:pol:${i}`);
      await rateLimit(store, made.map((key) => ({ key, cost: 1, windows, now: Date.now() })));
      await store.set('rl:other:1', 'x');
      await store.set('rl:po*', 'x');
      await store.set('rl:pol?x', 'x');
      await store.set('gone', 'x', 1);
      await new Promise((r) => setTimeout(r, 20));
      const list = async (prefix: string) => {
        const out: string[] = [];
        for await (const k of store.scanKeys(prefix)) out.push(k);
        return [...new Set(out)].sort();
      };
      assert.deepEqual(await list('rl:pol:'), [...made].sort());
      assert.deepEqual(await list('rl:po*'), ['rl:po*']);
      assert.deepEqual(await list('rl:pol?'), ['rl:pol?x']);
      assert.deepEqual(await list('nothing'), []);
      assert.deepEqual((await list('')).length, 63);
    } finally {
      await store.close();
    }
  });
}

describe('rate limits: MemoryStore', () => {
  const stores = new WeakMap<Store, MemoryStore>();
  rateContract(
    {
      async make(options = {}) {
        const s = new MemoryStore({ testClock: options.testClock ?? true });
        stores.set(s, s);
        return s;
      },
      async pttl(store, key) {
        const e = (store as unknown as { data: Map<string, { expires: number }> }).data.get(key);
        if (!e || (e.expires !== 0 && e.expires <= Date.now())) return -2;
        return e.expires === 0 ? -1 : e.expires - Date.now();
      },
      async rawKeys(store) {
        return [...(store as unknown as { data: Map<string, unknown> }).data.keys()];
      },
    },
    { subjects: 36, batch: 6, steps: 300 },
  );

  it('without testClock the real clock decides; the old constructor argument still sets the sweep', async () => {
    const s = new MemoryStore(1000);
    const [r] = await rateLimit(s, [{ key: 'k', cost: 1, windows: [{ windowMs: 60_000, slots: 6, limit: 5 }], now: 0 }]);
    assert.ok(Math.abs(r.reservation!.epochs[0] - Math.floor(Date.now() / 10_000)) <= 1, 'now is ignored');
    await s.close();
  });
});

/** A Redis harness on a raw client (a Redis or a Cluster) and a store factory. */
function redisHarness(raw: () => Redis | Cluster, options: () => ConstructorParameters<typeof RedisStore>[0]): Harness & { opened: Set<RedisStore> } {
  const opened = new Set<RedisStore>();
  return {
    opened,
    async make(o = {}) {
      const s = new RedisStore(options(), { testClock: o.testClock ?? true });
      opened.add(s);
      await s.connect(5000);
      return s;
    },
    pttl: (store, key) => raw().pttl((store as RedisStore).keyPrefix + key),
    async rawKeys(store) {
      const prefix = (store as RedisStore).keyPrefix;
      const r = raw();
      const nodes = r instanceof Cluster ? r.nodes('master') : [r];
      const keys = await Promise.all(nodes.map((n) => n.keys(`${prefix}*`)));
      return keys.flat();
    },
  };
}

describe('rate limits: RedisStore against redis-server', { skip: skipRedis }, () => {
  let server: RedisServer;
  let raw: Redis;
  let n = 0;
  const h = redisHarness(
    () => raw,
    () => ({ url: server.url, keyPrefix: `rl${++n}:`, commandTimeout: 2000 }),
  );
  before(async () => {
    server = await startRedis();
    raw = new Redis(server.url, { retryStrategy: () => null });
  });
  after(async () => {
    await Promise.all([...h.opened].map((s) => s.close()));
    raw?.disconnect();
    await server?.stop();
  });

  rateContract(h, { subjects: 36, batch: 6, steps: 300 });

  it('three subjects in one rateLimit call: one write on the socket, three EVALSHA and nothing else from the client', async () => {
    const s = (await h.make()) as RedisStore;
    const windows = [{ windowMs: 60_000, slots: 6, limit: 5 }];
    const requests = ['a', 'b', 'c'].map((key) => ({ key, cost: 1, windows }));
    await rateLimit(s, requests); // loads the script on this connection (EVAL once)
    const { result: results, writes, commands: delta } = await countRoundTrips(s, raw, () => rateLimit(s, requests));
    assert.deepEqual(results.map((r) => r.windows[0].used), [2, 2, 2]);
    assert.equal(delta.get('evalsha'), 3);
    // commandstats also counts what the scripts call; anything else would have come from the client.
    const byScripts = new Set(['time', 'hmget', 'hset', 'hsetnx', 'pexpire', 'persist']);
    assert.deepEqual([...delta.keys()].filter((name) => name !== 'evalsha' && !byScripts.has(name)), []);
    assert.equal(writes, 1, 'one network write: one round trip');
    await s.close();
  });

  it('atomic between two daemons: 50 concurrent decisions on one subject with limit 20 admit exactly 20', async () => {
    const prefix = `conc${++n}:`;
    const a = new RedisStore({ url: server.url, keyPrefix: prefix }, {});
    const b = new RedisStore({ url: server.url, keyPrefix: prefix }, {});
    h.opened.add(a).add(b);
    await Promise.all([a.connect(), b.connect()]);
    const windows = [{ windowMs: 3_600_000, slots: 12, limit: 20 }, { windowMs: 60_000, slots: 12, limit: 1000 }];
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => rateLimit(i % 2 ? a : b, [{ key: 'hot', cost: 1, windows }]).then((r) => r[0])));
    assert.equal(results.filter((r) => r.outcome === 'allowed').length, 20);
    assert.equal(results.filter((r) => r.outcome === 'denied').length, 30);
    assert.deepEqual(new Set(results.filter((r) => r.outcome === 'allowed').map((r) => r.windows[0].used)).size, 20, 'each admission saw its own count');
    assert.equal((await rateInspect(a, 'hot', windows)).windows[0].used, 20);
    await Promise.all([a.close(), b.close()]);
  });

  it("without testClock the server's TIME decides: a request's now is ignored", async () => {
    const s = (await h.make({ testClock: false })) as RedisStore;
    const [r] = await rateLimit(s, [{ key: 't', cost: 1, windows: [{ windowMs: 60_000, slots: 6, limit: 5 }], now: 0 }]);
    const [sec] = await raw.time();
    assert.ok(Math.abs(r.reservation!.epochs[0] - Math.floor((Number(sec) * 1000) / 10_000)) <= 1, `epoch ${r.reservation!.epochs[0]}`);
    assert.ok((await raw.pttl(`${s.keyPrefix}t`)) > 60_000);
    await s.close();
  });

  it('survives a flushed script cache (NOSCRIPT → EVAL), in a pipeline too', async () => {
    const s = (await h.make()) as RedisStore;
    const windows = [{ windowMs: 60_000, slots: 6, limit: 5 }];
    await rateLimit(s, [{ key: 'x', cost: 1, windows, now: 1e12 }]);
    await raw.script('FLUSH');
    const results = await rateLimit(s, ['x', 'y'].map((key) => ({ key, cost: 1, windows, now: 1e12 })));
    assert.deepEqual(results.map((r) => r.windows[0].used), [2, 1]);
    await raw.script('FLUSH');
    await rateRefund(s, results.map((r) => r.reservation!));
    await raw.script('FLUSH');
    assert.equal((await rateInspect(s, 'x', windows, 1e12)).windows[0].used, 1);
    await raw.script('FLUSH');
    await rateAdmin(s, 'x', { block: true });
    assert.equal((await rateLimit(s, [{ key: 'x', cost: 1, windows }]))[0].outcome, 'blocked');
    await s.close();
  });

  it('fails fast: a hung server rejects a batch within commandTimeout with a coded error', async () => {
    const hung = await startRedis();
    const s = new RedisStore({ url: hung.url, commandTimeout: 300 });
    h.opened.add(s);
    try {
      await s.connect();
      await rateLimit(s, [{ key: 'k', cost: 1, windows: [{ windowMs: 1000, slots: 1, limit: 1 }] }]);
      hung.pause();
      const t = Date.now();
      await assert.rejects(
        rateLimit(s, ['a', 'b'].map((key) => ({ key, cost: 1, windows: [{ windowMs: 1000, slots: 1, limit: 1 }] }))),
        (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_TIMEOUT' && /RATELIMIT/.test(e.message),
      );
      assert.ok(Date.now() - t < 800, `${Date.now() - t} ms`);
      hung.resume();
      await hung.kill();
      await assert.rejects(rateLimit(s, [{ key: 'k', cost: 1, windows: [{ windowMs: 1000, slots: 1, limit: 1 }] }]), (e: unknown) => e instanceof StoreError && ['THEMIS_ERR_STORE_UNAVAILABLE', 'THEMIS_ERR_STORE_TIMEOUT'].includes(e.code));
    } finally {
      hung.resume();
      await s.close();
      await hung.stop();
    }
  });
});

describe('rate limits: RedisStore on a Redis Cluster (3 masters)', { skip: skipCluster }, () => {
  let cluster: RedisClusterServers;
  let raw: Cluster;
  let n = 0;
  const h = redisHarness(
    () => raw,
    () => ({ cluster: { nodes: cluster.nodes }, keyPrefix: `c${++n}:`, commandTimeout: 2000 }),
  );
  before(async () => {
    cluster = await startRedisCluster(3);
    raw = await rawCluster(cluster.nodes);
  });
  after(async () => {
    await Promise.all([...h.opened].map((s) => s.close()));
    raw?.disconnect();
    await cluster?.stop();
  });

  rateContract(h, { subjects: 24, batch: 6, steps: 250 });

  it('subjects on every master in one call: no CROSSSLOT, and concurrent daemons stay exact', async () => {
    const s = (await h.make()) as RedisStore;
    const windows = [{ windowMs: 60_000, slots: 6, limit: 3 }];
    const keys = Array.from({ length: 30 }, (_, i) => `spread:${i}`);
    const results: RateResult[] = await rateLimit(s, keys.map((key) => ({ key, cost: 1, windows })));
    assert.ok(results.every((r) => r.outcome === 'allowed'));
    const perNode = await Promise.all(raw.nodes('master').map((node) => node.keys(`${s.keyPrefix}spread:*`)));
    assert.ok(perNode.filter((k) => k.length > 0).length >= 2, `keys on several masters: ${perNode.map((k) => k.length).join(',')}`);
    const b = (await h.make({ testClock: false })) as RedisStore;
    const c = new RedisStore({ cluster: { nodes: [cluster.nodes[2]] }, keyPrefix: b.keyPrefix }, {});
    h.opened.add(c);
    await c.connect(5000);
    const hot = [{ windowMs: 3_600_000, slots: 12, limit: 20 }];
    const all = await Promise.all(Array.from({ length: 50 }, (_, i) => rateLimit(i % 2 ? b : c, [{ key: 'hot', cost: 1, windows: hot }]).then((r) => r[0])));
    assert.equal(all.filter((r) => r.outcome === 'allowed').length, 20);
    await Promise.all([s.close(), b.close(), c.close()]);
  });
});
