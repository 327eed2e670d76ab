// Plugins that depend on plugins: `dependencies` (with version ranges) are checked at load and set up
// first; a plugin reaches another through the API it exposes, never through its internals.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kernel, ThemisError, definePlugin, type PluginHooks } from '../../src/index.ts';

const code = (c: string, text?: RegExp) => (e: unknown) => e instanceof ThemisError && e.code === c && (!text || text.test(e.message));

interface CounterApi {
  next(): number;
}

/** A plugin that exposes a counter; `order` records setups. */
function provider(order: string[], version = '1.2.0') {
  return definePlugin({
    name: 'counter',
    version,
    kernel: '^1',
    setup({ expose }): PluginHooks<unknown> {
      order.push('counter');
      let n = 0;
      expose({ next: () => ++n } satisfies CounterApi);
      return {};
    },
  });
}

/** A plugin that uses the counter's API from setup. */
function consumer(order: string[], got: number[], deps: Record<string, string> = { counter: '^1.0.0' }) {
  return definePlugin({
    name: 'consumer',
    version: '1.0.0',
    kernel: '^1',
    dependencies: deps,
    setup({ use }): PluginHooks<unknown> {
      order.push('consumer');
      const counter = use<CounterApi>('counter');
      got.push(counter.next(), counter.next());
      return {};
    },
  });
}

describe('plugin dependencies', () => {
  it('a dependency is set up first whatever the configuration order, and its API is reached through use()', async () => {
    const order: string[] = [];
    const got: number[] = [];
    await Kernel.create({ plugins: [{ plugin: consumer(order, got) }, { plugin: provider(order) }] });
    assert.deepEqual(order, ['counter', 'consumer']);
    assert.deepEqual(got, [1, 2]);
  });

  it('refuses a missing dependency, a version out of range, and a cycle, with THEMIS_ERR_PLUGIN_DEPENDENCY', async () => {
    await assert.rejects(Kernel.create({ plugins: [{ plugin: consumer([], []) }] }), code('THEMIS_ERR_PLUGIN_DEPENDENCY', /consumer: needs plugin counter \^1\.0\.0, which is not loaded/));
    await assert.rejects(
      Kernel.create({ plugins: [{ plugin: provider([], '2.0.0') }, { plugin: consumer([], []) }] }),
      code('THEMIS_ERR_PLUGIN_DEPENDENCY', /needs plugin counter \^1\.0\.0, but 2\.0\.0 is loaded/),
    );
    const a = definePlugin({ name: 'a', version: '1.0.0', kernel: '^1', dependencies: { b: '*' }, setup: () => ({}) });
    const b = definePlugin({ name: 'b', version: '1.0.0', kernel: '^1', dependencies: { a: '*' }, setup: () => ({}) });
    await assert.rejects(Kernel.create({ plugins: [{ plugin: a }, { plugin: b }] }), code('THEMIS_ERR_PLUGIN_DEPENDENCY', /dependency cycle: a → b → a/));
    await assert.rejects(Kernel.create({ plugins: [{ plugin: provider([]) }, { plugin: consumer([], [], { counter: 'not a range' }) }] }), code('THEMIS_ERR_PLUGIN_DEPENDENCY', /is not a semver range/));
  });

  it('use() of a plugin not named in dependencies, or of one that exposes nothing, is refused', async () => {
    const sneaky = definePlugin({ name: 'sneaky', version: '1.0.0', kernel: '^1', setup: ({ use }) => (use('counter'), {}) });
    await assert.rejects(Kernel.create({ plugins: [{ plugin: provider([]) }, { plugin: sneaky }] }), code('THEMIS_ERR_PLUGIN_DEPENDENCY', /uses plugin counter without naming it in dependencies/));
    const silent = definePlugin({ name: 'counter', version: '1.0.0', kernel: '^1', setup: () => ({}) });
    await assert.rejects(Kernel.create({ plugins: [{ plugin: silent }, { plugin: consumer([], []) }] }), code('THEMIS_ERR_PLUGIN_DEPENDENCY', /plugin counter exposes no API/));
  });

  it('an optional dependency: set up first when loaded, undefined when not', async () => {
    const seen: (number | undefined)[] = [];
    const opt = definePlugin({
      name: 'opt',
      version: '1.0.0',
      kernel: '^1',
      optionalDependencies: { counter: '^1.0.0' },
      setup: ({ use }) => (seen.push(use<CounterApi>('counter', { optional: true })?.next()), {}),
    });
    await Kernel.create({ plugins: [{ plugin: opt }, { plugin: provider([]) }] });
    await Kernel.create({ plugins: [{ plugin: opt }] });
    assert.deepEqual(seen, [1, undefined]);
    // A loaded optional dependency must still be in range.
    await assert.rejects(Kernel.create({ plugins: [{ plugin: opt }, { plugin: provider([], '3.0.0') }] }), code('THEMIS_ERR_PLUGIN_DEPENDENCY', /but 3\.0\.0 is loaded/));
  });

  it('a plugin loaded twice is still refused as a duplicate', async () => {
    await assert.rejects(Kernel.create({ plugins: [{ plugin: provider([]) }, { plugin: provider([]) }] }), code('THEMIS_ERR_PLUGIN_DUPLICATE'));
  });
});
