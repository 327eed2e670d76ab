// The accepted message's last hook (StageHooks.finalize) and exact header values
// (PluginDefinition.exactHeaders), through the harness, which runs the kernel's milter application as
// the daemon does: finalize sees the headers as the MTA will deliver them, runs only for accepted
// messages, can still refuse or hold; an explicit accept at end of message keeps the modifications.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { definePlugin, type FinalMessage, type HeaderEvent, type PluginDefinition } from '../../src/index.ts';
import { createTestKernel } from '../../src/testing/index.ts';

const message = {
  client: { address: '198.51.100.7' },
  from: 'alice@example.com',
  rcpt: ['bob@example.net'],
  headers: [
    ['Authentication-Results', ' mx.example.net; spf=pass smtp.mailfrom=forged.example'],
    ['From', ' Alice <alice@example.com>'],
    ['Subject', ' hello'],
    ['X-Drop', ' me'],
    ['To', ' bob@example.net'],
  ] as [string, string][],
  body: 'hello\r\n',
};

const show = (headers: readonly HeaderEvent[]) => headers.map((h) => `${h.name}: ${h.value}`);

function plugin(name: string, extra: Partial<PluginDefinition>): PluginDefinition {
  return definePlugin({ name, version: '1.0.0', kernel: '^1', setup: () => ({}), ...extra } as PluginDefinition);
}

describe('finalize: the accepted message, headers as delivered', () => {
  it('sees every header change of every plugin and the kernel’s Authentication-Results; a later finalize sees an earlier one’s header', async () => {
    const seen: { name: string; headers: string[]; results: readonly string[]; id: string }[] = [];
    const record = (name: string, final: FinalMessage) => seen.push({ name, headers: show(final.headers), results: [...final.authenticationResults], id: final.authservId });
    const editor = plugin('editor', {
      priority: 50,
      modifies: ['headers'],
      authenticates: true,
      setup: () => ({
        endOfMessage(ctx) {
          ctx.message!.changeHeader('Subject', 1, '[tag] hello');
          ctx.message!.deleteHeader('X-Drop', 1);
          ctx.message!.addHeader('X-Added', 'yes');
          ctx.message!.addAuthenticationResult('spf=pass smtp.mailfrom=example.com', { authservId: 'mx.example.net' });
        },
      }),
    });
    const signer = plugin('signer', {
      priority: 40,
      modifies: ['headers'],
      setup: () => ({
        finalize(ctx, final) {
          record('signer', final);
          ctx.message!.insertHeader(0, 'X-Signature', 'first');
        },
      }),
    });
    const sealer = plugin('sealer', { priority: 10, modifies: ['headers'], setup: () => ({ finalize: (_ctx, final) => void record('sealer', final) }) });
    const t = await createTestKernel({ plugins: [{ plugin: sealer }, { plugin: editor }, { plugin: signer }] });
    const r = await t.message(message);
    assert.equal(r.decision.action, 'accept');
    const expected = ['Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=example.com', 'From: Alice <alice@example.com>', 'Subject: [tag] hello', 'To: bob@example.net', 'X-Added: yes'];
    assert.deepEqual(seen, [
      { name: 'signer', headers: expected, results: ['spf=pass smtp.mailfrom=example.com'], id: 'mx.example.net' },
      { name: 'sealer', headers: ['X-Signature: first', ...expected], results: ['spf=pass smtp.mailfrom=example.com'], id: 'mx.example.net' },
    ]);
    // What the MTA gets: the kernel's work, then the plugins' requests in order, the finalize one last.
    assert.deepEqual(
      r.modifications.map((m) => `${m.type} ${'name' in m ? m.name : ''}`),
      ['changeHeader Authentication-Results', 'insertHeader Authentication-Results', 'changeHeader Subject', 'changeHeader X-Drop', 'addHeader X-Added', 'insertHeader X-Signature'],
    );
    assert.deepEqual(r.trace!.entries.filter((e) => e.stage === 'finalize').map((e) => e.plugin), ['signer', 'sealer']);
    await t.close();
  });

  it('runs only for accepted messages; its refusal still refuses (nothing sent), quarantine holds, a failure is its onError verdict', async () => {
    let calls = 0;
    const refuse = (action: 'reject' | 'tempfail' | 'quarantine') =>
      plugin(`finalize-${action}`, {
        modifies: ['headers'],
        setup: () => ({
          finalize(ctx) {
            calls++;
            ctx.message!.addHeader('X-Late', 'x');
            return { action, reason: `cannot sign (${action})` };
          },
        }),
      });
    const refuser = plugin('refuser', { priority: 90, setup: () => ({ endOfMessage: () => ({ action: 'reject', reason: 'no' }) }) });

    let t = await createTestKernel({ plugins: [{ plugin: refuser }, { plugin: refuse('tempfail') }] });
    let r = await t.message(message);
    assert.equal(r.decision.action, 'reject');
    assert.equal(calls, 0, 'a refused message is not finalized');
    await t.close();

    t = await createTestKernel({ plugins: [{ plugin: refuse('tempfail') }] });
    r = await t.message(message);
    assert.equal(r.decision.action, 'tempfail');
    assert.deepEqual(r.modifications, []);
    assert.equal(r.trace!.outcome, 'tempfailed');
    assert.equal(r.trace!.stage, 'finalize');
    await t.close();

    t = await createTestKernel({ plugins: [{ plugin: refuse('quarantine') }] });
    r = await t.message(message);
    assert.equal(r.decision.action, 'accept');
    assert.deepEqual(r.modifications.map((m) => m.type), ['addHeader', 'quarantine']);
    assert.equal(r.trace!.outcome, 'quarantined');
    await t.close();

    const failing = (onError: 'continue' | 'tempfail') =>
      plugin(`failing-${onError}`, {
        onError,
        setup: () => ({
          finalize() {
            throw new Error('key unreadable');
          },
        }),
      });
    t = await createTestKernel({ plugins: [{ plugin: failing('tempfail') }] });
    r = await t.message(message);
    assert.equal(r.decision.action, 'tempfail');
    assert.equal(r.trace!.entries.find((e) => e.stage === 'finalize')!.error, 'THEMIS_ERR_HOOK_FAILED');
    await t.close();
    t = await createTestKernel({ plugins: [{ plugin: failing('continue') }] });
    r = await t.message(message);
    assert.equal(r.decision.action, 'accept', 'fail open: delivered as it is');
    await t.close();
  });

  it('an asynchronous finalize is awaited, with the hook deadline', async () => {
    const slow = plugin('slow', {
      modifies: ['headers'],
      setup: () => ({
        async finalize(ctx) {
          await new Promise((r) => setTimeout(r, 10));
          ctx.message!.insertHeader(0, 'X-Slow', 'signed');
        },
      }),
    });
    const hung = plugin('hung', { onError: 'tempfail', setup: () => ({ finalize: () => new Promise(() => {}) }) });
    let t = await createTestKernel({ plugins: [{ plugin: slow }] });
    let r = await t.message(message);
    assert.deepEqual(r.modifications, [{ type: 'insertHeader', index: 0, name: 'X-Slow', value: 'signed' }]);
    await t.close();
    t = await createTestKernel({ plugins: [{ plugin: hung }], hookTimeout: 50 });
    r = await t.message(message);
    assert.equal(r.decision.action, 'tempfail');
    assert.equal(r.trace!.entries.find((e) => e.stage === 'finalize')!.error, 'THEMIS_ERR_HOOK_TIMEOUT');
    await t.close();
  });
});

describe('an accept at end of message', () => {
  it('keeps the modifications and the Authentication-Results (they were dropped before), and finalize runs', async () => {
    const accepter = plugin('accepter', {
      modifies: ['headers'],
      authenticates: true,
      setup: () => ({
        endOfMessage(ctx) {
          ctx.message!.addHeader('X-Tag', 'v');
          ctx.message!.addAuthenticationResult('dkim=pass header.d=example.com', { authservId: 'mx.example.net' });
          return { action: 'accept', reason: 'known sender' };
        },
      }),
    });
    const signer = plugin('signer', { priority: -10, modifies: ['headers'], setup: () => ({ finalize: (ctx) => void ctx.message!.insertHeader(0, 'X-Signed', 'yes') }) });
    const t = await createTestKernel({ plugins: [{ plugin: accepter }, { plugin: signer }] });
    const r = await t.message(message);
    assert.equal(r.decision.action, 'accept');
    // The forged Authentication-Results removed, ours inserted, the plugin's header, the signer's.
    assert.deepEqual(
      r.modifications.map((m) => `${m.type} ${'name' in m ? m.name : ''}`),
      ['changeHeader Authentication-Results', 'insertHeader Authentication-Results', 'addHeader X-Tag', 'insertHeader X-Signed'],
    );
    assert.equal(r.trace!.outcome, 'accepted');
    assert.equal(r.trace!.winner?.plugin, 'accepter');
    await t.close();
  });
});

describe('exactHeaders: header values byte for byte', () => {
  const collect = (exact: boolean) => {
    const seen: HeaderEvent[] = [];
    const reader = plugin('reader', { observes: ['header'], setup: () => ({ endOfMessage: (ctx) => void seen.push(...ctx.message!.headers.map((h) => ({ ...h }))) }) });
    const needs = plugin('needs', { exactHeaders: exact, setup: () => ({ endOfMessage: () => undefined }) });
    return { seen, plugins: [{ plugin: reader }, { plugin: needs }] };
  };
  const odd = { ...message, headers: [['From', 'Alice <alice@example.com>'], ['Subject', ' two'], ['X-Tab', '\tfolded\r\n\tline']] as [string, string][] };

  it('a plugin that declares it: every plugin sees the same value, and raw is the exact text after the colon', async () => {
    const { seen, plugins } = collect(true);
    const t = await createTestKernel({ plugins });
    await t.message(odd);
    assert.deepEqual(seen, [
      { name: 'From', value: 'Alice <alice@example.com>', raw: 'Alice <alice@example.com>' },
      { name: 'Subject', value: 'two', raw: ' two' },
      { name: 'X-Tab', value: '\tfolded\n\tline', raw: '\tfolded\n\tline' },
    ]);
    await t.close();
  });

  it('none does: the MTA is not asked for SMFIP_HDR_LEADSPC, and there is no raw', async () => {
    const { seen, plugins } = collect(false);
    const t = await createTestKernel({ plugins });
    await t.message(odd);
    assert.deepEqual(seen, [
      { name: 'From', value: 'Alice <alice@example.com>' },
      { name: 'Subject', value: 'two' },
      { name: 'X-Tab', value: '\tfolded\n\tline' },
    ]);
    await t.close();
  });
});
