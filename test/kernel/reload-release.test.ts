// A runtime replaced by a reload is let go (issue 21): once retired, nothing of it — its kernel, its
// plugins' hooks and the state they close over — stays reachable, whether or not anyone scrapes the
// metrics, whether its plugins' metrics are read through `collect`, whether the reload succeeded or was
// refused. Checked with weak references and a forced GC, so that a runtime kept per reload (the memory
// a daemon reloaded a thousand times would hold) fails the test, not only a timer or a socket kept.
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { z } from 'zod';
import { Kernel, MemoryStore, definePlugin, type PluginHooks } from '../../src/index.ts';
import { RuntimeManager } from '../../src/kernel/runtime.ts';
import { MilterClient, createMilterServer } from '../../src/milter/index.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

const silent = { info() {}, warn() {}, error() {}, debug() {}, child() { return this; } } as never;

/**
 * A plugin with per-runtime state (a big buffer, so that keeping it shows), a hook on a stage (so the
 * kernel times it), and a gauge read through `collect` at scrape time, as the monitor plugin's are.
 * `alive` holds a weak reference to each runtime's state.
 */
function stateful(alive: WeakRef<object>[]) {
  return definePlugin({
    name: 'stateful',
    version: '1.0.0',
    kernel: '^1',
    claims: { field: 'stateful', schema: z.boolean() },
    setup({ metrics }): PluginHooks<boolean> {
      const state = { generation: alive.length + 1, seen: 0, ballast: new Uint8Array(256 * 1024) };
      alive.push(new WeakRef(state));
      const gauge = metrics.gauge({
        name: 'seen',
        help: 'messages seen by the serving runtime',
        collect() {
          gauge.set(state.seen);
        },
      });
      return {
        mailFrom() {
          state.seen++;
        },
      };
    },
  });
}

describe('a retired runtime is released', () => {
  it('after 50 reloads (valid and refused), only the serving runtime’s plugin state is reachable; metrics scraped or not', async (t) => {
    const alive: WeakRef<object>[] = [];
    const plugin = stateful(alive);
    const registry = new Registry();
    const store = new MemoryStore();
    let valid = true;
    const manager = new RuntimeManager({
      registry,
      logger: silent,
      retireCheckInterval: 10,
      build: async () => ({
        kernel: await Kernel.create({ plugins: [{ plugin }], policies: [{ name: 'p', stateful: true, ...(valid ? {} : { nosuchfield: 1 }) }], store, registry }),
        info: { file: undefined, hash: valid ? 'ok' : 'bad', loadedAt: new Date(), plugins: ['stateful'], policies: 1 },
      }),
    });
    await manager.start();
    const server = createMilterServer(manager.current.kernel.application);
    await server.listen('inet:0@127.0.0.1');
    manager.attach(server);
    t.after(async () => {
      await server.close({ drainTimeout: 0 });
      await manager.stop();
      await store.close();
    });
    const send = async () => {
      const c = await MilterClient.connect(`inet:${server.port}@127.0.0.1`);
      await c.sendMessage({ connect: { hostname: 'c.example' }, helo: 'c.example', from: 'a@example.org', to: ['b@example.test'], body: 'x\r\n' });
      await c.quit();
    };
    for (let i = 0; i < 50; i++) {
      await send();
      valid = i % 5 !== 3;
      const r = await manager.reload('manual');
      assert.equal(r.ok, valid);
      // A scrape now and then, as Prometheus would (but not after each reload).
      if (i === 20) await registry.metrics();
    }
    valid = true;
    await send();
    // The retire sweep (every 10 ms here) shuts the replaced runtimes down once their connections are gone.
    for (let i = 0; i < 200 && manager.retiringCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(manager.retiringCount, 0);
    await collect();

    const reachable = alive.map((w, i) => (w.deref() ? i + 1 : 0)).filter(Boolean);
    const serving = (alive.at(-1)!.deref() as { generation: number } | undefined)?.generation;
    t.diagnostic(`${alive.length} plugin states set up (valid and refused builds); reachable after GC: ${reachable.join(', ')}`);
    assert.deepEqual(reachable, [alive.length], 'only the serving runtime’s state is reachable');
    assert.equal(serving, alive.length);
    // The gauge reports the serving runtime's count, not the first runtime's.
    await send();
    const text = await registry.metrics();
    assert.match(text, /^themis_plugin_stateful_seen 2$/m);
    // And the hook counts of the retired runtimes were kept for the next scrape: every call is counted once.
    assert.match(text, /^themis_hook_calls_total\{plugin="stateful",hook="mailFrom"\} 52$/m);
  });
});
