// The store section of the configuration: schema, overrides from the command line and the
// environment, and createStore.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, RedisStore, StoreError, applyStoreOverrides, createStore, parseHostPort, parseStoreConfig, storeConfigSchema, type StoreConfig } from '../../src/store/index.ts';
import { freePort } from '../helpers/themis.ts';

/** The message of the first schema issue, with its path. */
function problem(input: unknown): string {
  const r = storeConfigSchema.safeParse(input);
  assert.equal(r.success, false, `expected ${JSON.stringify(input)} to be refused`);
  const issue = r.error!.issues[0];
  return `${issue.path.join('.')}: ${issue.message}`;
}

describe('storeConfigSchema', () => {
  it('defaults to the memory store', () => {
    assert.deepEqual(storeConfigSchema.parse(undefined), { type: 'memory' });
    assert.deepEqual(storeConfigSchema.parse({ type: 'memory' }), { type: 'memory' });
  });

  it('the memory store takes its bounds from the configuration, checked at load', async () => {
    const store = createStore({ type: 'memory', maxKeys: 1234, sweepIntervalMs: 5_000 });
    assert.ok(store instanceof MemoryStore);
    assert.equal(store.maxKeys, 1234);
    await store.close();
    for (const bad of [{ maxKeys: 0 }, { maxKeys: 1.5 }, { sweepIntervalMs: 10 }]) {
      const r = storeConfigSchema.safeParse({ type: 'memory', ...bad });
      assert.equal(r.success, false, JSON.stringify(bad));
    }
  });

  it('accepts every Redis form', () => {
    const configs: StoreConfig[] = [
      { type: 'redis' },
      { type: 'redis', url: 'rediss://user:pw@redis.example.net:6380/2', keyPrefix: 'pool-a:', connectTimeout: 1000, commandTimeout: 500 },
      { type: 'redis', url: 'redis://[::1]:6379', password: 'x', username: 'themis', db: 3, tls: { ca: '/etc/ssl/ca.pem', cert: '/c.pem', key: '/k.pem', rejectUnauthorized: true, servername: 'redis' } },
      { type: 'redis', sentinel: { name: 'mymaster', nodes: ['10.0.0.1:26379', '[2001:db8::1]:26379'], password: 's' }, password: 'm', tls: true },
      { type: 'redis', cluster: { nodes: ['10.0.0.1:7000', 'node-2.example.net:7001'] } },
    ];
    for (const c of configs) assert.deepEqual(storeConfigSchema.parse(c), c);
  });

  it('refuses unknown keys, at every level', () => {
    assert.match(problem({ type: 'memory', url: 'redis://x' }), /url/);
    assert.match(problem({ type: 'redis', urll: 'redis://x' }), /urll/);
    assert.match(problem({ type: 'redis', tls: { cafile: '/x' } }), /cafile/);
    assert.match(problem({ type: 'redis', sentinel: { name: 'm', nodes: ['h:1'], master: 'x' } }), /master/);
    assert.match(problem({ type: 'redis', cluster: { nodes: ['h:1'], replicas: 1 } }), /replicas/);
    assert.match(problem({ type: 'mongodb' }), /^type: /);
  });

  it('refuses sentinel together with cluster, and url with either, with a clear message', () => {
    assert.equal(problem({ type: 'redis', sentinel: { name: 'm', nodes: ['h:1'] }, cluster: { nodes: ['h:2'] } }), 'cluster: sentinel and cluster are mutually exclusive: a store uses one Redis topology');
    assert.match(problem({ type: 'redis', url: 'redis://h', cluster: { nodes: ['h:2'] } }), /^url: url cannot be combined with cluster/);
    assert.match(problem({ type: 'redis', url: 'redis://h', sentinel: { name: 'm', nodes: ['h:1'] } }), /^url: url cannot be combined with sentinel/);
    assert.match(problem({ type: 'redis', cluster: { nodes: ['h:2'] }, db: 1 }), /^db: Redis Cluster has only database 0/);
  });

  it('refuses bad URLs, addresses and numbers', () => {
    assert.match(problem({ type: 'redis', url: 'http://h:6379' }), /^url: expected a redis:\/\/ or rediss:\/\/ URL, got http:/);
    assert.match(problem({ type: 'redis', url: 'not a url' }), /^url: expected a redis:\/\//);
    assert.match(problem({ type: 'redis', url: 'redis://h/abc' }), /database number/);
    assert.match(problem({ type: 'redis', sentinel: { name: 'm', nodes: ['h'] } }), /^sentinel\.nodes\.0: expected 'host:port'/);
    assert.match(problem({ type: 'redis', cluster: { nodes: ['h:99999'] } }), /^cluster\.nodes\.0: expected 'host:port'/);
    assert.match(problem({ type: 'redis', cluster: { nodes: [] } }), /seed node/);
    assert.match(problem({ type: 'redis', commandTimeout: 0 }), /^commandTimeout: /);
    assert.match(problem({ type: 'redis', db: -1 }), /^db: /);
  });

  it('parseStoreConfig throws a coded error naming the path', () => {
    assert.throws(
      () => parseStoreConfig({ type: 'redis', sentinel: { name: 'm', nodes: ['nope'] } }),
      (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_CONFIG' && e.message === "store configuration: sentinel.nodes.0: expected 'host:port'",
    );
  });

  it('parseHostPort', () => {
    assert.deepEqual(parseHostPort('10.0.0.1:7000'), { host: '10.0.0.1', port: 7000 });
    assert.deepEqual(parseHostPort('[::1]:26379'), { host: '::1', port: 26379 });
    assert.deepEqual(parseHostPort('redis-1.example.net:6379'), { host: 'redis-1.example.net', port: 6379 });
    for (const bad of ['h', 'h:', ':1', 'h:0', 'h:65536', '::1:6379', 'a b:1']) assert.equal(parseHostPort(bad), undefined, bad);
  });
});

describe('applyStoreOverrides', () => {
  it('without overrides, returns the configuration (memory when none)', () => {
    const c: StoreConfig = { type: 'redis', url: 'redis://a:1' };
    assert.equal(applyStoreOverrides(c, {}), c);
    assert.deepEqual(applyStoreOverrides(undefined, {}), { type: 'memory' });
    assert.deepEqual(applyStoreOverrides({ type: 'memory' }, { url: '', password: '' }), { type: 'memory' }, 'empty strings count as absent');
  });

  it('a URL turns memory into Redis, and replaces a sentinel or cluster topology, keeping the other settings', () => {
    assert.deepEqual(applyStoreOverrides({ type: 'memory' }, { url: 'redis://r:6380' }), { type: 'redis', url: 'redis://r:6380' });
    assert.deepEqual(applyStoreOverrides(undefined, { url: 'redis://r:6380', password: 'pw' }), { type: 'redis', url: 'redis://r:6380', password: 'pw' });
    assert.deepEqual(applyStoreOverrides({ type: 'redis', keyPrefix: 'p:', commandTimeout: 100, sentinel: { name: 'm', nodes: ['h:1'] } }, { url: 'redis://r' }), { type: 'redis', keyPrefix: 'p:', commandTimeout: 100, url: 'redis://r' });
    assert.deepEqual(applyStoreOverrides({ type: 'redis', url: 'redis://old' }, { url: 'rediss://new' }), { type: 'redis', url: 'rediss://new' });
  });

  it('a password replaces the configured one; a memory store ignores it', () => {
    assert.deepEqual(applyStoreOverrides({ type: 'redis', password: 'old', cluster: { nodes: ['h:1'] } }, { password: 'new' }), { type: 'redis', password: 'new', cluster: { nodes: ['h:1'] } });
    assert.deepEqual(applyStoreOverrides({ type: 'memory' }, { password: 'pw' }), { type: 'memory' });
  });

  it('validates the result', () => {
    assert.throws(() => applyStoreOverrides(undefined, { url: 'http://x' }), (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_CONFIG' && /^store configuration: url: /.test(e.message));
  });
});

describe('createStore', () => {
  it('makes a memory store, or a Redis store that does not throw when Redis is unreachable', async () => {
    const m = createStore({ type: 'memory' });
    assert.ok(m instanceof MemoryStore);
    await m.close();
    const port = await freePort(); // nothing listens there
    const r = createStore({ type: 'redis', url: `redis://127.0.0.1:${port}`, commandTimeout: 200 });
    try {
      assert.ok(r instanceof RedisStore);
      await assert.rejects(r.get('x'), (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_UNAVAILABLE' && /ECONNREFUSED/.test(e.message));
      assert.equal((r as RedisStore).status, 'down');
    } finally {
      await r.close();
    }
    await assert.rejects(r.get('x'), (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_CLOSED');
  });

  it('validates the configuration', () => {
    assert.throws(() => createStore({ type: 'redis', cluster: { nodes: ['x'] } }), (e: unknown) => e instanceof StoreError && e.code === 'THEMIS_ERR_STORE_CONFIG');
  });
});
