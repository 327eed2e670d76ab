// A kernel or runtime that fails to build leaves nothing running: the plugins already set up are shut
// down in reverse order, a store the kernel created is closed, and a refused reload leaks no timer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { z } from 'zod';
import monitor from 'themis-plugin-monitor';
import { createServer } from 'node:net';
import { Redis } from 'ioredis';
import { Kernel, MemoryStore, RedisStore, ThemisError, definePlugin, type PluginHooks, type Store } from '../../src/index.ts';
import { RuntimeManager } from '../../src/kernel/runtime.ts';
import { redisAvailable, startRedis } from '../helpers/redis.ts';

const code = (c: string) => (e: unknown) => e instanceof ThemisError && e.code === c;

/** A plugin whose setup starts a timer and whose shutdown stops it; `events` records both, in order. */
function timed(name: string, events: string[]) {
  return definePlugin({
    name,
    version: '1.0.0',
    kernel: '^1',
    claims: { field: name, schema: z.boolean() },
    setup: (): PluginHooks<boolean> => {
      const timer = setInterval(() => undefined, 60_000);
      events.push(`setup ${name}`);
      return {
        shutdown() {
          clearInterval(timer);
          events.push(`shutdown ${name}`);
        },
      };
    },
  });
}

/** Timers alive in this process (what a leaked interval shows up as). */
const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

/** Every kind of resource alive in this process, counted (timers, TCP servers and sockets…). */
function resources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

/** Messages the holder plugins' subscriptions heard: one entry per live subscription per message. */
const heard: string[] = [];

/** A plugin that holds what plugins hold: a store subscription and a listening socket, released at shutdown. */
const holder = definePlugin({
  name: 'holder',
  version: '1.0.0',
  kernel: '^1',
  async setup({ store }) {
    const unsubscribe = await store.subscribe('holder:events', (m) => void heard.push(m));
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      async shutdown() {
        await unsubscribe();
        await new Promise((resolve) => server.close(resolve));
      },
    };
  },
});

describe('a failed load leaves nothing behind', () => {
  it('a plugin whose setup throws: the ones set up before it are shut down, in reverse order', async () => {
    const events: string[] = [];
    const before = timers();
    const broken = definePlugin({ name: 'broken', version: '1.0.0', kernel: '^1', setup: () => { throw new Error('no database'); } });
    await assert.rejects(
      Kernel.create({ plugins: [{ plugin: timed('first', events) }, { plugin: timed('second', events) }, { plugin: broken }] }),
      (e: unknown) => code('THEMIS_ERR_PLUGIN_SETUP')(e) && /no database/.test((e as Error).message),
    );
    assert.deepEqual(events, ['setup first', 'setup second', 'shutdown second', 'shutdown first']);
    assert.equal(timers(), before, 'no timer left running');
  });

  it('invalid policies, found after every plugin was set up: all of them are shut down', async () => {
    const events: string[] = [];
    const before = timers();
    await assert.rejects(
      Kernel.create({ plugins: [{ plugin: timed('first', events) }, { plugin: timed('second', events) }], policies: [{ name: 'p', first: 'not a boolean' }] }),
      (e: unknown) => e instanceof ThemisError && /policies\[0\]\.first/.test(e.message),
    );
    assert.deepEqual(events, ['setup first', 'setup second', 'shutdown second', 'shutdown first']);
    assert.equal(timers(), before);
  });

  it('a plugin with a bad hook after its setup ran is shut down too; a failing shutdown does not stop the others', async () => {
    const events: string[] = [];
    const typo = definePlugin({ name: 'typo', version: '1.0.0', kernel: '^1', setup: () => ({ mailfrom: () => undefined, shutdown: () => { events.push('shutdown typo'); throw new Error('boom'); } }) as never });
    await assert.rejects(Kernel.create({ plugins: [{ plugin: timed('first', events) }, { plugin: typo }] }), code('THEMIS_ERR_PLUGIN_UNKNOWN_HOOK'));
    assert.deepEqual(events, ['setup first', 'shutdown typo', 'shutdown first']);
  });

  it('a store the kernel created is closed; a store it was given is not', async () => {
    const given = new MemoryStore();
    let closed = 0;
    const close = given.close.bind(given);
    given.close = async () => {
      closed++;
      await close();
    };
    const broken = definePlugin({ name: 'broken', version: '1.0.0', kernel: '^1', setup: () => { throw new Error('x'); } });
    await assert.rejects(Kernel.create({ plugins: [{ plugin: broken }], store: given }), code('THEMIS_ERR_PLUGIN_SETUP'));
    assert.equal(closed, 0, 'the caller owns a store it passed in');
    await given.close();
  });

  it('a refused reload with the monitor plugin (which starts a timer in setup) leaks no timer', async () => {
    const registry = new Registry();
    const store = new MemoryStore();
    let valid = true;
    const manager = new RuntimeManager({
      registry,
      logger: { info() {}, warn() {}, error() {}, debug() {}, child() { return this; } } as never,
      build: async () => ({
        kernel: await Kernel.create({ plugins: [{ plugin: monitor }], policies: valid ? [] : [{ name: 'bad', nosuchfield: 1 }], store, registry }),
        info: { file: undefined, hash: valid ? 'a' : 'b', loadedAt: new Date(), plugins: ['monitor'], policies: 0 },
      }),
    });
    await manager.start();
    const serving = timers();
    valid = false;
    for (let i = 0; i < 3; i++) {
      const r = await manager.reload('manual');
      assert.equal(r.ok, false, 'the reload is refused');
    }
    assert.equal(timers(), serving, 'three refused reloads, no timer more than the serving runtime has');
    await manager.stop();
    await store.close();
  });

  it('refused reloads on a real Redis leak no timer, socket, listening server or store subscription', { skip: redisAvailable() ? false : 'redis-server not installed' }, async () => {
    const server = await startRedis();
    const raw = new Redis(server.url, { maxRetriesPerRequest: 0 });
    const store: Store = new RedisStore({ url: server.url, keyPrefix: 'cf:' });
    const registry = new Registry();
    let valid = true;
    const manager = new RuntimeManager({
      registry,
      logger: { info() {}, warn() {}, error() {}, debug() {}, child() { return this; } } as never,
      build: async () => ({
        kernel: await Kernel.create({ plugins: [{ plugin: holder }, { plugin: monitor }], policies: valid ? [] : [{ name: 'bad', nosuchfield: 1 }], store, registry }),
        info: { file: undefined, hash: valid ? 'a' : 'b', loadedAt: new Date(), plugins: ['holder', 'monitor'], policies: 0 },
      }),
    });
    const subscribers = async () => Number(((await raw.pubsub('NUMSUB', 'cf:holder:events')) as [string, number])[1]);
    try {
      await (store as RedisStore).connect();
      await manager.start();
      const serving = { resources: resources(), subscribers: await subscribers() };
      assert.equal(serving.subscribers, 1, 'the serving runtime holds its subscription');
      valid = false;
      for (let i = 0; i < 5; i++) assert.equal((await manager.reload('manual')).ok, false, 'the reload is refused');
      // Unsubscribing is an exchange with Redis: give the last one time to land.
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual({ resources: resources(), subscribers: await subscribers() }, serving, 'five refused reloads: the same timers, sockets, servers and subscriptions as the serving runtime');
      // One message, heard once: by the serving runtime's subscription only, none left by a refused build.
      await store.publish('holder:events', 'ping');
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(heard, ['ping']);
    } finally {
      await manager.stop();
      await store.close();
      raw.disconnect();
      await server.stop();
    }
  });
});
