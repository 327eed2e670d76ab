// Type tests of defineConfig: each policy field is typed by the plugin that claims it (the input type
// of its zod schema), when the plugin is given as an object. Checked by `tsc -p test/types`
// (test/types/types.test.ts): a `@ts-expect-error` line must fail to compile, or tsc reports it.
import { expectTypeOf } from 'expect-type';
import type { z } from 'zod';
import { defineConfig, type PluginDefinition, type PluginEntry, type PolicyInput, type PolicyOf, type ThemisConfig } from 'themis-milter';
import spf, { spfField, type SpfOptions, type SpfPolicy } from 'themis-plugin-spf';
import headers, { type HeadersErrorCode, type HeadersInput, type HeadersOptions, type HeadersPolicy } from 'themis-plugin-headers';
import monitor, { type MonitorErrorCode, type MonitorOptions } from 'themis-plugin-monitor';
import ratelimit, { ratelimitField, type RatelimitErrorCode, type RatelimitOptions, type RatelimitPolicy } from 'themis-plugin-ratelimit';
import allowlist from 'themis-plugin-recipient-allowlist';

// ratelimit infers its types as well, windows typed (z.custom) though checked by its transform.
const typedRatelimit = ratelimit;
expectTypeOf(ratelimit).toEqualTypeOf<PluginDefinition<RatelimitPolicy, RatelimitOptions, RatelimitErrorCode, 'ratelimit', z.input<typeof ratelimitField>>>();

// The built-in plugins infer their types: the same as the types they declare, plus the field's name
// and the schema's input (monitor claims no field).
expectTypeOf(spf).toEqualTypeOf<PluginDefinition<SpfPolicy, SpfOptions, string, 'spf', z.input<typeof spfField>>>();
expectTypeOf(headers).toEqualTypeOf<PluginDefinition<HeadersPolicy, HeadersOptions, HeadersErrorCode, 'headers', HeadersInput>>();
expectTypeOf(monitor).toEqualTypeOf<PluginDefinition<unknown, MonitorOptions, MonitorErrorCode, never, unknown>>();

// The claimed fields are typed by their schemas' input types; every field is optional.
type Policy = PolicyOf<[typeof spf, typeof headers, typeof monitor, typeof typedRatelimit]>;
expectTypeOf<Policy['spf']>().toEqualTypeOf<z.input<typeof spfField> | undefined>();
expectTypeOf<Policy['headers']>().toEqualTypeOf<HeadersInput | undefined>();
expectTypeOf<Policy['ratelimit']>().toEqualTypeOf<z.input<typeof ratelimitField> | undefined>();
expectTypeOf<Policy>().toHaveProperty('match');
// monitor claims no field; a policy type is still assignable where the kernel takes policies.
expectTypeOf<Policy>().not.toHaveProperty('monitor');
expectTypeOf<Policy>().toExtend<PolicyInput>();

// A correct configuration compiles: inputs as written (defaults left out, ratelimit's windows as a string).
const good = defineConfig({
  plugins: [spf, { plugin: headers, options: {} }, monitor, typedRatelimit],
  policies: [
    { name: 'spf-tag', match: { direction: 'inbound' }, spf: { mailFrom: { fail: 'tag', softfail: 'tag' } } },
    { name: 'sender-rate', ratelimit: { windows: '1000/1m', by: 'sender+' } },
    { name: 'scanned', headers: [{ name: 'spam-flag', if: { header: 'X-Spam-Flag', equals: 'YES' }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }] }] },
    { name: 'only-headers', headers: { rules: [{ if: { header: 'X-Virus', present: true }, verdict: { action: 'quarantine' } }], onlyHeaders: true } },
    { name: 'trusted', priority: 1, type: 'bypass', match: { source: 'vip' } },
  ],
});
expectTypeOf(good).toExtend<ThemisConfig>();

// A wrongly typed field does not compile, whichever plugin claims it.
defineConfig({
  plugins: [spf, headers, typedRatelimit],
  policies: [
    // @ts-expect-error -- 'rejectt' is no SPF action
    { name: 'a', spf: { mailFrom: { fail: 'rejectt' } } },
    // @ts-expect-error -- the spf field is an object
    { name: 'b', spf: true },
    // @ts-expect-error -- by names a subject (a string)
    { name: 'c', ratelimit: { windows: '10/1m', by: 5 } },
    // @ts-expect-error -- windows is the shorthand or a list of windows, not a number
    { name: 'c2', ratelimit: { windows: 100 } },
    // @ts-expect-error -- a window's limit is a number
    { name: 'c3', ratelimit: { windows: [{ limit: '10', per: '1m' }] } },
    // @ts-expect-error -- a header rule's then is a list of actions
    { name: 'd', headers: [{ if: { header: 'X-Spam-Flag', equals: 'YES' }, then: { add: 'X-A', value: '1' } }] },
    // @ts-expect-error -- the policy's own settings are typed as well
    { name: 'e', match: { direction: 'sideways' } },
  ],
});

// A field no listed plugin claims does not compile when every plugin's claim is known (the kernel
// would refuse it at load: THEMIS_ERR_POLICY_FIELD)…
defineConfig({
  plugins: [spf, monitor],
  policies: [
    // @ts-expect-error -- no plugin of the list claims `spff`
    { name: 'typo', spff: { mailFrom: { fail: 'reject' } } },
    // @ts-expect-error -- nor `ratelimit`: the ratelimit plugin is not in this list
    { name: 'missing', ratelimit: { windows: '10/1m' } },
  ],
});
// …nor when there are no plugins at all.
// @ts-expect-error -- no plugin claims `spf`
defineConfig({ plugins: [], policies: [{ name: 'none', spf: {} }] });

// A plugin given by name (resolved at load), or typed only as a PluginEntry (a list built at run
// time), may claim anything: other fields compile, but the known ones are still checked.
defineConfig({
  plugins: [spf, 'themis-plugin-ratelimit', './my-plugin.ts'],
  policies: [
    { name: 'a', spf: { mailFrom: { fail: 'reject' } }, ratelimit: { windows: '10/1m' }, anything: 1 },
    // @ts-expect-error -- spf is still typed by the spf plugin
    { name: 'b', spf: 5 },
  ],
});
const entries: PluginEntry[] = [{ plugin: spf }];
defineConfig({ plugins: entries, policies: [{ name: 'a', spf: 5, anything: { x: 1 } }] });
defineConfig({ plugins: [] as PluginEntry[], policies: [{ name: 'a', anything: true }] });
expectTypeOf<PolicyOf<PluginEntry[]>>().toEqualTypeOf<PolicyInput>();

// Configurations without a plugin list, or from a JSON-shaped object, compile as before.
defineConfig({ policies: [{ name: 'x', whatever: { a: 1 } }] });
const fromJson: ThemisConfig = JSON.parse('{}') as ThemisConfig;
defineConfig(fromJson);
defineConfig({ ...good, plugins: [...good.plugins!, 'themis-plugin-predict'] });

// The example third-party plugin infers everything: its `allowlist` field is typed.
defineConfig({
  plugins: [allowlist],
  policies: [
    { name: 'in', allowlist: { recipients: ['@example.com'] } },
    // @ts-expect-error -- action is reject or tempfail
    { name: 'out', allowlist: { recipients: ['@example.com'], action: 'drop' } },
  ],
});

// The rest of the configuration is typed too.
// @ts-expect-error -- no such MTA
defineConfig({ mta: 'exim' });
