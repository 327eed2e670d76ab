// The plugin contract: loading and its coded errors, verdict merging, isolation of failing plugins,
// negotiation derived from taps, notes and modifications — through the themis/testing harness.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { Kernel, ThemisError, definePlugin, pagesOf, type PluginDefinition, type PluginHooks, type Verdict } from '../../src/index.ts';
import { Protocol, Action, createMilterServer, MilterClient } from '../../src/milter/index.ts';
import { createTestKernel, problemsOf } from '../../src/testing/index.ts';

/** A plugin whose hooks are given inline. */
// Typed as a plugin whose claimed field the types do not know: `extra` may claim any.
function plugin(name: string, hooks: PluginHooks<any>, extra: Record<string, unknown> = {}): PluginDefinition<any, any> {
  return definePlugin({ name, version: '1.0.0', kernel: '^1', setup: () => hooks, ...extra });
}

const code = (c: string) => (e: unknown) => e instanceof ThemisError && e.code === c;

describe('loading', () => {
  it('refuses a plugin for another kernel version', async () => {
    await assert.rejects(Kernel.create({ plugins: [{ plugin: definePlugin({ name: 'old', version: '1', kernel: '^2', setup: () => ({}) }) }] }), code('THEMIS_ERR_PLUGIN_KERNEL_RANGE'));
  });
  it('refuses an unknown hook name, naming the known ones', async () => {
    await assert.rejects(Kernel.create({ plugins: [{ plugin: plugin('typo', { mailfrom: () => undefined } as never) }] }), (e: unknown) => code('THEMIS_ERR_PLUGIN_UNKNOWN_HOOK')(e) && /mailFrom/.test((e as Error).message));
  });
  it('refuses two plugins claiming one policy field', async () => {
    const claims = { field: 'limit', schema: z.number() };
    await assert.rejects(Kernel.create({ plugins: [{ plugin: plugin('a', {}, { claims }) }, { plugin: plugin('b', {}, { claims }) }] }), code('THEMIS_ERR_PLUGIN_DUPLICATE_CLAIM'));
  });
  it('refuses the same plugin twice and a non-plugin', async () => {
    const p = plugin('twice', {});
    await assert.rejects(Kernel.create({ plugins: [{ plugin: p }, { plugin: p }] }), code('THEMIS_ERR_PLUGIN_DUPLICATE'));
    await assert.rejects(Kernel.create({ plugins: [{ plugin: { name: 'x' } as never }] }), code('THEMIS_ERR_PLUGIN_INVALID'));
  });
  it('validates plugin options and policy fields with the plugin schemas, naming the path', async () => {
    const p = plugin('limits', {}, { options: z.object({ window: z.number().positive() }), claims: { field: 'limits', schema: z.object({ max: z.number().int() }) } });
    await assert.rejects(Kernel.create({ plugins: [{ plugin: p, options: { window: -1 } }] }), (e: unknown) => code('THEMIS_ERR_PLUGIN_OPTIONS')(e) && /window/.test((e as Error).message));
    await assert.rejects(Kernel.create({ plugins: [{ plugin: p, options: { window: 1 } }], policies: [{ name: 'default', limits: { max: 1.5 } }] }), (e: unknown) => code('THEMIS_ERR_POLICY_FIELD')(e) && /policies\[0\]\.limits\.max/.test((e as Error).message));
    await assert.rejects(Kernel.create({ plugins: [{ plugin: p, options: { window: 1 } }], policies: [{ name: 'default', spf: {} }] }), (e: unknown) => code('THEMIS_ERR_POLICY_UNCLAIMED')(e) && /field spf/.test((e as Error).message));
  });
  it('a refused field is found among the problems whatever else is wrong (problemsOf): one problem is itself, several an aggregate of coded errors', async () => {
    const p = plugin('limits', {}, { claims: { field: 'limits', schema: z.object({ max: z.number().int() }) } });
    const maxRefused = (e: unknown) => problemsOf(e).some((x) => x.code === 'THEMIS_ERR_POLICY_FIELD' && /limits\.max/.test(x.message));
    const one = await Kernel.create({ plugins: [{ plugin: p }], policies: [{ name: 'a', limits: { max: 1.5 } }] }).catch((e: unknown) => e);
    assert.ok(code('THEMIS_ERR_POLICY_FIELD')(one) && maxRefused(one));
    const three = await Kernel.create({ plugins: [{ plugin: p }], policies: [{ name: 'a', limits: { max: 1.5 } }, { name: 'b', limits: {} }, { name: 'c', spf: {} }] }).catch((e: unknown) => e);
    assert.ok(code('THEMIS_ERR_POLICIES_INVALID')(three), String(three));
    assert.ok(maxRefused(three));
    assert.deepEqual(problemsOf(three).map((x) => x.code).sort(), ['THEMIS_ERR_POLICY_FIELD', 'THEMIS_ERR_POLICY_FIELD', 'THEMIS_ERR_POLICY_UNCLAIMED']);
    assert.deepEqual(problemsOf(new Error('plain')), []);
  });
  it('prints plugins per stage in run order', async () => {
    const k = await Kernel.create({ plugins: [{ plugin: plugin('low', { rcptTo: () => undefined }), priority: 1 }, { plugin: plugin('high', { rcptTo: () => undefined, connect: () => undefined }), priority: 9 }] });
    assert.deepEqual(k.describe(), [
      { stage: 'connect', plugins: [{ name: 'high', priority: 9 }] },
      { stage: 'rcptTo', plugins: [{ name: 'high', priority: 9 }, { name: 'low', priority: 1 }] },
    ]);
  });
});

describe('verdict merge', () => {
  const says = (name: string, priority: number, v: Verdict | undefined, at: 'rcptTo' | 'endOfMessage' = 'endOfMessage') => ({ plugin: plugin(name, { [at]: () => v }), priority });

  it('the highest priority wins, even over a more severe verdict', async () => {
    const t = await createTestKernel({ plugins: [says('strict', 1, { action: 'reject', reason: 'no' }), says('boss', 10, { action: 'accept', reason: 'whitelisted' })] });
    const r = await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.equal(r.decision.action, 'accept');
    assert.equal(r.trace!.winner!.plugin, 'boss');
    assert.deepEqual(r.trace!.entries.map((e) => [e.plugin, e.action]), [['boss', 'accept'], ['strict', 'reject']]);
  });

  it('ties go to the most severe: reject > tempfail > discard > quarantine > accept', async () => {
    const t = await createTestKernel({ plugins: [says('a', 5, { action: 'tempfail', reason: 't' }), says('b', 5, { action: 'reject', reason: 'r', reply: { code: 550, enhanced: '5.7.1', text: 'Go away' } }), says('c', 5, { action: 'accept', reason: 'ok' })] });
    const r = await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.deepEqual(r.decision, { stage: 'endOfMessage', action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'Go away' } });
    assert.equal(r.trace!.outcome, 'rejected');
  });

  it('continue is no objection: it never wins over a decision', async () => {
    const t = await createTestKernel({ plugins: [says('quiet', 100, { action: 'continue' }), says('tagger', 0, { action: 'quarantine', reason: 'suspicious' })] });
    const r = await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.equal(r.decision.action, 'accept');
    assert.deepEqual(r.modifications, [{ type: 'quarantine', reason: 'suspicious' }]);
    assert.equal(r.trace!.outcome, 'quarantined');
  });

  it('accept at rcptTo accepts the whole message and closes its trace there', async () => {
    const t = await createTestKernel({ plugins: [{ plugin: plugin('vip', { rcptTo: (_c, e) => (e.address === 'ceo@example.net' ? { action: 'accept', reason: 'always deliver' } : undefined), endOfMessage: () => ({ action: 'reject', reason: 'never reached' }) }) }] });
    const r = await t.message({ from: 'a@example.org', rcpt: ['ceo@example.net', 'other@example.net'] });
    assert.deepEqual(r.decision, { stage: 'rcptTo', action: 'accept', recipient: 'ceo@example.net' });
    assert.equal(r.trace!.outcome, 'accepted');
    assert.equal(r.trace!.stage, 'rcptTo');
  });

  it('a reject at rcptTo refuses that recipient only', async () => {
    const t = await createTestKernel({ plugins: [{ plugin: plugin('rcpt', { rcptTo: (_c, e) => (e.address.startsWith('no') ? { action: 'reject', reason: 'unknown user' } : undefined) }) }] });
    const r = await t.message({ from: 'a@example.org', rcpt: ['no@example.net', 'yes@example.net'] });
    assert.deepEqual(r.recipients.map((x) => x.action), ['reject', 'continue']);
    assert.equal(r.decision.stage, 'endOfMessage');
    assert.equal(r.decision.action, 'accept');
  });
});

describe('isolation', () => {
  it('a throwing, rejecting or hanging plugin yields its onError verdict, logged with a code and counted', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = { debug() {}, info() {}, warn() {}, error: (f: object) => void lines.push(f as Record<string, unknown>), child: () => logger };
    const t = await createTestKernel({
      logger,
      hookTimeout: 50,
      plugins: [
        { plugin: plugin('thrower', { mailFrom: () => { throw new Error('boom'); } }), onError: 'accept' },
        { plugin: plugin('rejecter', { rcptTo: () => Promise.reject(new Error('dns down')) }), onError: 'tempfail' },
        { plugin: plugin('hanger', { endOfMessage: () => new Promise(() => {}) }), onError: 'reject' },
      ],
    });
    const r = await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    // thrower's accept at MAIL ends filtering for this message: the message is accepted there.
    assert.equal(r.decision.stage, 'mailFrom');
    assert.equal(r.decision.action, 'accept');
    assert.equal(r.trace!.entries[0].error, 'THEMIS_ERR_HOOK_FAILED');
    const r2 = await createTestKernel({ logger, hookTimeout: 50, plugins: [{ plugin: plugin('rejecter', { rcptTo: () => Promise.reject(new Error('dns down')) }), onError: 'tempfail' }, { plugin: plugin('hanger', { endOfMessage: () => new Promise(() => {}) }), onError: 'reject' }] }).then((k) => k.message({ from: 'a@example.org', rcpt: ['b@example.net', 'c@example.net'] }));
    assert.deepEqual(r2.recipients.map((x) => x.action), ['tempfail', 'tempfail']);
    const r3 = await createTestKernel({ logger, hookTimeout: 50, plugins: [{ plugin: plugin('hanger', { endOfMessage: () => new Promise(() => {}) }), onError: 'reject' }] }).then((k) => k.message({ from: 'a@example.org', rcpt: ['b@example.net'] }));
    assert.equal(r3.decision.action, 'reject');
    assert.equal(r3.trace!.winner!.error, 'THEMIS_ERR_HOOK_TIMEOUT');
    assert.ok(lines.some((l) => l.code === 'THEMIS_ERR_HOOK_FAILED'));
    assert.ok(lines.some((l) => l.code === 'THEMIS_ERR_HOOK_TIMEOUT'));
    const metric = await t.kernel.registry.getSingleMetricAsString('themis_hook_errors_total');
    assert.match(metric, /themis_hook_errors_total\{plugin="thrower",hook="mailFrom",kind="error"\} 1/);
  });

  it("onError 'continue' leaves the failing plugin out: the others decide (an 'accept' would have won over them)", async () => {
    const failing = plugin('failing', { rcptTo: () => { throw new Error('store down'); } }, { priority: 90 });
    const refusing = plugin('refusing', { rcptTo: (_c, e) => (e.address.startsWith('no') ? { action: 'reject', reason: 'unknown user' } : undefined) }, { priority: 10 });
    const open = await createTestKernel({ plugins: [{ plugin: failing, onError: 'continue' }, { plugin: refusing }] });
    const r = await open.message({ from: 'a@example.org', rcpt: ['no@example.net', 'yes@example.net'] });
    assert.deepEqual(r.recipients.map((x) => x.action), ['reject', 'continue'], 'the lower-priority refusal stands');
    assert.equal(r.decision.action, 'accept');
    assert.ok(r.trace!.entries.some((e) => e.plugin === 'failing' && e.action === 'continue' && e.error === 'THEMIS_ERR_HOOK_FAILED'), 'the failure is in the trace');
    const accepting = await createTestKernel({ plugins: [{ plugin: failing, onError: 'accept' }, { plugin: refusing }] });
    const r2 = await accepting.message({ from: 'a@example.org', rcpt: ['no@example.net', 'yes@example.net'] });
    assert.equal(r2.decision.stage, 'rcptTo', "accept at RCPT ends the message's filtering");
    assert.equal(r2.decision.action, 'accept');
  });

  it('an invalid verdict is a plugin error with its own code; the harness fails the message with it, the daemon falls back to onError', async () => {
    const odd = { plugin: plugin('odd', { endOfMessage: () => ({ action: 'maybe' }) as never }), onError: 'tempfail' as const };
    const strict = await createTestKernel({ plugins: [odd] });
    await assert.rejects(strict.message({ from: 'a@example.org', rcpt: ['b@example.net'] }), code('THEMIS_ERR_HOOK_BAD_VERDICT'));
    const t = await createTestKernel({ plugins: [odd], pluginMistakes: 'allow' });
    const r = await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.equal(r.decision.action, 'tempfail');
    assert.equal(r.trace!.winner!.error, 'THEMIS_ERR_HOOK_BAD_VERDICT');
  });

  it('a reply the MTA would refuse (550 with tempfail, 451 with reject, a bad enhanced code) is THEMIS_ERR_HOOK_BAD_REPLY naming the plugin and hook; the daemon sends the plain action', async () => {
    const replying = (reply: object, action: 'tempfail' | 'reject') => plugin('replier', { rcptTo: () => ({ action, reply }) as never });
    for (const [reply, action, reason] of [
      [{ code: 550, text: 'no' }, 'tempfail', /code 550 does not fit a tempfail/],
      [{ code: 451, text: 'later' }, 'reject', /code 451 does not fit a reject/],
      [{ code: 450, enhanced: '5.7.1', text: 'x' }, 'tempfail', /does not match the class/],
      [{ code: '451' }, 'tempfail', /is not 4xx or 5xx/],
    ] as const) {
      const strict = await createTestKernel({ plugins: [replying(reply, action)] });
      await assert.rejects(strict.message({ from: 'a@example.org', rcpt: ['b@example.net'] }), (e: unknown) => {
        assert.ok(e instanceof ThemisError && e.code === 'THEMIS_ERR_HOOK_BAD_REPLY', String(e));
        assert.equal(e.details.plugin, 'replier');
        assert.equal(e.details.hook, 'rcptTo');
        assert.match(e.message, reason);
        return true;
      });
      const daemon = await createTestKernel({ plugins: [replying(reply, action)], pluginMistakes: 'allow' });
      const r = await daemon.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
      assert.deepEqual(r.recipients, [{ address: 'b@example.net', action }], 'the action stands, without the reply');
      assert.equal(r.trace!.entries.find((e) => e.plugin === 'replier')!.error, 'THEMIS_ERR_HOOK_BAD_REPLY');
    }
    // A reply that fits is sent as it is.
    const fine = await createTestKernel({ plugins: [replying({ code: 451, enhanced: '4.7.1', text: 'Greylisted' }, 'tempfail')] });
    const r = await fine.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.deepEqual(r.recipients[0].reply, { code: 451, enhanced: '4.7.1', text: 'Greylisted' });
  });
});

describe('negotiation follows the taps', () => {
  it('no body hook: the body is not requested; a body hook asks for it', async () => {
    const without = await Kernel.create({ plugins: [{ plugin: plugin('env', { mailFrom: () => undefined }) }] });
    const n1 = without.application.negotiation as { stages: string[]; noReply: string[]; actions: number };
    // The envelope stages are always asked for (every hook's context holds the client, HELO name,
    // sender and recipients), without replies where nobody taps them.
    assert.deepEqual(n1.stages, ['connect', 'helo', 'mailFrom', 'rcptTo']);
    assert.deepEqual(n1.noReply, ['connect', 'helo', 'rcptTo']);
    const withBody = await Kernel.create({ plugins: [{ plugin: plugin('scan', { body: () => undefined }, { modifies: ['headers'], macros: { mailFrom: ['{client_ptr}'] } }) }] });
    const n2 = withBody.application.negotiation as { stages: string[]; actions: number; macros: Record<string, string[]> };
    assert.deepEqual(n2.stages, ['connect', 'helo', 'mailFrom', 'rcptTo', 'body']);
    assert.equal(n2.actions, Action.QUARANTINE | Action.ADDHDRS | Action.CHGHDRS);
    assert.ok(n2.macros.mailFrom.includes('{auth_authen}') && n2.macros.mailFrom.includes('{client_ptr}'), 'Postfix defaults kept, plugin macros added');
  });

  it('over a real socket, a kernel without body hook negotiates NOBODY', async () => {
    const k = await Kernel.create({ plugins: [{ plugin: plugin('env', { rcptTo: () => undefined }) }] });
    const server = createMilterServer(k.application);
    await server.listen('inet:0@127.0.0.1');
    const client = await MilterClient.connect(`inet:${server.port}@127.0.0.1`);
    assert.ok(client.negotiated.protocol & Protocol.NOBODY);
    assert.ok(client.negotiated.protocol & Protocol.NOHDRS);
    assert.equal(client.negotiated.protocol & Protocol.NORCPT, 0);
    const r = await client.sendMessage({ connect: { hostname: 'h' }, helo: 'h', from: 'a@x', to: ['b@y'], body: 'x'.repeat(1000) });
    assert.equal(r.reply.action, 'accept');
    await client.quit();
    await server.close();
  });

  it("mta: DATA is answered for Postfix (the default); for 'sendmail' it is off unless a plugin taps it", async () => {
    const env = { plugins: [{ plugin: plugin('env', { rcptTo: () => undefined }) }] };
    for (const [mta, dataOff] of [[undefined, false], ['postfix', false], ['sendmail', true]] as const) {
      const k = await Kernel.create({ ...env, mta });
      assert.equal((k.application.negotiation as { answerData?: boolean }).answerData, !dataOff, `answerData for mta ${mta}`);
      const server = createMilterServer(k.application);
      await server.listen('inet:0@127.0.0.1');
      const client = await MilterClient.connect(`inet:${server.port}@127.0.0.1`);
      try {
        assert.equal((client.negotiated.protocol & Protocol.NODATA) !== 0, dataOff, `NODATA for mta ${mta}`);
        assert.equal(client.negotiated.protocol & Protocol.NR_DATA, 0, 'never DATA without a reply');
        const r = await client.sendMessage({ connect: { hostname: 'h' }, helo: 'h', from: 'a@x', to: ['b@y'], body: 'hello' });
        assert.equal(r.reply.action, 'accept');
      } finally {
        await client.quit();
        await server.close();
      }
    }
    // A plugin that taps DATA gets it answered whatever the MTA.
    const tapped = await Kernel.create({ plugins: [{ plugin: plugin('data', { data: () => undefined }) }], mta: 'sendmail' });
    assert.ok((tapped.application.negotiation as { stages: string[] }).stages.includes('data'));
  });
});

describe('sessions, messages, notes and modifications', () => {
  it('plugins read each other\'s notes and the envelope; modifications arrive at end of message', async () => {
    const first = plugin('score', {
      mailFrom: (ctx, e) => void ctx.message!.notes.set({ score: e.address.endsWith('.example.org') ? 5 : 0 }),
    }, { priority: 10 });
    const second = plugin('tag', {
      endOfMessage: (ctx) => {
        const n = ctx.message!.notes.of<{ score: number }>('score')!;
        ctx.message!.addHeader('X-Score', `${n.score} for ${ctx.message!.recipients.length} rcpt, auth=${ctx.session.auth}, mta=${ctx.session.mta}, i=${ctx.message!.queueId}`);
        return undefined;
      },
    }, { modifies: ['headers'], observes: ['rcptTo'] });
    const t = await createTestKernel({ plugins: [first, second] });
    const n = t.kernel.application.negotiation as { stages: string[]; noReply: string[] };
    assert.deepEqual(n.noReply, ['connect', 'helo', 'rcptTo'], 'observed, not tapped: asked for without replies');
    const r = await t.message({ from: 'a@mail.example.org', rcpt: ['b@example.net', 'c@example.net'], auth: 'alice', queueId: 'Q1' });
    assert.deepEqual(r.modifications, [{ type: 'addHeader', name: 'X-Score', value: '5 for 2 rcpt, auth=alice, mta=mx.test.example, i=Q1' }]);
  });

  it('listens: a hook that only listens runs, is not answered (NR), and its verdict is logged and ignored', async () => {
    const ran: string[] = [];
    const early = plugin('early', {
      mailFrom: (ctx, e) => {
        ran.push(e.address);
        ctx.message!.notes.set({ started: true });
        return e.address.startsWith('liar') ? { action: 'reject', reason: 'a listener cannot refuse' } : undefined;
      },
      endOfMessage: (ctx) => (ctx.message!.notes.get<{ started: boolean }>()?.started ? undefined : { action: 'tempfail', reason: 'mailFrom hook did not run' }),
    }, { listens: ['mailFrom'] });
    await assert.rejects((await createTestKernel({ plugins: [early] })).message({ from: 'liar@example.org', rcpt: ['b@example.net'] }), code('THEMIS_ERR_HOOK_LISTENER_VERDICT'), 'the harness fails a test whose listener answers');
    ran.length = 0;
    const t = await createTestKernel({ plugins: [early], pluginMistakes: 'allow' });
    const n = t.kernel.application.negotiation as { stages: string[]; noReply: string[] };
    assert.ok(n.stages.includes('mailFrom') && n.noReply.includes('mailFrom'), 'asked for, without replies');
    const ok = await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.equal(ok.decision.action, 'accept', 'the listener ran before end of message');
    const liar = await t.message({ from: 'liar@example.org', rcpt: ['b@example.net'] });
    assert.equal(liar.decision.action, 'accept', 'the reject returned by a listener is ignored');
    assert.deepEqual(ran, ['a@example.org', 'liar@example.org']);
    // A plugin that taps the same stage without listening makes it answered again.
    const decider = plugin('decider', { mailFrom: () => undefined });
    const both = await createTestKernel({ plugins: [early, decider] });
    assert.ok(!(both.kernel.application.negotiation as { noReply: string[] }).noReply.includes('mailFrom'));
  });

  it('a modification the plugin did not declare fails that plugin, with a code', async () => {
    const t = await createTestKernel({ plugins: [{ plugin: plugin('sneaky', { endOfMessage: (ctx) => void ctx.message!.changeSender('x@y') }), onError: 'accept' }] });
    const r = await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.deepEqual(r.modifications, []);
    assert.equal(r.trace!.entries[0].error, 'THEMIS_ERR_MODIFICATION');
  });

  it('abort hooks run when a later plugin refuses the message, and for an abandoned one', async () => {
    const aborted: string[] = [];
    const reserve = plugin('reserve', { mailFrom: (ctx) => void ctx.message!.notes.set('reserved'), abort: (ctx) => void aborted.push(String(ctx.message?.notes.get())) });
    const refuse = plugin('refuse', { endOfMessage: () => ({ action: 'reject', reason: 'spam' }) });
    const t = await createTestKernel({ plugins: [reserve, refuse] });
    await t.message({ from: 'a@example.org', rcpt: ['b@example.net'] });
    assert.deepEqual(aborted, ['reserved']);
  });

  it('a connection carries several messages; policies reach the plugin that claims them', async () => {
    const seen: string[] = [];
    const p = definePlugin({
      name: 'limit',
      version: '1.0.0',
      kernel: '^1',
      claims: { field: 'limit', schema: z.object({ max: z.number() }) },
      setup: () => ({
        rcptTo: (ctx, e) => {
          seen.push(`${ctx.session.id}:${e.address}`);
          const max = Math.min(...ctx.policies.map((x) => x.config.max));
          return ctx.message!.recipients.length > max ? { action: 'tempfail', reason: `more than ${max} recipients` } : undefined;
        },
      }),
    });
    const t = await createTestKernel({ plugins: [p], policies: [{ name: 'default', limit: { max: 2 } }] });
    const c = await t.connect({ address: '2001:db8::5' });
    const r1 = await c.message({ from: 'a@x.example', rcpt: ['1@y.example', '2@y.example', '3@y.example'] });
    const r2 = await c.message({ from: 'a@x.example', rcpt: ['4@y.example'] });
    await c.close();
    assert.deepEqual(r1.recipients.map((x) => x.action), ['continue', 'continue', 'tempfail']);
    assert.deepEqual(r2.recipients.map((x) => x.action), ['continue']);
    assert.equal(new Set(seen.map((s) => s.split(':')[0])).size, 1, 'one connection');
    assert.equal(t.traces.length, 2);
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_hook_calls_total'), /themis_hook_calls_total\{plugin="limit",hook="rcptTo"\} 4/);
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_hook_seconds_total'), /themis_hook_seconds_total\{plugin="limit",hook="rcptTo"\} \d/);
  });

  it('skipPolicy takes a policy out of one message for the other plugins; the caller still sees it', async () => {
    const seen: string[] = [];
    const field = (name: string) => ({ field: name, schema: z.object({}) });
    const skipper = plugin('skipper', { endOfHeaders: (ctx) => {
      seen.push(`skipper:${ctx.policies.map((p) => p.name)}`);
      const skip = ctx.message!.headers.some((h) => h.name === 'X-Skip');
      if (skip) {
        assert.equal(ctx.message!.skipPolicy('nope'), false, 'an unknown policy is not skipped');
        assert.equal(ctx.message!.skipPolicy('one'), true);
      }
      return undefined;
    }, endOfMessage: (ctx) => void seen.push(`skipper@eom:${ctx.policies.map((p) => p.name)}`) }, { claims: field('skipper'), priority: 10, observes: ['header'] });
    const other = plugin('other', { endOfMessage: (ctx) => void seen.push(`other:${ctx.policies.map((p) => p.name)}`) }, { claims: field('other') });
    const t = await createTestKernel({ plugins: [skipper, other], policies: [{ name: 'one', skipper: {}, other: {} }, { name: 'two', skipper: {}, other: {} }] });
    const c = await t.connect();
    await c.message({ from: 'a@x.example', rcpt: ['b@y.example'], headers: [['X-Skip', 'yes']] });
    await c.message({ from: 'a@x.example', rcpt: ['b@y.example'], headers: [['Subject', 'next']] });
    await c.close();
    assert.deepEqual(seen, ['skipper:one,two', 'skipper@eom:one,two', 'other:two', 'skipper:one,two', 'skipper@eom:one,two', 'other:one,two']);
  });
});

describe('observers and routes', () => {
  it('decision hooks see every message and connection refusal; one that throws is counted, not raised', async () => {
    const seen: string[] = [];
    const watcher = plugin('watcher', { decision: (ctx, trace) => void seen.push(`${trace.outcome}:${ctx.message?.sender?.address ?? 'connection'}:${trace.policies}`) });
    const broken = plugin('broken', { decision: () => { throw new Error('boom'); } });
    const bouncer = plugin('bouncer', { connect: (_ctx, e) => (e.address === '203.0.113.9' ? { action: 'reject', reason: 'listed' } : undefined) });
    const t = await createTestKernel({ plugins: [bouncer, watcher, broken], policies: [{ name: 'every' }] });
    await t.message({ from: 'a@x.example', rcpt: ['b@y.example'] });
    await (await t.connect({ address: '203.0.113.9' })).close();
    assert.deepEqual(seen, ['accepted:a@x.example:every', 'rejected:connection:every']);
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_hook_errors_total'), /plugin="broken",hook="decision",kind="error"\} 2/);
    await t.close();
  });

  it('plugins serve HTTP routes; a taken or reserved path is a coded error; a failing handler answers 500', async () => {
    const pages = definePlugin({ name: 'pages', version: '1.0.0', kernel: '^1', setup: ({ http }) => {
      http.get('/hello', ({ query }) => ({ type: 'text/plain', body: `hello ${query.who}` }));
      http.get('/broken', () => { throw new Error('no page'); });
      return {};
    } });
    const t = await createTestKernel({ plugins: [pages] });
    assert.deepEqual(await t.kernel.handleHttp({ path: '/hello', query: { who: 'admin' } }), { type: 'text/plain', body: 'hello admin' });
    assert.equal(await t.kernel.handleHttp({ path: '/nope', query: {} }), undefined);
    assert.equal((await t.kernel.handleHttp({ path: '/broken', query: {} }))?.status, 500);
    await t.close();
    const taking = (name: string, path: string) => definePlugin({ name, version: '1.0.0', kernel: '^1', setup: ({ http }) => (http.get(path, () => ({ type: 'text/plain', body: '' })), {}) });
    await assert.rejects(createTestKernel({ plugins: [taking('a', '/x'), taking('b', '/x')] }), (e: unknown) => code('THEMIS_ERR_PLUGIN_ROUTE')(e) && /already served by plugin a/.test((e as Error).message));
    await assert.rejects(createTestKernel({ plugins: [taking('a', '/metrics')] }), code('THEMIS_ERR_PLUGIN_ROUTE'));
    await assert.rejects(createTestKernel({ plugins: [taking('a', 'no-slash')] }), code('THEMIS_ERR_PLUGIN_ROUTE'));
  });

  it('a plugin declares which of its routes are pages for a browser; each must be one it serves', async () => {
    const serving = (name: string, pages: Record<string, string> | undefined, paths: string[]) =>
      definePlugin({ name, version: '1.0.0', kernel: '^1', pages, setup: ({ http }) => (paths.forEach((p) => http.get(p, () => ({ type: 'text/html', body: p }))), {}) });
    const t = await createTestKernel({ plugins: [serving('plain', undefined, ['/api/x']), serving('ui', { dashboard: '/ui', help: '/ui/help' }, ['/ui', '/ui/help', '/ui/app.js'])] });
    assert.deepEqual(t.kernel.pages(), [{ plugin: 'ui', name: 'dashboard', path: '/ui' }, { plugin: 'ui', name: 'help', path: '/ui/help' }]);
    await t.close();
    // Declared statically: known without setting the plugin up (the cluster primary's start line).
    assert.deepEqual(pagesOf([{ name: 'ui', pages: { dashboard: '/ui' } }, { name: 'plain' }]), [{ plugin: 'ui', name: 'dashboard', path: '/ui' }]);
    await assert.rejects(createTestKernel({ plugins: [serving('ui', { dashboard: '/ui' }, ['/other'])] }), (e: unknown) => code('THEMIS_ERR_PLUGIN_INVALID')(e) && /page dashboard is \/ui, a route the plugin does not serve/.test((e as Error).message));
    // Another plugin's route is not this plugin's page.
    await assert.rejects(createTestKernel({ plugins: [serving('a', undefined, ['/ui']), serving('b', { dashboard: '/ui' }, [])] }), code('THEMIS_ERR_PLUGIN_INVALID'));
    await assert.rejects(createTestKernel({ plugins: [serving('ui', { dashboard: 'ui' }, ['/ui'])] }), (e: unknown) => code('THEMIS_ERR_PLUGIN_INVALID')(e) && /not a path such as \/dashboard/.test((e as Error).message));
  });
});

describe('error registry', () => {
  it('one registry holds every engine and kernel code, with no code defined twice', async () => {
    const { THEMIS_ERRORS, KERNEL_ERRORS } = await import('../../src/kernel/errors.ts');
    const { MILTER_ERRORS } = await import('../../src/milter/errors.ts');
    const { STORE_ERRORS } = await import('../../src/store/errors.ts');
    assert.equal(Object.keys(THEMIS_ERRORS).length, Object.keys(KERNEL_ERRORS).length + Object.keys(MILTER_ERRORS).length + Object.keys(STORE_ERRORS).length);
    for (const code of Object.keys(THEMIS_ERRORS)) assert.match(code, /^THEMIS_ERR_[A-Z0-9_]+$/);
    const e = new ThemisError('THEMIS_ERR_PLUGIN_KERNEL_RANGE', { plugin: 'p', range: '^2', version: '1.0.0' });
    assert.equal(e.message, 'plugin p supports kernel ^2, but this kernel is 1.0.0');
  });

  it('every code the sources log or throw is in the registry', async () => {
    const { THEMIS_ERRORS } = await import('../../src/index.ts');
    const { readdirSync, readFileSync } = await import('node:fs');
    const root = new URL('../../src/', import.meta.url);
    const used = new Set<string>();
    for (const f of readdirSync(root, { recursive: true, encoding: 'utf8' })) {
      if (!f.endsWith('.ts')) continue;
      for (const m of readFileSync(new URL(f, root), 'utf8').matchAll(/'(THEMIS_ERR_[A-Z0-9_]+)'/g)) used.add(m[1]);
    }
    assert.ok(used.size > 40, `found ${used.size} codes`);
    assert.deepEqual([...used].filter((c) => !(c in THEMIS_ERRORS)), []);
  });
});
