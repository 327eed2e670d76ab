// Type tests of definePlugin: hooks are checked by name and by what they return, the claim, options
// and error codes flow from the definition into ctx, and another plugin's API is typed by the type it
// exports. Checked by `tsc -p test/types` (test/types/types.test.ts).
import { expectTypeOf } from 'expect-type';
import { z } from 'zod';
import { definePlugin, type EnvelopeEvent, type PluginDefinition, type PluginError, type PolicyOf, type Verdict } from 'themis-milter';
import type { RatelimitApi } from 'themis-plugin-ratelimit';

const claim = z.strictObject({ limit: z.number().int(), mode: z.enum(['soft', 'hard']).default('soft'), label: z.string().transform((s) => s.length) });
const options = z.strictObject({ verbose: z.boolean().default(false) });
const ERRORS = { THEMIS_EXAMPLE_BROKEN: 'example: {reason}' } as const;

// Everything is inferred: the claim (the schema's output) in ctx.policies, the options in ctx.options,
// the declared codes in ctx.error, the events of each hook.
const example = definePlugin({
  name: 'example',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'example', schema: claim },
  options,
  errors: ERRORS,
  setup(ctx) {
    expectTypeOf(ctx.options).toEqualTypeOf<{ verbose: boolean }>();
    expectTypeOf(ctx.error('THEMIS_EXAMPLE_BROKEN', { reason: 'x' })).toEqualTypeOf<PluginError<'THEMIS_EXAMPLE_BROKEN'>>();
    // @ts-expect-error -- a code the plugin does not declare
    ctx.error('THEMIS_EXAMPLE_UNKNOWN');
    return {
      rcptTo(hook, rcpt) {
        expectTypeOf(rcpt).toEqualTypeOf<EnvelopeEvent>();
        expectTypeOf(hook.policies[0].config).toEqualTypeOf<{ limit: number; mode: 'soft' | 'hard'; label: number }>();
        return hook.policies.some((p) => p.config.limit < 1) ? { action: 'reject', reason: 'over the limit' } : undefined;
      },
      async endOfMessage(): Promise<Verdict> {
        return { action: 'continue' };
      },
      shutdown() {},
    };
  },
});
// What defineConfig reads: the field's name and the schema's input (label is a string there).
expectTypeOf(example).toEqualTypeOf<PluginDefinition<z.output<typeof claim>, z.output<typeof options>, keyof typeof ERRORS, 'example', z.input<typeof claim>>>();
expectTypeOf<PolicyOf<[typeof example]>['example']>().toEqualTypeOf<{ limit: number; mode?: 'soft' | 'hard'; label: string } | undefined>();

// A misspelt hook next to a valid one does not compile (the error names `mailFromm`, at setup).
definePlugin({
  name: 'typo',
  version: '1.0.0',
  kernel: '^1',
  // @ts-expect-error -- mailFromm is no hook
  setup() {
    return {
      rcptTo() {},
      mailFromm() {},
    };
  },
});
// Nor in an arrow function, nor from an async setup.
// @ts-expect-error -- helo is a hook, heloo is not
definePlugin({ name: 'typo', version: '1.0.0', kernel: '^1', setup: () => ({ helo() {}, heloo() {} }) });
definePlugin({
  name: 'typo',
  version: '1.0.0',
  kernel: '^1',
  // @ts-expect-error -- shutDown is not shutdown
  async setup() {
    return { shutdown() {}, shutDown() {} };
  },
});

// A hook returning an action that is no verdict does not compile.
definePlugin({
  name: 'verdict',
  version: '1.0.0',
  kernel: '^1',
  // @ts-expect-error -- 'rejectt' is no VerdictAction
  setup() {
    return {
      rcptTo() {
        return { action: 'rejectt', reason: 'typo' };
      },
    };
  },
});

// A plugin without `errors` declares no code: ctx.error takes any string (it throws at run time).
definePlugin({
  name: 'no-errors',
  version: '1.0.0',
  kernel: '^1',
  setup(ctx) {
    expectTypeOf(ctx.error).parameter(0).toEqualTypeOf<string>();
    return {};
  },
});

// Another plugin's API, typed by the type its package exports (imported as a type only).
definePlugin({
  name: 'jailer',
  version: '1.0.0',
  kernel: '^1',
  dependencies: { ratelimit: '^1.0.0' },
  optionalDependencies: { monitor: '^1.0.0' },
  setup(ctx) {
    const rl = ctx.use<RatelimitApi>('ratelimit');
    expectTypeOf(rl).toEqualTypeOf<RatelimitApi>();
    expectTypeOf(rl.jail).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf(ctx.use<RatelimitApi>('ratelimit', { optional: true })).toEqualTypeOf<RatelimitApi | undefined>();
    // @ts-expect-error -- an API is an object
    ctx.use<string>('ratelimit');
    return {
      async endOfMessage() {
        // @ts-expect-error -- jail takes the policy, the subject, the value and the duration
        await rl.jail({ policy: 'senders', ms: 60_000 });
      },
    };
  },
});

// Explicit type arguments, the older form, still compile; the field's name is then unknown to
// defineConfig (any field passes), unless all five are given.
const explicit = definePlugin<{ limit: number }, unknown, 'THEMIS_OLD_X'>({
  name: 'old',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'old', schema: z.strictObject({ limit: z.number() }) },
  errors: { THEMIS_OLD_X: 'x' },
  setup: () => ({ rcptTo: (ctx) => void expectTypeOf(ctx.policies[0].config.limit).toBeNumber() }),
});
expectTypeOf<PolicyOf<[typeof explicit]>>().toHaveProperty('anything');
const fiveArgs = definePlugin<{ limit: number }, unknown, never, 'old', { limit: number }>({
  name: 'old',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'old', schema: z.strictObject({ limit: z.number() }) },
  setup: () => ({}),
});
expectTypeOf<PolicyOf<[typeof fiveArgs]>['old']>().toEqualTypeOf<{ limit: number } | undefined>();
expectTypeOf<PolicyOf<[typeof fiveArgs]>>().not.toHaveProperty('anything');
