// Errors plugins own: a plugin declares its codes (THEMIS_<NAME>_<WORD>) in its definition, the kernel
// checks them at load and merges them into the one registry, and ctx.error makes coded PluginErrors.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CodedError } from '../../src/milter/index.ts';
import { createTestKernel } from '../../src/testing/index.ts';
import { Kernel, PluginError, THEMIS_ERRORS, ThemisError, definePlugin, errorRegistry, isPluginError, pluginErrors, type PluginContext } from '../../src/index.ts';
import { errorPrefix } from '../../src/kernel/errors.ts';

const code = (c: string, pattern?: RegExp) => (e: unknown) => e instanceof ThemisError && e.code === c && (pattern === undefined || pattern.test(e.message));

describe('plugin error codes', () => {
  it('a plugin declares codes and raises one: its code, the message from the template, its details and the plugin', async () => {
    let made: PluginError | undefined;
    let undeclared: unknown;
    const quota = definePlugin({
      name: 'quota',
      version: '1.0.0',
      kernel: '^1',
      errors: { THEMIS_QUOTA_FULL: 'mailbox {mailbox} is over its quota of {limit} MB', THEMIS_QUOTA_LOOKUP: 'quota lookup failed: {reason}' },
      setup(ctx) {
        made = ctx.error('THEMIS_QUOTA_FULL', { mailbox: 'anna', limit: 50 });
        try {
          // @ts-expect-error only a declared code compiles
          ctx.error('THEMIS_QUOTA_NOPE');
        } catch (err) {
          undeclared = err;
        }
        return {};
      },
    });
    const kernel = await Kernel.create({ plugins: [{ plugin: quota }] });
    assert.ok(made instanceof PluginError && made instanceof CodedError && made instanceof Error);
    assert.equal(made.code, 'THEMIS_QUOTA_FULL');
    assert.equal(made.message, 'mailbox anna is over its quota of 50 MB');
    assert.equal(made.plugin, 'quota');
    assert.equal(made.name, 'PluginError');
    assert.deepEqual(made.details, { mailbox: 'anna', limit: 50 });
    assert.ok(isPluginError(made, 'THEMIS_QUOTA_FULL') && !isPluginError(made, 'THEMIS_QUOTA_LOOKUP'));
    assert.ok(code('THEMIS_ERR_PLUGIN_UNDECLARED_ERROR', /plugin quota raised THEMIS_QUOTA_NOPE, which is not among the error codes it declares \(THEMIS_QUOTA_FULL, THEMIS_QUOTA_LOOKUP\)/)(undeclared), String(undeclared));
    // The kernel's registry: every core code, then the plugin's, with its owner.
    assert.deepEqual(kernel.errors.get('THEMIS_QUOTA_LOOKUP'), { code: 'THEMIS_QUOTA_LOOKUP', template: 'quota lookup failed: {reason}', owner: 'quota' });
    assert.equal(kernel.errors.get('THEMIS_ERR_HOOK_FAILED')?.owner, 'kernel');
    assert.equal(kernel.errors.get('THEMIS_ERR_STORE_CLOSED')?.owner, 'store');
    assert.equal(kernel.errors.get('THEMIS_ERR_MILTER_CLOSED')?.owner, 'milter');
    assert.equal(kernel.errors.size, Object.keys(THEMIS_ERRORS).length + 2);
    await kernel.shutdown();
  });

  it('a plugin that declares nothing gets THEMIS_ERR_PLUGIN_UNDECLARED_ERROR for any code', async () => {
    let ctxOf: PluginContext<unknown> | undefined;
    const kernel = await Kernel.create({ plugins: [{ plugin: definePlugin({ name: 'plain', version: '1', kernel: '^1', setup: (ctx) => ((ctxOf = ctx), {}) }) }] });
    assert.throws(() => ctxOf!.error('THEMIS_PLAIN_X'), code('THEMIS_ERR_PLUGIN_UNDECLARED_ERROR', /declares \(none\)/));
    assert.equal(kernel.errors.size, Object.keys(THEMIS_ERRORS).length);
    await kernel.shutdown();
  });

  it('a hook that throws its plugin\'s error: THEMIS_ERR_HOOK_FAILED with the plugin\'s code as cause', async () => {
    const errors: Record<string, unknown>[] = [];
    const logger = { debug() {}, info() {}, warn() {}, error: (fields: object, message?: string) => errors.push({ ...fields, message }), child: () => logger };
    const quota = definePlugin({
      name: 'quota',
      version: '1.0.0',
      kernel: '^1',
      errors: { THEMIS_QUOTA_FULL: 'mailbox {mailbox} is over its quota' },
      setup: ({ error }) => ({
        rcptTo(_ctx, rcpt) {
          throw error('THEMIS_QUOTA_FULL', { mailbox: rcpt.address });
        },
      }),
    });
    const t = await createTestKernel({ logger, plugins: [quota] });
    await t.message({ from: 'a@example.org', rcpt: ['anna@example.test'] });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 'THEMIS_ERR_HOOK_FAILED');
    assert.equal(errors[0].cause, 'THEMIS_QUOTA_FULL');
    assert.match(errors[0].message as string, /plugin quota failed in rcptTo: mailbox <?anna@example\.test>? is over its quota; answering tempfail/);
    await t.close();
  });

  it('pluginErrors makes the same errors outside setup', () => {
    const make = pluginErrors('quota', { THEMIS_QUOTA_FULL: 'mailbox {mailbox} is full' } as const);
    const e = make('THEMIS_QUOTA_FULL', { mailbox: 'bob' }, { cause: new Error('inner') });
    assert.equal(e.message, 'mailbox bob is full');
    assert.equal(e.plugin, 'quota');
    assert.equal((e.cause as Error).message, 'inner');
  });

  it('the prefix is the name upper-cased, anything but letters and digits as one _', () => {
    assert.equal(errorPrefix('headers'), 'HEADERS');
    assert.equal(errorPrefix('recipient-allowlist'), 'RECIPIENT_ALLOWLIST');
    assert.equal(errorPrefix('@acme/spam.check'), 'ACME_SPAM_CHECK');
  });

  it('refuses at load, before its setup, a badly named, core or colliding code with THEMIS_ERR_PLUGIN_INVALID naming it', async () => {
    const setUp: string[] = [];
    const p = (name: string, errors: unknown) => definePlugin({ name, version: '1', kernel: '^1', errors: errors as Record<string, string>, setup: () => (setUp.push(name), {}) });
    const refused = async (plugins: ReturnType<typeof p>[], pattern: RegExp) => assert.rejects(Kernel.create({ plugins: plugins.map((plugin) => ({ plugin })) }), code('THEMIS_ERR_PLUGIN_INVALID', pattern));
    await refused([p('quota', { THEMIS_OTHER_FULL: 'x' })], /plugin quota: error code THEMIS_OTHER_FULL is not named THEMIS_QUOTA_<WORD>/);
    await refused([p('quota', { THEMIS_QUOTA_full: 'x' })], /error code THEMIS_QUOTA_full is not named THEMIS_QUOTA_<WORD>/);
    await refused([p('quota', { THEMIS_QUOTA_: 'x' })], /error code THEMIS_QUOTA_ is not named/);
    await refused([p('recipient-allowlist', { THEMIS_RECIPIENT_ALLOWLIST_DENIED: 'ok', 'THEMIS_RECIPIENT-ALLOWLIST_X': 'x' })], /error code THEMIS_RECIPIENT-ALLOWLIST_X is not named THEMIS_RECIPIENT_ALLOWLIST_<WORD>/);
    await refused([p('quota', { THEMIS_QUOTA_FULL: '' })], /error code THEMIS_QUOTA_FULL has no message template/);
    await refused([p('quota', { THEMIS_QUOTA_FULL: 42 })], /has no message template/);
    await refused([p('quota', ['THEMIS_QUOTA_FULL'])], /errors is not an object/);
    // A plugin named err would write in the core's namespace: a core code, or one that looks like one.
    await refused([p('err', { THEMIS_ERR_HOOK_FAILED: 'mine' })], /plugin err: cannot declare error codes: its codes would begin THEMIS_ERR/);
    await refused([p('err-store', { THEMIS_ERR_STORE_X: 'mine' })], /THEMIS_ERR_ is the core's/);
    // Two plugins whose names give overlapping prefixes cannot declare the same code.
    await refused([p('mail', { THEMIS_MAIL_SCAN_FAILED: 'a' }), p('mail-scan', { THEMIS_MAIL_SCAN_FAILED: 'b' })], /plugin mail-scan: error code THEMIS_MAIL_SCAN_FAILED is already declared by plugin mail/);
    await refused([p('a_b', { THEMIS_A_B_X: 'a' }), p('a-b', { THEMIS_A_B_X: 'b' })], /plugin a-b: error code THEMIS_A_B_X is already declared by plugin a_b/);
    // The refused plugin is never set up (the one before it is, and shut down again with the failed load).
    assert.deepEqual(setUp, ['mail', 'a_b']);
    // The same pair with distinct codes loads.
    const kernel = await Kernel.create({ plugins: [{ plugin: p('mail', { THEMIS_MAIL_SCAN_FAILED: 'a' }) }, { plugin: p('mail-scan', { THEMIS_MAIL_SCAN_TIMEOUT: 'b' }) }] });
    assert.deepEqual([...kernel.errors.values()].filter((e) => !(e.code in THEMIS_ERRORS)).map((e) => `${e.owner} ${e.code}`), ['mail THEMIS_MAIL_SCAN_FAILED', 'mail-scan THEMIS_MAIL_SCAN_TIMEOUT']);
    await kernel.shutdown();
  });

  it('errorRegistry merges without a kernel, and refuses the same way', () => {
    const core = errorRegistry();
    assert.deepEqual([...core.keys()], Object.keys(THEMIS_ERRORS));
    const merged = errorRegistry([{ name: 'quota', errors: { THEMIS_QUOTA_FULL: 'full' } }]);
    assert.equal(merged.get('THEMIS_QUOTA_FULL')?.owner, 'quota');
    assert.equal(core.has('THEMIS_QUOTA_FULL'), false, 'a merge leaves the core registry alone');
    assert.throws(() => errorRegistry([{ name: 'quota', errors: { THEMIS_Q_FULL: 'full' } }]), code('THEMIS_ERR_PLUGIN_INVALID', /THEMIS_Q_FULL/));
  });
});
