// Reloads do not leak (issue 21). A daemon started as a user starts it (`themis start`, a Redis store,
// the tag, rate-limit and monitor plugins and a "ballast" plugin with heavy per-runtime state and a store
// subscription) takes N reloads under a steady milter load: valid and refused, by editing the
// configuration file, by SIGHUP and by live policy changes announced through the store. Before and after
// (load stopped, old runtimes retired), its `/status?gc=1` resources — heap after a full GC (the daemon
// runs with --expose-gc), active handles by type, listeners on the process's signals — and, on the Redis
// side, the subscribers of the resync channel and of the plugin's channel and the connected clients must
// be where they were. Every message sent during the reloads is answered, and a refused reload leaves the
// last valid configuration serving (a probe message after each reload checks which one serves).
//
// N is 140 in `npm test` (20 rounds of 7 reloads, about 20 s); THEMIS_RELOAD_LEAK_N=1000 runs the soak.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { MilterClient } from '../../src/milter/index.ts';
import { announceResync, writeLive } from '../../src/live/index.ts';
import { createStore } from '../../src/store/index.ts';
import type { ProcessResources } from '../../src/cli/daemon/status.ts';
import { redisAvailable, startRedis } from '../helpers/redis.ts';
import { startThemis, type ThemisProcess } from '../helpers/themis.ts';

const TAG = fileURLToPath(new URL('../fixtures/plugins/tag.ts', import.meta.url));
const skip = !redisAvailable() ? 'redis-server not installed' : false;

/** Reloads per round: file refused, SIGHUP refused, file ok, SIGHUP ok, live ok, live refused, live ok. */
const PER_ROUND = 7;
const N = Math.max(PER_ROUND, Number(process.env.THEMIS_RELOAD_LEAK_N ?? 140));
const ROUNDS = Math.ceil(N / PER_ROUND);

interface Status {
  connections: number;
  config: { generation: number; hash: string; retiring: number; lastReloadError: { at: string; code?: string } | null };
  resources: ProcessResources;
}

/** GET on the status endpoint, on a connection of its own that the daemon closes after the answer. */
function get(spec: string, path: string): Promise<string> {
  const port = Number(/^inet:(\d+)@/.exec(spec)![1]);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${path}: ${res.statusCode} ${body}`))));
    });
    req.on('error', reject);
    req.end();
  });
}
const status = async (d: ThemisProcess, gc = false): Promise<Status> => JSON.parse(await get(d.http!, gc ? '/status?gc=1' : '/status')) as Status;

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const tagOf = (r: Awaited<ReturnType<MilterClient['sendMessage']>>): string | undefined => {
  const m = r.modifications.find((x) => x.type === 'addHeader' && x.name === 'X-Themis-Policy');
  return m && m.type === 'addHeader' ? m.value : undefined;
};

const message = (id: string, first: boolean) => ({
  ...(first ? { connect: { hostname: `load-${id}`, address: '192.0.2.10' }, helo: `load-${id}` } : {}),
  from: `load-${id}@example.org`,
  to: ['rcpt@example.test'],
  headers: [['Subject', `load ${id}`]] as [string, string][],
  body: 'load\r\n',
});

/** A steady milter load: short connections of a few messages each, and one connection held through the whole phase. */
function startLoad(spec: string) {
  const stats = { sent: 0, answered: 0, errors: [] as string[], untagged: 0, maxRetiring: 0 };
  let running = true;
  const pause = () => new Promise((r) => setTimeout(r, 4));
  const check = (r: Awaited<ReturnType<MilterClient['sendMessage']>>) => {
    stats.answered++;
    if (r.stage !== 'endOfMessage' || (r.reply.action !== 'continue' && r.reply.action !== 'accept')) stats.errors.push(`answered ${r.reply.action} at ${r.stage}`);
    else if (tagOf(r) === undefined) stats.untagged++;
  };
  const short = async (w: number) => {
    for (let n = 0; running; n++) {
      try {
        const c = await MilterClient.connect(spec);
        for (let i = 0; i < 4 && running; i++) {
          stats.sent++;
          check(await c.sendMessage(message(`${w}-${n}-${i}`, i === 0)));
          await pause();
        }
        await c.quit();
      } catch (err) {
        stats.errors.push((err as Error).message);
      }
    }
  };
  const held = async () => {
    try {
      const c = await MilterClient.connect(spec);
      for (let i = 0; running; i++) {
        stats.sent++;
        check(await c.sendMessage(message(`held-${i}`, i === 0)));
        await pause();
      }
      await c.quit();
    } catch (err) {
      stats.errors.push(`held connection: ${(err as Error).message}`);
    }
  };
  const all = [short(1), short(2), short(3), held()];
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(all);
    },
  };
}

/** Counts by type; `a` and `b` side by side for the diagnostic. */
const sideBySide = (a: Record<string, number>, b: Record<string, number>) =>
  [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .sort()
    .map((k) => `${k} ${a[k] ?? 0}→${b[k] ?? 0}`)
    .join(', ');

describe('reloads do not leak', { skip }, () => {
  it(`${ROUNDS * PER_ROUND} reloads (file, SIGHUP, live; valid and refused) under load leave resources, heap and subscriptions where they were; no message is lost`, { timeout: 60_000 + N * 1_000 }, async (t) => {
    // Torn down in reverse order: the daemon and the clients before Redis.
    const cleanup: (() => unknown)[] = [];
    t.after(async () => {
      for (const fn of cleanup.reverse()) await fn();
    });
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const dir = mkdtempSync(join(tmpdir(), 'themis-reload-leak-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    // A plugin with heavy per-runtime state (a 256 KB array on the heap), a store subscription and a
    // metric read through `collect`: a runtime kept after its reload shows in the heap and on Redis.
    const ballast = join(dir, 'ballast.mjs');
    writeFileSync(
      ballast,
      `export default {
        name: 'ballast', version: '1.0.0', kernel: '^1',
        async setup({ store, metrics }) {
          const state = { seen: 0, ballast: new Array(32768).fill(0).map((_, i) => i) };
          const off = await store.subscribe('ballast:events', () => undefined);
          const gauge = metrics.gauge({ name: 'seen', help: 'messages seen', collect() { gauge.set(state.seen); } });
          return { mailFrom() { state.seen++; }, async shutdown() { await off(); } };
        },
      };\n`,
    );
    // pollInterval 10 min: every resync comes from its announcement, once.
    const config = (value: string, extra: object = {}) => ({
      store: { type: 'redis', url: redis.url },
      reload: { watch: true, resync: true, pollInterval: 600_000 },
      plugins: [TAG, 'themis-plugin-ratelimit', 'themis-plugin-monitor', ballast],
      policies: [{ name: 'every', tag: { value }, ratelimit: { windows: '1000000/1h', by: 'sender' }, ...extra }],
    });
    writeFileSync(file, JSON.stringify(config('f0')));
    const d = await startThemis(['--config', file], { NODE_OPTIONS: '--expose-gc' }, { http: true });
    cleanup.push(() => d.stop());
    const spec = `inet:${d.port}@127.0.0.1`;
    await until('the status endpoint', () => status(d).catch(() => undefined));

    // The test's own view of the store: live policies and resync announcements, as `themis policy` writes them.
    const store = createStore({ type: 'redis', url: redis.url });
    cleanup.push(() => store.close());
    const { Redis } = await import('ioredis');
    const raw = new Redis(redis.url);
    cleanup.push(() => raw.quit());
    const redisSide = async () => {
      const [, resync, , plugin] = (await raw.pubsub('NUMSUB', 'themis:config:resync', 'themis:ballast:events')) as [string, number, string, number];
      const clients = String(await raw.client('LIST')).trim().split('\n').length;
      return { resyncSubscribers: Number(resync), pluginSubscribers: Number(plugin), clients };
    };

    let fileTag = 'f0';
    let liveTag: string | undefined;
    const probe = async (): Promise<string | undefined> => {
      const c = await MilterClient.connect(spec);
      try {
        return tagOf(await c.sendMessage(message('probe', true)));
      } finally {
        await c.quit();
      }
    };
    const expectServing = async (why: string) => assert.equal(await probe(), liveTag ?? fileTag, `after ${why}, the last valid configuration serves`);

    const counts = { ok: 0, refused: 0 };
    /** Runs `act` and waits for the reload it causes: a new generation, or (refused) a new lastReloadError with the generation unchanged. */
    const reload = async (why: string, outcome: 'ok' | 'refused', act: () => unknown) => {
      const before = (await status(d)).config;
      await act();
      if (outcome === 'ok') {
        await until(`${why}: a new generation`, async () => {
          const c = (await status(d)).config;
          return c.generation === before.generation + 1 && c.lastReloadError === null;
        });
      } else {
        const c = await until(`${why}: the refusal`, async () => {
          const c = (await status(d)).config;
          return c.lastReloadError !== null && c.lastReloadError.at !== before.lastReloadError?.at ? c : undefined;
        });
        assert.equal(c.generation, before.generation, `${why}: refused, no new generation`);
        assert.equal(c.lastReloadError!.code, 'THEMIS_ERR_POLICY_UNCLAIMED');
      }
      counts[outcome]++;
      await expectServing(why);
    };
    let step = 0;
    const round = async () => {
      const i = ++step;
      await reload('an invalid file', 'refused', () => writeFileSync(file, JSON.stringify(config(fileTag, { bogus: { x: i } }))));
      await reload('SIGHUP on the invalid file', 'refused', () => d.child.kill('SIGHUP'));
      await reload('a valid file', 'ok', () => {
        fileTag = `f${i}`;
        writeFileSync(file, JSON.stringify(config(fileTag)));
      });
      await reload('SIGHUP on the valid file', 'ok', () => d.child.kill('SIGHUP'));
      await reload(liveTag ? 'a live policy deleted' : 'a live policy added', 'ok', async () => {
        liveTag = liveTag ? undefined : `l${i}`;
        await writeLive(store, 'policy', 'live', liveTag ? { name: 'live', priority: 1, stopHere: true, tag: { value: liveTag } } : null, 'reload-leak test');
        await announceResync(store);
      });
      await reload('an invalid live policy', 'refused', async () => {
        await writeLive(store, 'policy', 'bad', { name: 'bad', bogus: { x: i } }, 'reload-leak test');
        await announceResync(store);
      });
      await reload('the invalid live policy deleted', 'ok', async () => {
        await writeLive(store, 'policy', 'bad', null, 'reload-leak test');
        await announceResync(store);
      });
    };

    /** Stops the load and waits until no connection is open and every replaced runtime is retired. */
    const settle = async (load: ReturnType<typeof startLoad>) => {
      await load.stop();
      return until('old runtimes retired', async () => {
        const s = await status(d);
        return s.connections === 0 && s.config.retiring === 0 ? s : undefined;
      });
    };

    // Warm-up: every code path once (modules loaded, code compiled, Redis connections made), then the baseline.
    const warm = startLoad(spec);
    await until('traffic', async () => warm.stats.answered >= 50);
    for (let k = 0; k < 2; k++) await round();
    await settle(warm);
    assert.deepEqual(warm.stats.errors, []);
    const before = (await status(d, true)).resources;
    const redisBefore = await redisSide();
    const reloadsBefore = { ...counts };
    assert.equal(before.gc, true, 'the daemon collected garbage before measuring (it runs with --expose-gc)');

    const load = startLoad(spec);
    await until('traffic', async () => load.stats.answered >= 50);
    const started = Date.now();
    let maxRetiring = 0;
    for (let k = 0; k < ROUNDS; k++) {
      await round();
      maxRetiring = Math.max(maxRetiring, (await status(d)).config.retiring);
    }
    const ms = Date.now() - started;
    await settle(load);
    const after = (await status(d, true)).resources;
    const redisAfter = await redisSide();
    const done = { ok: counts.ok - reloadsBefore.ok, refused: counts.refused - reloadsBefore.refused };

    const mb = (n: number) => `${(n / 1048576).toFixed(2)} MB`;
    t.diagnostic(`${done.ok + done.refused} reloads (${done.ok} ok, ${done.refused} refused) in ${ms} ms under load: ${load.stats.sent} messages sent, ${load.stats.answered} answered, ${load.stats.errors.length} errors; at most ${maxRetiring} runtimes retiring`);
    t.diagnostic(`heap used after GC ${mb(before.heapUsedBytes)} → ${mb(after.heapUsedBytes)} (${mb(after.heapUsedBytes - before.heapUsedBytes)}); heap total ${mb(before.heapTotalBytes)} → ${mb(after.heapTotalBytes)}, external ${mb(before.externalBytes)} → ${mb(after.externalBytes)}, rss ${mb(before.rssBytes)} → ${mb(after.rssBytes)}`);
    t.diagnostic(`active resources: ${sideBySide(before.active, after.active)}`);
    t.diagnostic(`process listeners: ${sideBySide(before.listeners, after.listeners)}`);
    t.diagnostic(`redis: resync subscribers ${redisBefore.resyncSubscribers}→${redisAfter.resyncSubscribers}, plugin subscribers ${redisBefore.pluginSubscribers}→${redisAfter.pluginSubscribers}, clients ${redisBefore.clients}→${redisAfter.clients}`);

    // No session lost: every message got its answer, a valid one, with the tag of some configuration.
    assert.deepEqual(load.stats.errors, []);
    assert.equal(load.stats.answered, load.stats.sent);
    assert.equal(load.stats.untagged, 0);
    assert.ok(load.stats.answered >= N, `a steady load ran through the reloads (${load.stats.answered} messages)`);
    assert.deepEqual(done, { ok: ROUNDS * 4, refused: ROUNDS * 3 });
    // The reloads went through their triggers as counted (the file watcher may see one write twice: at least).
    const metrics = await get(d.http!, '/metrics');
    const reloadsOf = (trigger: string, result: string) => Number(new RegExp(`^themis_config_reloads_total\\{trigger="${trigger}",result="${result}"\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? 0);
    const rounds = ROUNDS + 2;
    assert.equal(reloadsOf('SIGHUP', 'ok'), rounds);
    assert.equal(reloadsOf('SIGHUP', 'refused'), rounds);
    assert.equal(reloadsOf('resync', 'ok'), 2 * rounds);
    assert.equal(reloadsOf('resync', 'refused'), rounds);
    assert.ok(reloadsOf('file', 'ok') >= rounds && reloadsOf('file', 'refused') >= rounds);
    // Runtimes are retired while the reloads go on, not all at the end (the held connection pins one).
    assert.ok(maxRetiring <= 30, `at most ${maxRetiring} runtimes were retiring at a time`);

    // Handles: sockets (TCPSocketWrap), listening sockets (TCPServerWrap), pipes, file watches, signal
    // wraps, timers that keep the process alive. The same count after as before (Timeout and Immediate:
    // a slack of 2 for what a moment of activity has in flight). A handle left per reload would be off
    // by up to N. (Node lists only ref'ed timers: the daemon's own are unref'ed, so a timer kept per
    // reload shows through what its closure keeps — the heap check below — not here.)
    for (const type of new Set([...Object.keys(before.active), ...Object.keys(after.active)])) {
      const slack = type === 'Timeout' || type === 'Immediate' ? 2 : 0;
      const diff = (after.active[type] ?? 0) - (before.active[type] ?? 0);
      assert.ok(Math.abs(diff) <= slack, `${type}: ${before.active[type] ?? 0} before, ${after.active[type] ?? 0} after ${N} reloads`);
    }
    assert.deepEqual(after.listeners, before.listeners, 'listeners on the process signals and events');
    assert.equal(after.listeners.SIGHUP, 1, 'one SIGHUP listener: the reload trigger');
    assert.deepEqual(redisAfter, redisBefore, 'the same subscriptions (the resync channel’s, the serving runtime’s plugin’s) and Redis connections');
    assert.deepEqual([redisAfter.resyncSubscribers, redisAfter.pluginSubscribers], [1, 1]);
    // Heap used after a full GC. Measured: +1.1 to +1.2 MB after 140 reloads, +1.9 MB after 700 (code
    // warming up, caches filling; it flattens). Each runtime's ballast plugin holds 256 KB: with the
    // retired runtimes' plugins kept until a metrics scrape (the leak this test found in hook-metrics.ts)
    // it grew by 22 MB over 140 reloads. 4 MB fails as soon as some 15 runtimes are kept.
    assert.ok(after.heapUsedBytes - before.heapUsedBytes < 4 * 1048576, `heap grew by ${mb(after.heapUsedBytes - before.heapUsedBytes)} over ${N} reloads`);
  });
});
