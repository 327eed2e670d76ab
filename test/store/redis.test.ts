// The Redis store against a real redis-server on loopback: the store contract, key prefixes, password
// authentication, pub/sub between two daemons, an outage and the recovery. And the ioredis options
// each configuration builds (no server needed).
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Redis, type RedisOptions } from 'ioredis';
import { RedisStore, StoreError, defineAtomicOperation, ioredisOptions, reconnectDelay, type StoreErrorCode, type StoreLogger } from '../../src/store/index.ts';
import { eventually, redisAvailable, redisCliAvailable, startRedis, startRedisCluster, type RedisClusterServers, type RedisServer } from '../helpers/redis.ts';
import { freePort } from '../helpers/themis.ts';
import { storeContract } from '../../src/testing/store-contract.ts';

/**
 * Every store a test opens, closed after the file even when a test fails midway: an open store keeps
 * reconnecting to its stopped server, and the file would never end.
 */
const opened = new Set<RedisStore>();
function redisStore(...args: ConstructorParameters<typeof RedisStore>): RedisStore {
  const s = new RedisStore(...args);
  opened.add(s);
  return s;
}
after(async () => {
  await Promise.all([...opened].map((s) => s.close()));
});
/** Options of raw ioredis clients: no reconnection once the test's server is gone. */
const noRetry = { retryStrategy: () => null };

const skip = redisAvailable() ? false : 'redis-server not installed';
const code = (c: StoreErrorCode, re?: RegExp) => (e: unknown) => e instanceof StoreError && e.code === c && (!re || re.test(e.message));

/** A logger that keeps its lines. */
function recorder() {
  const lines: { level: string; message: string; fields: Record<string, unknown> }[] = [];
  const at = (level: string) => (fields: object, message = '') => void lines.push({ level, message, fields: fields as Record<string, unknown> });
  const logger: StoreLogger = { info: at('info'), warn: at('warn'), error: at('error') };
  return { logger, lines };
}

/** Records uncaught exceptions, unhandled rejections and ioredis' "Unhandled error event" while `fn` runs. */
async function noCrash(fn: () => Promise<void>): Promise<void> {
  const problems: unknown[] = [];
  const onProblem = (e: unknown) => problems.push(e);
  const consoleError = console.error;
  console.error = (...args: unknown[]) => {
    if (String(args[0]).includes('Unhandled error event')) problems.push(args);
    else consoleError(...args);
  };
  process.on('uncaughtException', onProblem);
  process.on('unhandledRejection', onProblem);
  try {
    await fn();
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    process.off('uncaughtException', onProblem);
    process.off('unhandledRejection', onProblem);
    console.error = consoleError;
  }
  assert.deepEqual(problems, []);
}

/** How long `p` takes to settle, and whether it rejected with a store error. */
async function timed(p: Promise<unknown>): Promise<{ ms: number; err: unknown }> {
  const t = Date.now();
  try {
    await p;
    return { ms: Date.now() - t, err: undefined };
  } catch (err) {
    return { ms: Date.now() - t, err };
  }
}

/** The `new Redis()` options of a standalone or Sentinel configuration. */
function redisOptions(...args: Parameters<typeof ioredisOptions>): RedisOptions {
  const s = ioredisOptions(...args);
  assert.notEqual(s.mode, 'cluster');
  return s.options as RedisOptions;
}

describe('ioredisOptions', () => {
  it('standalone defaults: 127.0.0.1:6379, fail fast, timeouts, no TLS', () => {
    const s = ioredisOptions({ type: 'redis' });
    assert.equal(s.mode, 'standalone');
    assert.equal(s.target, 'redis://127.0.0.1:6379/0');
    const { retryStrategy, ...o } = s.options;
    assert.deepEqual(o, {
      host: '127.0.0.1',
      port: 6379,
      connectTimeout: 5000,
      commandTimeout: 2000,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: true,
      enableOfflineQueue: false,
      enableReadyCheck: true,
      lazyConnect: false,
      connectionName: 'themis',
    });
    assert.equal(typeof retryStrategy, 'function');
    assert.ok((retryStrategy as (n: number) => number)(1000) <= 2100, 'the backoff is capped');
  });

  it('takes credentials and the database from the URL; explicit settings win; the target hides the password', () => {
    const s = ioredisOptions({ type: 'redis', url: 'redis://alice:p%40ss@redis.example.net:7000/2' });
    assert.equal(s.mode, 'standalone');
    assert.deepEqual([s.options.host, s.options.port, s.options.username, s.options.password, s.options.db], ['redis.example.net', 7000, 'alice', 'p@ss', 2]);
    assert.equal(s.target, 'redis://redis.example.net:7000/2');
    const o = redisOptions({ type: 'redis', url: 'redis://:urlpw@h/2', password: 'mine', username: 'bob', db: 5, connectTimeout: 100, commandTimeout: 50 });
    assert.deepEqual([o.username, o.password, o.db, o.connectTimeout, o.commandTimeout], ['bob', 'mine', 5, 100, 50]);
    assert.equal(redisOptions({ type: 'redis', url: 'redis://[::1]:6380' }).host, '::1');
  });

  it('TLS: rediss:// implies it, an explicit setting wins, files are read', () => {
    assert.deepEqual(redisOptions({ type: 'redis', url: 'rediss://h' }).tls, {});
    assert.equal(ioredisOptions({ type: 'redis', url: 'rediss://h' }).target, 'rediss://h:6379/0');
    assert.equal(redisOptions({ type: 'redis', url: 'rediss://h', tls: false }).tls, undefined);
    assert.deepEqual(redisOptions({ type: 'redis', tls: true }).tls, {});
    const read: string[] = [];
    const tls = redisOptions({ type: 'redis', tls: { ca: '/ca.pem', cert: '/c.pem', key: '/k.pem', rejectUnauthorized: false, servername: 'redis.internal' } }, { readFile: (p) => (read.push(p), Buffer.from(`pem of ${p}`)) }).tls;
    assert.deepEqual(read, ['/ca.pem', '/c.pem', '/k.pem']);
    assert.deepEqual(tls, { ca: Buffer.from('pem of /ca.pem'), cert: Buffer.from('pem of /c.pem'), key: Buffer.from('pem of /k.pem'), rejectUnauthorized: false, servername: 'redis.internal' });
    assert.throws(() => ioredisOptions({ type: 'redis', tls: { ca: '/nonexistent/ca.pem' } }), code('THEMIS_ERR_STORE_TLS_FILE', /tls\.ca: cannot read \/nonexistent\/ca\.pem: ENOENT/));
  });

  it('Sentinel: sentinels, master name, both passwords; TLS for sentinels and master', () => {
    const s = ioredisOptions({ type: 'redis', sentinel: { name: 'mymaster', nodes: ['10.0.0.1:26379', '[2001:db8::2]:26380'], password: 'sentinel-pw' }, password: 'master-pw', db: 1, tls: true });
    assert.equal(s.mode, 'sentinel');
    assert.equal(s.target, 'sentinel:mymaster@10.0.0.1:26379,[2001:db8::2]:26380');
    const o = s.options;
    assert.deepEqual(o.sentinels, [{ host: '10.0.0.1', port: 26379 }, { host: '2001:db8::2', port: 26380 }]);
    assert.deepEqual([o.name, o.sentinelPassword, o.password, o.db, o.enableOfflineQueue, o.maxRetriesPerRequest, o.commandTimeout], ['mymaster', 'sentinel-pw', 'master-pw', 1, false, 0, 2000]);
    assert.deepEqual([o.tls, o.sentinelTLS, o.enableTLSForSentinelMode], [{}, {}, true]);
    assert.equal(typeof o.retryStrategy, 'function');
    assert.equal(o.host, undefined);
  });

  it('Cluster: seed nodes; password and TLS for every node; fail fast at the cluster level', () => {
    const s = ioredisOptions({ type: 'redis', cluster: { nodes: ['10.0.0.1:7000', 'node-2:7001'] }, password: 'pw', username: 'u', tls: { servername: 'redis' }, commandTimeout: 300 });
    assert.equal(s.mode, 'cluster');
    if (s.mode !== 'cluster') return;
    assert.deepEqual(s.nodes, [{ host: '10.0.0.1', port: 7000 }, { host: 'node-2', port: 7001 }]);
    assert.equal(s.target, 'cluster:10.0.0.1:7000,node-2:7001');
    const { clusterRetryStrategy, dnsLookup, redisOptions, ...o } = s.options;
    assert.deepEqual(o, { enableOfflineQueue: false, enableReadyCheck: true, slotsRefreshTimeout: 300 });
    assert.deepEqual(redisOptions, { username: 'u', password: 'pw', tls: { servername: 'redis' }, maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false, autoResubscribe: true, connectTimeout: 5000, commandTimeout: 300, connectionName: 'themis' });
    assert.equal(typeof clusterRetryStrategy, 'function');
    assert.equal(typeof dnsLookup, 'function', 'with TLS, node names are kept for certificate checks');
    const plain = ioredisOptions({ type: 'redis', cluster: { nodes: ['h:1'] } });
    assert.ok(plain.mode === 'cluster' && plain.options.redisOptions?.tls === undefined && plain.options.dnsLookup === undefined);
  });

  it('reconnectDelay: 50 ms doubling, capped, with jitter', () => {
    for (let i = 0; i < 20; i++) {
      const d1 = reconnectDelay(1);
      assert.ok(d1 >= 50 && d1 < 150, String(d1));
      const d4 = reconnectDelay(4);
      assert.ok(d4 >= 400 && d4 < 500, String(d4));
      assert.ok(reconnectDelay(50, 1000) < 1100);
      assert.ok(reconnectDelay(5000) < 2100);
    }
  });
});

describe('RedisStore against redis-server', { skip }, () => {
  let server: RedisServer;
  let raw: Redis;
  let n = 0;
  before(async () => {
    server = await startRedis();
    raw = new Redis(server.url, noRetry);
  });
  after(async () => {
    raw?.disconnect();
    await server?.stop();
  });
  /** A store on the shared server, with a prefix of its own. */
  const store = (extra: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}, options: ConstructorParameters<typeof RedisStore>[1] = {}) => redisStore({ url: server.url, keyPrefix: `t${++n}:`, commandTimeout: 1000, ...extra }, options);

  describe('the store contract', () => {
    storeContract(async () => {
      const s = store();
      await s.connect();
      return s;
    });
  });

  it('atomic: calls on one key run in call order even when the server lost its scripts (NOSCRIPT, resent as EVAL)', async () => {
    const APPEND = defineAtomicOperation({
      name: 'TEST.APPEND',
      type: 'string',
      lua: `return redis.call('APPEND', KEYS[1], ARGV[1])`,
      encode: (a: string) => [a],
      decode: (reply) => Number(reply),
      memory(key, a) {
        const text = (key.get() ?? '') + a;
        key.set(text);
        return text.length;
      },
    });
    const s = store();
    await s.connect();
    try {
      for (let round = 0; round < 10; round++) {
        await raw.script('FLUSH');
        const calls = ['a', 'b', 'c', 'd'].flatMap((x) => [{ key: `ord:${round}`, args: x }, { key: `ord:${round}:other`, args: x }]);
        assert.deepEqual(await s.atomic(APPEND, calls), [1, 1, 2, 2, 3, 3, 4, 4]);
        assert.equal(await s.get(`ord:${round}`), 'abcd');
      }
    } finally {
      await s.close();
    }
  });

  it('connects in the background: status connecting, then ready; ready and connect() resolve', async () => {
    const s = store();
    assert.equal(s.status, 'connecting');
    await s.ready;
    assert.equal(s.status, 'ready');
    await s.connect(100);
    await s.close();
    assert.equal(s.status, 'down');
  });

  it('prefixes every key, including those the increment script touches, and every channel', async () => {
    const s = store({ keyPrefix: 'pfx:' });
    await s.set('k', 'v');
    await s.increment('counter', 3, 60_000);
    assert.equal(await raw.get('pfx:k'), 'v');
    assert.equal(await raw.exists('k'), 0);
    assert.equal(await raw.get('pfx:counter'), '3');
    assert.ok((await raw.pttl('pfx:counter')) > 50_000);
    assert.equal(await raw.exists('counter'), 0);
    await raw.set('pfx:fromoutside', 'o');
    assert.equal(await s.get('fromoutside'), 'o');

    // Channels: SUBSCRIBE is acknowledged when subscribe() resolves, on the prefixed channel.
    const got: string[] = [];
    const off = await s.subscribe('chan', (m) => got.push(m));
    assert.deepEqual(await raw.pubsub('NUMSUB', 'pfx:chan', 'chan'), ['pfx:chan', 1, 'chan', 0]);
    await raw.publish('chan', 'unprefixed: not for us');
    await raw.publish('pfx:chan', 'for us');
    await eventually(() => got.length === 1, 2000, 'delivery');
    assert.deepEqual(got, ['for us']);
    const listener = raw.duplicate();
    const heard: string[] = [];
    listener.on('message', (channel: string, m: string) => heard.push(`${channel} ${m}`));
    await listener.subscribe('pfx:out');
    await s.publish('out', 'hello');
    await eventually(() => heard.length === 1, 2000, 'raw delivery');
    assert.deepEqual(heard, ['pfx:out hello']);
    listener.disconnect();
    await off();
    assert.deepEqual(await raw.pubsub('NUMSUB', 'pfx:chan'), ['pfx:chan', 0], 'the last unsubscribe unsubscribes on the server');
    await s.close();
  });

  it('counters and rankings: one hash and one sorted set under the prefixed key, with the TTL; a ranking never holds more than keep', async () => {
    const s = store({ keyPrefix: 'cr:' });
    await s.counterAdd('m:1', { sent: 3, bytes: 1200 }, 60_000);
    await s.counterAdd('m:1', { sent: 1 });
    assert.deepEqual(await raw.hgetall('cr:m:1'), { sent: '4', bytes: '1200' });
    assert.equal(await raw.type('cr:m:1'), 'hash');
    assert.ok((await raw.pttl('cr:m:1')) > 50_000, 'counterAdd without a TTL keeps the expiry');
    assert.equal(await raw.exists('m:1'), 0);
    await raw.hset('cr:outside', 'n', '9');
    assert.deepEqual(await s.counterRead(['outside', 'm:1']), [{ n: 9 }, { sent: 4, bytes: 1200 }]);

    for (let i = 0; i < 40; i++) {
      await s.rankAdd('top', { [`a${i}`]: i, [`b${i}`]: 100 - i }, { keep: 4, ttlMs: 60_000 });
      assert.ok((await raw.zcard('cr:top')) <= 4);
    }
    assert.equal(await raw.type('cr:top'), 'zset');
    assert.ok((await raw.pttl('cr:top')) > 50_000);
    assert.deepEqual(await raw.zrevrange('cr:top', 0, -1, 'WITHSCORES'), ['b0', '100', 'b1', '99', 'b2', '98', 'b3', '97']);
    assert.deepEqual(await s.rankRead(['top'], 2), [[['b0', 100], ['b1', 99]]]);
    assert.equal(await raw.exists('top'), 0);
    await s.close();
  });

  it('keeps a channel subscribed on the server until its last handler leaves', async () => {
    const s = store({ keyPrefix: 'two:' });
    const off1 = await s.subscribe('c', () => {});
    const off2 = await s.subscribe('c', () => {});
    await off1();
    assert.deepEqual(await raw.pubsub('NUMSUB', 'two:c'), ['two:c', 1]);
    await off2();
    assert.deepEqual(await raw.pubsub('NUMSUB', 'two:c'), ['two:c', 0]);
    await s.close();
  });

  it('pub/sub between two daemons; another prefix is another pool', async () => {
    const a = store({ keyPrefix: 'pool:' });
    const b = store({ keyPrefix: 'pool:' });
    const other = store({ keyPrefix: 'elsewhere:' });
    const atB: string[] = [];
    const atA: string[] = [];
    const atOther: string[] = [];
    await b.subscribe('reload', (m) => atB.push(m));
    await a.subscribe('reload', (m) => atA.push(m));
    await other.subscribe('reload', (m) => atOther.push(m));
    await a.publish('reload', 'v2');
    await eventually(() => atA.length === 1 && atB.length === 1, 2000, 'delivery to both daemons');
    assert.deepEqual([atA, atB], [['v2'], ['v2']]);
    // What one daemon counts, the other sees.
    await a.increment('count');
    assert.equal(await b.increment('count'), 2);
    await other.publish('reload', 'probe');
    await eventually(() => atOther.length === 1, 2000, 'probe');
    assert.deepEqual(atB, ['v2']);
    await Promise.all([a.close(), b.close(), other.close()]);
  });

  it('a throwing or rejecting subscriber is logged; the others still hear; nothing crashes', async () => {
    await noCrash(async () => {
      const { logger, lines } = recorder();
      const s = store({}, { logger });
      const got: string[] = [];
      await s.subscribe('c', () => {
        throw new Error('bad handler');
      });
      await s.subscribe('c', async () => {
        throw new Error('bad async handler');
      });
      await s.subscribe('c', (m) => got.push(m));
      await s.publish('c', 'x');
      await s.publish('c', 'y');
      await eventually(() => got.length === 2, 2000, 'delivery');
      await eventually(() => lines.length >= 1, 2000, 'a log line');
      assert.equal(lines[0].message, 'redis store: a subscriber failed');
      assert.equal(lines.filter((l) => l.message === 'redis store: a subscriber failed').length, 1, 'rate-limited');
      await s.close();
    });
  });

  it('a command Redis refuses rejects with a coded error', async () => {
    const s = store();
    await s.set('text', 'abc');
    await assert.rejects(s.increment('text'), code('THEMIS_ERR_STORE_COMMAND', /INCRBY failed: .*not an integer/));
    await s.close();
    await assert.rejects(s.set('x', '1'), code('THEMIS_ERR_STORE_CLOSED'));
    await assert.rejects(s.subscribe('x', () => {}), code('THEMIS_ERR_STORE_CLOSED'));
  });
});

describe('RedisStore: password authentication', { skip }, () => {
  let server: RedisServer;
  before(async () => {
    server = await startRedis({ password: 's3cret' });
  });
  after(async () => server?.stop());

  it('connects with the password, in the options or in the URL', async () => {
    const s = redisStore({ url: server.url, password: 's3cret' });
    await s.connect(2000);
    await s.set('k', 'v');
    assert.equal(await s.get('k'), 'v');
    await s.close();
    const u = redisStore({ url: `redis://:s3cret@127.0.0.1:${server.port}/1` });
    assert.equal(await u.get('k'), undefined, 'database 1');
    await u.close();
  });

  it('a wrong or missing password: a clear coded error, logged, and no crash', async () => {
    await noCrash(async () => {
      for (const [password, why] of [['wrong-s3cret', /WRONGPASS/], [undefined, /NOAUTH/]] as const) {
        const { logger, lines } = recorder();
        const s = redisStore({ url: server.url, password, commandTimeout: 500 }, { logger });
        const { ms, err } = await timed(s.connect(3000));
        assert.ok(code('THEMIS_ERR_STORE_AUTH', why)(err), String(err));
        assert.match((err as Error).message, new RegExp(`^redis store redis://127\\.0\\.0\\.1:${server.port}/0 refused the credentials: `));
        assert.ok(ms < 1000, `connect() rejects as soon as Redis refuses (${ms} ms)`);
        await assert.rejects(s.get('k'), code('THEMIS_ERR_STORE_AUTH', why));
        assert.equal(s.status, 'down');
        assert.ok(lines.some((l) => l.level === 'error' && l.message === 'redis store: authentication failed'));
        if (password) {
          // ioredis attaches the failed HELLO 3 AUTH default <password> to its error: it must not leak.
          assert.ok(!inspect(lines, { depth: 20 }).includes(password), 'the password is never logged');
          assert.ok(!inspect(err, { depth: 20 }).includes(password), 'nor carried by the error');
        }
        await s.close();
      }
    });
  });
});

describe('RedisStore: outage and recovery', { skip }, () => {
  it('Redis down at start: construction does not throw, commands reject at noRetry, the store connects when Redis comes', async () => {
    await noCrash(async () => {
      const port = await freePort();
      const s = redisStore({ url: `redis://127.0.0.1:${port}`, commandTimeout: 500 }, { maxReconnectDelay: 100 });
      const first = await timed(s.get('k'));
      assert.ok(code('THEMIS_ERR_STORE_UNAVAILABLE', /ECONNREFUSED/)(first.err), String(first.err));
      assert.ok(first.ms < 500, `${first.ms} ms`);
      assert.equal(s.status, 'down');
      await assert.rejects(s.connect(200), code('THEMIS_ERR_STORE_CONNECT', /not ready within 200 ms: connect ECONNREFUSED/));
      const server = await startRedis({ port });
      try {
        await s.connect(3000);
        assert.equal(s.status, 'ready');
        await s.set('k', 'v');
        assert.equal(await s.get('k'), 'v');
        await s.close();
      } finally {
        await server.stop();
      }
    });
  });

  it('Redis killed: everything rejects fast, the process stays up, one log line per kind; Redis back: commands and subscriptions work again', async () => {
    const server = await startRedis();
    const { logger, lines } = recorder();
    const commandTimeout = 500;
    const a = redisStore({ url: server.url, commandTimeout }, { logger, maxReconnectDelay: 200 });
    const b = redisStore({ url: server.url, commandTimeout }, { maxReconnectDelay: 200 });
    try {
      await noCrash(async () => {
        await Promise.all([a.connect(), b.connect()]);
        const atB: string[] = [];
        await b.subscribe('reload', (m) => atB.push(m));
        await a.publish('reload', 'before');
        await eventually(() => atB.length === 1, 2000, 'delivery before the outage');
        await a.set('kept', 'no'); // not persisted: the server loses it

        await server.kill();
        const ops: [string, () => Promise<unknown>][] = [
          ['get', () => a.get('k')],
          ['set', () => a.set('k', 'v', 1000)],
          ['delete', () => a.delete('k')],
          ['increment', () => a.increment('k', 1, 1000)],
          ['publish', () => a.publish('reload', 'lost')],
          ['subscribe', () => a.subscribe('other', () => {})],
        ];
        for (let round = 0; round < 3; round++) {
          for (const [name, op] of ops) {
            const { ms, err } = await timed(op());
            assert.ok(err instanceof StoreError && ['THEMIS_ERR_STORE_UNAVAILABLE', 'THEMIS_ERR_STORE_TIMEOUT'].includes(err.code), `${name}: ${String(err)}`);
            assert.ok(ms <= commandTimeout + 200, `${name} rejected after ${ms} ms`);
          }
          await new Promise((r) => setTimeout(r, 150));
        }
        assert.equal(a.status, 'down');
        // Several reconnection attempts failed meanwhile; each kind of trouble is logged noRetry.
        const kinds = lines.map((l) => l.message);
        assert.equal(kinds.filter((m) => m === 'redis store: connection lost; reconnecting').length, 1, JSON.stringify(kinds));
        assert.equal(kinds.filter((m) => m === 'redis store: connection error').length, 1, JSON.stringify(kinds));

        await server.start();
        await eventually(() => a.set('k', 'back').then(() => true), 5000, 'commands after the restart');
        assert.equal(a.status, 'ready');
        assert.equal(await a.get('k'), 'back');
        assert.equal(await a.get('kept'), undefined);
        await eventually(() => lines.some((l) => l.level === 'info' && l.message === 'redis store: connection restored'), 2000, 'the restored line');
        // B's subscription is restored by itself.
        await eventually(
          async () => {
            await a.publish('reload', 'after');
            await new Promise((r) => setTimeout(r, 50));
            return atB.includes('after');
          },
          5000,
          'delivery after the restart',
        );
        assert.equal(atB[0], 'before');
        assert.ok(!atB.includes('lost'));
      });
    } finally {
      await Promise.all([a.close(), b.close()]);
      await server.stop();
    }
  });

  it('Redis hangs (SIGSTOP): commands reject within commandTimeout; it resumes: commands work', async () => {
    const server = await startRedis();
    const commandTimeout = 300;
    const s = redisStore({ url: server.url, commandTimeout });
    try {
      await noCrash(async () => {
        await s.connect();
        server.pause();
        const { ms, err } = await timed(s.get('k'));
        assert.ok(code('THEMIS_ERR_STORE_TIMEOUT', /GET got no answer within 300 ms/)(err), String(err));
        assert.ok(ms >= commandTimeout - 20 && ms < commandTimeout + 300, `${ms} ms`);
        const inc = await timed(s.increment('n'));
        assert.ok(code('THEMIS_ERR_STORE_TIMEOUT')(inc.err), String(inc.err));
        server.resume();
        await eventually(() => s.set('k', 'v').then(() => true), 3000, 'commands after SIGCONT');
        assert.equal(await s.get('k'), 'v');
      });
    } finally {
      server.resume();
      await s.close();
      await server.stop();
    }
  });
});

describe('RedisStore through Redis Sentinel', { skip }, () => {
  it('finds the master through a password-protected sentinel, and works', async () => {
    const master = await startRedis({ password: 'master-pw' });
    const sentinel = await startRedis({ password: 'sentinel-pw', sentinel: { name: 'themis-master', masterPort: master.port, masterPassword: 'master-pw' } });
    const raw = new Redis(master.port, '127.0.0.1', { ...noRetry, password: 'master-pw' });
    const s = redisStore({ sentinel: { name: 'themis-master', nodes: [`127.0.0.1:${sentinel.port}`], password: 'sentinel-pw' }, password: 'master-pw', keyPrefix: 'sen:' });
    try {
      assert.equal(s.target, `sentinel:themis-master@127.0.0.1:${sentinel.port}`);
      await s.connect(3000);
      await s.set('k', 'v');
      assert.equal(await raw.get('sen:k'), 'v', 'written to the master the sentinel named');
      assert.equal(await s.increment('n', 2), 2);
      const got: string[] = [];
      await s.subscribe('c', (m) => got.push(m));
      await s.publish('c', 'via sentinel');
      await eventually(() => got.length === 1, 2000, 'delivery');
    } finally {
      raw.disconnect();
      await s.close();
      await sentinel.stop();
      await master.stop();
    }
  });
});

describe('RedisStore on a Redis Cluster (3 masters)', { skip: skip || (redisCliAvailable() ? false : 'redis-cli not installed') }, () => {
  let cluster: RedisClusterServers;
  let n = 0;
  before(async () => {
    cluster = await startRedisCluster(3);
  });
  after(async () => cluster?.stop());
  const store = () => redisStore({ cluster: { nodes: cluster.nodes }, keyPrefix: `k${++n}:`, commandTimeout: 1000 });

  describe('the store contract', () => {
    storeContract(async () => {
      const s = store();
      await s.connect(5000);
      return s;
    });
  });

  it('spreads keys over the masters, and two daemons share counters and messages', async () => {
    const a = redisStore({ cluster: { nodes: [cluster.nodes[0]] }, keyPrefix: 'pool:' });
    const b = redisStore({ cluster: { nodes: [cluster.nodes[2]] }, keyPrefix: 'pool:' });
    await Promise.all([a.connect(5000), b.connect(5000)]);
    for (let i = 0; i < 30; i++) await a.increment(`c${i}`, i + 1, 60_000);
    for (let i = 0; i < 30; i++) assert.equal(await b.get(`c${i}`), String(i + 1));
    const sizes = await Promise.all(cluster.servers.map(async (srv) => {
      const r = new Redis(srv.port, '127.0.0.1', noRetry);
      try {
        return await r.dbsize();
      } finally {
        r.disconnect();
      }
    }));
    assert.ok(sizes.filter((x) => x > 0).length >= 2, `keys on several masters: ${sizes.join(',')}`);
    const atB: string[] = [];
    await b.subscribe('reload', (m) => atB.push(m));
    await a.publish('reload', 'v2');
    await eventually(() => atB.length === 1, 3000, 'delivery across the cluster');
    assert.deepEqual(atB, ['v2']);
    await Promise.all([a.close(), b.close()]);
  });

  it('counters and rankings on keys of every master: written by one daemon, read in one call by another', async () => {
    const a = redisStore({ cluster: { nodes: [cluster.nodes[0]] }, keyPrefix: 'cr:' });
    const b = redisStore({ cluster: { nodes: [cluster.nodes[1]] }, keyPrefix: 'cr:' });
    await Promise.all([a.connect(5000), b.connect(5000)]);
    const keys = Array.from({ length: 30 }, (_, i) => `minute:${i}`);
    for (const [i, k] of keys.entries()) {
      await a.counterAdd(k, { n: i + 1, twice: 2 * (i + 1) }, 60_000);
      await a.rankAdd(`top:${k}`, { x: i, y: 2 * i, z: 1 }, { keep: 2, ttlMs: 60_000, mode: 'max' });
    }
    assert.deepEqual(await b.counterRead([...keys, 'absent']), [...keys.map((_, i) => ({ n: i + 1, twice: 2 * (i + 1) })), {}]);
    assert.deepEqual(await b.rankRead([...keys.map((k) => `top:${k}`), 'absent'], 5), [...keys.map((_, i) => (i === 0 ? [['z', 1], ['y', 0]] : [['y', 2 * i], [i === 1 ? 'z' : 'x', i]])), []]);
    await Promise.all([a.close(), b.close()]);
  });
});
