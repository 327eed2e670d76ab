// The ratelimit plugin through the kernel (themis/testing, in-memory store): limits per policy and
// subject, all-or-nothing windows, leaky and strict accounting, block / hold / monitor, penalty
// blocks, overrides, administrator flags, the RCPT stage, headers, and store failures.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { MemoryStore, RedisStore, definePlugin, isThemisError } from 'themis-milter';
import { createTestKernel, type TestConnectionMessage } from 'themis-milter/testing';
import ratelimit, { parseSubject, rateAdmin, rateInspect, subjectKey } from '../src/index.ts';

const msg = (from: string, rcpt: string[] = ['r@example.net'], extra: Partial<TestConnectionMessage> = {}): TestConnectionMessage => ({ client: { address: '192.0.2.10' }, from, rcpt, ...extra });

/** A plugin that refuses messages whose subject is "refuse me", at end of message, after ratelimit ran. */
const refuser = definePlugin({
  name: 'refuser',
  version: '1.0.0',
  kernel: '^1',
  priority: 10,
  observes: ['header'],
  setup: () => ({ header: () => undefined, endOfMessage: (ctx) => (ctx.message!.headers.some((h) => h.value === 'refuse me') ? { action: 'reject', reason: 'test' } : undefined) }),
});

describe('ratelimit plugin', () => {
  it('the (N+1)-th message of a sender within the window is refused with 450 4.7.1 and the wait', async () => {
    const t = await createTestKernel({ plugins: [ratelimit], policies: [{ name: 'out', ratelimit: { windows: '3/1m', by: 'sender' } }] });
    for (let i = 0; i < 3; i++) assert.equal((await t.message(msg('a@example.org'))).decision.action, 'accept');
    const r = await t.message(msg('A@Example.org'));
    assert.equal(r.decision.action, 'tempfail');
    assert.equal(r.decision.reply?.code, 450);
    assert.equal(r.decision.reply?.enhanced, '4.7.1');
    assert.match(String(r.decision.reply!.text), /^Rate limit exceeded \(3 per 1m\): try again in \d+ seconds$/);
    assert.match(r.trace!.winner!.reason!, /^out: sender over 3\/1m; retry in \d+s$/);
    assert.equal((await t.message(msg('b@example.org'))).decision.action, 'accept', 'another sender has its own counter');
    await t.close();
  });

  it('every window must have room, and a refused message counts in none (all or nothing)', async () => {
    const store = new MemoryStore();
    const t = await createTestKernel({ store, plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: [{ limit: 2, per: '1m' }, { limit: 5, per: '1h' }], by: 'sender' } }] });
    for (let i = 0; i < 2; i++) await t.message(msg('a@example.org'));
    for (let i = 0; i < 3; i++) assert.equal((await t.message(msg('a@example.org'))).decision.action, 'tempfail');
    const i = await rateInspect(store, subjectKey('p', parseSubject('sender'), 'a@example.org'), [{ windowMs: 60_000, slots: 12, limit: 2 }, { windowMs: 3_600_000, slots: 12, limit: 5 }]);
    assert.deepEqual(i.windows.map((w) => w.used), [2, 2], 'the refused attempts consumed nothing in the hourly window');
    await t.close();
  });

  it('cost recipient counts accepted, de-duplicated recipients; a message bigger than the limit is refused for good', async () => {
    const t = await createTestKernel({ plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: '4/1h', by: 'sender', cost: 'recipient' } }] });
    assert.equal((await t.message(msg('a@example.org', ['x@e.example', 'X@e.example', 'y@e.example']))).decision.action, 'accept', 'x and X are one recipient: cost 2');
    const r = await t.message(msg('a@example.org', ['1@e.example', '2@e.example', '3@e.example']));
    assert.equal(r.decision.action, 'tempfail', '2 + 3 > 4');
    assert.equal((await t.message(msg('a@example.org', ['1@e.example', '2@e.example']))).decision.action, 'accept', '2 + 2 = 4: nothing was consumed by the refused one');
    const big = await t.message(msg('b@example.org', ['1@e.example', '2@e.example', '3@e.example', '4@e.example', '5@e.example', '6@e.example']));
    assert.equal(big.decision.action, 'reject');
    assert.equal(big.decision.reply?.enhanced, '5.7.1');
    assert.equal(big.decision.reply?.text, 'Message exceeds the rate limit on its own (6 > 4 per 1h)');
    await t.close();
  });

  it('two policies counting the same sender never share a counter', async () => {
    const t = await createTestKernel({ plugins: [ratelimit], policies: [{ name: 'a', ratelimit: { windows: '2/1m', by: 'sender' } }, { name: 'b', match: { destination: '@b.example' }, ratelimit: { windows: '1/1m', by: 'sender' } }] });
    assert.equal((await t.message(msg('s@example.org', ['x@b.example']))).decision.action, 'accept'); // a:1 b:1
    assert.equal((await t.message(msg('s@example.org', ['x@other.example']))).decision.action, 'accept'); // a:2
    const r = await t.message(msg('s@example.org', ['x@b.example']));
    assert.equal(r.decision.action, 'tempfail');
    assert.match(r.trace!.winner!.reason!, /^a: /, 'policy a is full; b was untouched by the second message');
    await t.close();
  });

  it('leaky (default): a message refused later by another plugin is refunded; strict: it counts', async () => {
    for (const accounting of ['leaky', 'strict'] as const) {
      const t = await createTestKernel({ plugins: [ratelimit, refuser], policies: [{ name: 'p', ratelimit: { windows: '2/1m', by: 'sender', accounting } }] });
      for (let i = 0; i < 2; i++) assert.equal((await t.message(msg('a@example.org', undefined, { headers: { Subject: 'refuse me' } }))).decision.action, 'reject');
      // Leaky: the two refused messages were given back, so a third still has room (and is refused by the other plugin).
      assert.equal((await t.message(msg('a@example.org', undefined, { headers: { Subject: 'refuse me' } }))).decision.action, accounting === 'leaky' ? 'reject' : 'tempfail');
      const next = await t.message(msg('a@example.org'));
      assert.equal(next.decision.action, accounting === 'leaky' ? 'accept' : 'tempfail', accounting);
      await t.close();
    }
  });

  it('hold puts the message on hold (quarantine) instead of refusing it', async () => {
    const t = await createTestKernel({ plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: '1/1m', by: 'sender', action: 'hold' } }] });
    await t.message(msg('a@example.org'));
    const r = await t.message(msg('a@example.org'));
    assert.equal(r.decision.action, 'accept');
    assert.equal(r.trace!.outcome, 'quarantined');
    assert.ok(r.modifications.some((m) => m.type === 'quarantine'));
    await t.close();
  });

  it('monitor only logs and counts; later policies still apply unless monitorStops', async () => {
    const policies = (monitorStops: boolean) => [
      { name: 'a-watch', priority: 1, ratelimit: { windows: '1/1m', by: 'sender', action: 'monitor', monitorStops } },
      { name: 'b-enforce', priority: 2, ratelimit: { windows: '1/1m', by: 'sender' } },
    ] as const;
    const t = await createTestKernel({ plugins: [ratelimit], policies: policies(false) });
    await t.message(msg('a@example.org'));
    const r = await t.message(msg('a@example.org'));
    assert.equal(r.decision.action, 'tempfail', 'b-enforce still applies');
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_ratelimit_decisions_total'), /policy="a-watch",outcome="monitored"\} 1/);
    await t.close();
    const t2 = await createTestKernel({ plugins: [ratelimit], policies: policies(true) });
    await t2.message(msg('a@example.org'));
    assert.equal((await t2.message(msg('a@example.org'))).decision.action, 'accept', 'a monitor hit stops later ratelimits when monitorStops');
    await t2.close();
  });

  it('a penalty block keeps the subject refused after the window would have room', async () => {
    const store = new MemoryStore();
    const t = await createTestKernel({ store, plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: '1/1m', by: 'sender', jail: '15m' } }] });
    await t.message(msg('a@example.org'));
    const r = await t.message(msg('a@example.org'));
    assert.equal(r.decision.action, 'tempfail');
    const wait = Number(/try again in (\d+) seconds/.exec(String(r.decision.reply!.text))![1]);
    assert.ok(wait > 60 && wait <= 900, `the wait shows the penalty (${wait} s)`);
    const key = subjectKey('p', parseSubject('sender'), 'a@example.org');
    await rateAdmin(store, key, { unjail: true, reset: true });
    assert.equal((await t.message(msg('a@example.org'))).decision.action, 'accept', 'an administrator can lift it');
    await t.close();
  });

  it('overrides in the configuration: bypass, block with its own text, other limits for one subject', async () => {
    const t = await createTestKernel({
      plugins: [ratelimit],
      policies: [{ name: 'p', ratelimit: { windows: '1/1m', by: 'sender', blockedReply: { text: 'Blocked, call 555' }, overrides: { 'vip@example.org': { bypass: true }, 'bad@example.org': { block: true }, 'BIG@example.org': { windows: '3/1m' } } } }],
    });
    for (let i = 0; i < 3; i++) assert.equal((await t.message(msg('vip@example.org'))).decision.action, 'accept');
    const blocked = await t.message(msg('bad@example.org'));
    assert.equal(blocked.decision.action, 'reject');
    assert.deepEqual(blocked.decision.reply, { code: 550, enhanced: '5.7.1', text: 'Blocked, call 555' });
    for (let i = 0; i < 3; i++) assert.equal((await t.message(msg('big@example.org'))).decision.action, 'accept');
    assert.equal((await t.message(msg('big@example.org'))).decision.action, 'tempfail');
    await t.close();
  });

  it('flags set by an administrator in the store: manual block (550 and the documented text), bypass, per-subject limits', async () => {
    const store = new MemoryStore();
    const t = await createTestKernel({ store, plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: '1/1m', by: 'sender+' } }] });
    const key = (v: string) => subjectKey('p', parseSubject('sender+'), v);
    await rateAdmin(store, key('alice'), { block: true });
    const r = await t.message(msg('whatever@example.org', undefined, { auth: 'Alice' }));
    assert.equal(r.decision.action, 'reject');
    assert.deepEqual(r.decision.reply, { code: 550, enhanced: '5.7.1', text: 'Account manually blocked, contact your administrator' });
    await rateAdmin(store, key('bob@example.org'), { bypass: true });
    for (let i = 0; i < 3; i++) assert.equal((await t.message(msg('bob@example.org'))).decision.action, 'accept');
    await rateAdmin(store, key('carol@example.org'), { limits: { 60_000: 2 } });
    assert.equal((await t.message(msg('carol@example.org'))).decision.action, 'accept');
    assert.equal((await t.message(msg('carol@example.org'))).decision.action, 'accept');
    assert.equal((await t.message(msg('carol@example.org'))).decision.action, 'tempfail');
    await t.close();
  });

  it('at RCPT, each recipient is decided as it comes: the (N+1)-th is refused, the message goes on', async () => {
    const t = await createTestKernel({ plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: '2/1m', by: 'sender', cost: 'recipient', stage: 'rcptTo' } }] });
    const r = await t.message(msg('a@example.org', ['1@e.example', '2@e.example', '3@e.example']));
    assert.deepEqual(r.recipients.map((x) => x.action), ['continue', 'continue', 'tempfail']);
    assert.equal(r.decision.action, 'accept');
    await t.close();
  });

  it('headers: X-Themis-RateLimit shows the tightest window on accepted mail', async () => {
    const t = await createTestKernel({ plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: '10/1m,3/1h', by: 'sender', headers: true } }] });
    const r = await t.message(msg('a@example.org'));
    assert.deepEqual(r.modifications.filter((m) => m.type === 'addHeader').map((m) => (m as { value: string }).value.replace(/reset=\d+s/, 'reset=Ns')), ['policy=p; window=1h; limit=3; used=1; remaining=2; reset=Ns']);
    await t.close();
  });

  it('the store unreachable: onStoreError accept (default) lets mail through, tempfail refuses; both counted', async (ctx) => {
    const dead = new RedisStore({ url: 'redis://127.0.0.1:1', commandTimeout: 50, connectTimeout: 50 });
    ctx.after(() => dead.close());
    for (const onStoreError of ['accept', 'tempfail'] as const) {
      const t = await createTestKernel({ store: dead, plugins: [{ plugin: ratelimit, options: { storeTimeout: 100 } }], policies: [{ name: 'p', ratelimit: { windows: '1/1m', by: 'sender', onStoreError } }] });
      const r = await t.message(msg('a@example.org'));
      assert.equal(r.decision.action, onStoreError === 'accept' ? 'accept' : 'tempfail');
      if (onStoreError === 'tempfail') assert.deepEqual(r.decision.reply, { code: 451, enhanced: '4.3.0', text: 'Temporary rate-limit failure, try again later' });
      await t.close();
      assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_ratelimit_store_errors_total'), /policy="p"\} 1/);
    }
  });

  it('a store that does not answer within storeTimeout: a coded PluginError, logged under the plugin\'s registered code', async () => {
    class Hanging extends MemoryStore {
      override atomic<R>(): Promise<R[]> {
        return new Promise(() => undefined);
      }
    }
    const warnings: Record<string, unknown>[] = [];
    const logger = { debug() {}, info() {}, error() {}, warn: (fields: object, message?: string) => warnings.push({ ...fields, message }), child: () => logger };
    const t = await createTestKernel({ logger, store: new Hanging(), plugins: [{ plugin: ratelimit, options: { storeTimeout: 20 } }], policies: [{ name: 'p', ratelimit: { windows: '1/1m', by: 'sender' } }] });
    const r = await t.message(msg('a@example.org'));
    assert.equal(r.decision.action, 'accept');
    assert.deepEqual(warnings, [{ code: 'THEMIS_RATELIMIT_STORE_FAILED', cause: 'THEMIS_RATELIMIT_STORE_TIMEOUT', err: 'the store did not answer the rate-limit request within 20 ms (storeTimeout)', message: 'rate-limit store failed (the store did not answer the rate-limit request within 20 ms (storeTimeout)); applying onStoreError' }]);
    for (const code of ['THEMIS_RATELIMIT_STORE_FAILED', 'THEMIS_RATELIMIT_STORE_TIMEOUT', 'THEMIS_RATELIMIT_REFUND_FAILED']) assert.equal(t.kernel.errors.get(code)?.owner, 'ratelimit');
    await t.close();
  });

  it('configuration errors name the policy and the path inside the field', async () => {
    const bad = async (field: unknown, pattern: RegExp) =>
      assert.rejects(createTestKernel({ plugins: [ratelimit], policies: [{ name: 'x', ratelimit: field as never }] }), (e: unknown) => {
        assert.ok(isThemisError(e), String(e));
        assert.match(e.message, pattern);
        return true;
      });
    await bad({ windows: [{ limit: -1, per: '1m' }] }, /policies\[0\]\.ratelimit\.windows\[0\]\.limit \(x\): Too small: expected number to be >=0; found -1/);
    await bad({ windows: [{ limit: 1, per: '0s' }] }, /policies\[0\]\.ratelimit\.windows\[0\]\.per \(x\): expected a duration/);
    await bad({ windows: '10 per fortnight' }, /expected 'LIMIT\/DURATION'/);
    await bad({ windows: '1/1m', by: 'nobody' }, /ratelimit\.by \(x\): unknown subject "nobody"/);
    await bad({ windows: '1/1m', action: 'smite' }, /ratelimit\.action/);
    await bad({ windows: '1/1m', reply: { code: 250 } }, /ratelimit\.reply\.code \(x\): expected a 4xx or 5xx SMTP code/);
    await bad({ windows: '1/1m', colour: 'red' }, /Unrecognized key: "colour"/);
    void z;
  });
});
