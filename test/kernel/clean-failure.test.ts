// A kernel or runtime that fails to build leaves nothing running: the plugins already set up are shut
// down in reverse order, a store the kernel created is closed, and a refused reload leaks no timer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { z } from 'zod';
import monitor from 'themis-plugin-monitor';
import { Kernel, MemoryStore, ThemisError, definePlugin, type PluginHooks } from '../../src/index.ts';
import { RuntimeManager } from '../../src/kernel/runtime.ts';

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
});
