// The example plugin's own tests: written only against `themis/testing` and the public types.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createTestKernel } from 'themis-milter/testing';
import { isThemisError } from 'themis-milter';
import allowlist from '../src/index.ts';

const policies = [{ name: 'inbound', allowlist: { recipients: ['@example.net', 'boss@example.com'] } }];

describe('recipient-allowlist', () => {
  it('refuses recipients off the list, one at a time, and delivers to the others', async () => {
    const t = await createTestKernel({ plugins: [allowlist], policies });
    const r = await t.message({ from: 'sender@example.org', rcpt: ['alice@EXAMPLE.net', 'intruder@example.com', 'Boss@example.com'] });
    assert.deepEqual(r.recipients.map((x) => x.action), ['continue', 'reject', 'continue']);
    assert.deepEqual(r.recipients[1].reply, { code: 550, enhanced: '5.7.1', text: 'Recipient not allowed here' });
    assert.equal(r.decision.action, 'accept');
    assert.match(r.trace!.entries.find((e) => e.action === 'reject')!.reason!, /policy inbound/);
    await t.close();
  });

  it('tempfails instead when the policy says so', async () => {
    const t = await createTestKernel({ plugins: [allowlist], policies: [{ name: 'migrating', allowlist: { recipients: ['@new.example'], action: 'tempfail', text: 'Mailbox moving, retry later' } }] });
    const r = await t.message({ from: 'a@example.org', rcpt: ['x@old.example'] });
    assert.equal(r.decision.stage, 'rcptTo');
    assert.deepEqual(r.recipients[0], { address: 'x@old.example', action: 'tempfail', reply: { code: 450, enhanced: '4.7.1', text: 'Mailbox moving, retry later' } });
    await t.close();
  });

  it('a bad policy value is a configuration error naming the field', async () => {
    await assert.rejects(createTestKernel({ plugins: [allowlist], policies: [{ name: 'p', allowlist: { recipients: ['not-an-address'] } }] }), (e: unknown) => isThemisError(e, 'THEMIS_ERR_POLICY_FIELD') && /allowlist\.recipients\[0\]/.test(e.message));
  });

  it('counts refusals in its own metric', async () => {
    const t = await createTestKernel({ plugins: [allowlist], policies });
    await t.message({ from: 'a@example.org', rcpt: ['x@elsewhere.example'] });
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_recipient_allowlist_refused_total'), /policy="inbound"\} 1/);
    await t.close();
  });
});
