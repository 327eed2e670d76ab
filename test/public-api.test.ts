// The package's entry points stay narrow: `themis-milter` is the plugin API, the store and the
// configuration helpers; the engine is `themis-milter/milter`; the harness `themis-milter/testing`.
// A name added to or removed from the root is a decision, so this list changes with it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

const ROOT = [
  'CodedError', 'KERNEL_VERSION', 'Kernel', 'LIFECYCLE_HOOKS', 'MemoryStore', 'NetworkList', 'OBSERVER_HOOKS', 'PluginError', 'RedisStore', 'SEVERITY',
  'STAGE_HOOKS', 'StoreError', 'THEMIS_ERRORS', 'ThemisError', 'createStore', 'defineAtomicOperation', 'defineConfig', 'definePlugin', 'errorRegistry',
  'fillTemplate', 'findConfig', 'invalidAtomicArgument', 'isPluginError', 'isStoreError', 'isThemisError', 'loadConfig', 'pagesOf', 'parseNetwork',
  'parseStoredList', 'pluginErrors', 'replyConfigSchema', 'replyText', 'resolveReply',
];

describe('public API', () => {
  it('themis-milter exports the plugin API, the store and the configuration helpers, and nothing internal', async () => {
    const root = await import('themis-milter');
    assert.deepEqual(Object.keys(root).sort(), [...ROOT].sort());
    for (const internal of ['RuntimeManager', 'PolicyMatcher', 'ioredisOptions', 'MilterClient', 'createMilterServer', 'registerPluginErrors', 'validateCounterAdd', 'kernelOptionsOf', 'pickWinner'])
      assert.equal(internal in root, false, `${internal} is internal`);
  });

  it('the engine and the harness have their own entry points', async () => {
    const milter = await import('themis-milter/milter');
    for (const name of ['MilterClient', 'createMilterServer', 'parseSocketSpec']) assert.equal(typeof (milter as Record<string, unknown>)[name], 'function', name);
    const testing = await import('themis-milter/testing');
    for (const name of ['createTestKernel', 'problemsOf', 'useTestClock', 'atomicOperationContract', 'storeContract', 'startRedis', 'startRedisCluster']) assert.equal(typeof (testing as Record<string, unknown>)[name], 'function', name);
    const dns = await import('themis-milter/dns');
    assert.equal(typeof dns.createResolver, 'function', 'the shared DNS resolver');
  });
});
