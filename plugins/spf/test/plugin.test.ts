// The spf plugin through the kernel (themis/testing) with real DNS lookups against a DNS server the
// test runs on loopback: the verdict matrix, the null sender's HELO identity, skip lists, one header
// per message whatever the number of policies, temperror from a DNS server that never answers.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestKernel, type TestConnectionMessage, type TestResult } from 'themis-milter/testing';
import spf from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';

let dns: Awaited<ReturnType<typeof startDnsServer>>;
before(async () => {
  dns = await startDnsServer(
    {
      'strict.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
      'soft.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 ~all'] },
      'mx.strict.example': { TXT: ['v=spf1 ip4:192.0.2.10 -all'] },
      'nospf.example': { A: ['192.0.2.99'] },
      'slow.example': { TXT: ['v=spf1 -all'] },
    },
    { timeoutNames: ['slow.example'] },
  );
});
after(() => dns.close());

const plugin = () => ({ plugin: spf, options: { dnsServers: [dns.address], dnsTimeout: 200, deadline: 1_000, authservId: 'mx.themis.test' } });
const msg = (from: string, ip = '198.51.100.7', extra: Partial<TestConnectionMessage> = {}): TestConnectionMessage => ({ client: { address: ip }, helo: 'mx.strict.example', from, rcpt: ['r@dest.example'], ...extra });
const headers = (r: TestResult, name: string) => r.modifications.filter((m) => (m.type === 'insertHeader' || m.type === 'addHeader') && m.name === name).map((m) => (m as { value: string }).value);

describe('spf plugin', () => {
  it('default: a fail is tagged, not refused; the Received-SPF header says why', async () => {
    const t = await createTestKernel({ plugins: [plugin()], policies: [{ name: 'inbound', spf: {} }] });
    const r = await t.message(msg('alice@strict.example'));
    assert.equal(r.decision.action, 'accept');
    const [received] = headers(r, 'Received-SPF');
    assert.match(received, /^fail \(.*\) client-ip=198\.51\.100\.7; envelope-from="?alice@strict\.example"?; helo=mx\.strict\.example; receiver=mx\.themis\.test; identity=mailfrom/);
    assert.deepEqual(headers(r, 'X-Themis-SPF'), ['fail']);
    await t.close();
  });

  it('the matrix can refuse: 550 5.7.23 SPF fail for the domain', async () => {
    const t = await createTestKernel({ plugins: [plugin()], policies: [{ name: 'inbound', spf: { mailFrom: { fail: 'reject', softfail: 'hold' } } }] });
    const r = await t.message(msg('alice@strict.example'));
    assert.equal(r.decision.action, 'reject');
    assert.deepEqual(r.decision.reply, { code: 550, enhanced: '5.7.23', text: 'SPF fail for strict.example' });
    const soft = await t.message(msg('bob@soft.example'));
    assert.equal(soft.trace!.outcome, 'quarantined');
    await t.close();
  });

  it('pass and none: header only', async () => {
    const t = await createTestKernel({ plugins: [plugin()], policies: [{ name: 'inbound', spf: { mailFrom: { fail: 'reject' } } }] });
    const pass = await t.message(msg('alice@strict.example', '192.0.2.44'));
    assert.equal(pass.decision.action, 'accept');
    assert.match(headers(pass, 'Received-SPF')[0], /^pass /);
    const none = await t.message(msg('alice@nospf.example'));
    assert.match(headers(none, 'Received-SPF')[0], /^none /);
    assert.deepEqual(headers(none, 'X-Themis-SPF'), []);
    await t.close();
  });

  it('the null sender is checked on its HELO identity', async () => {
    const t = await createTestKernel({ plugins: [plugin()], policies: [{ name: 'inbound', spf: { helo: { fail: 'reject' } } }] });
    const ok = await t.message(msg('', '192.0.2.10'));
    assert.match(headers(ok, 'Received-SPF')[0], /^pass .*identity=helo/);
    const bad = await t.message(msg('', '198.51.100.7'));
    assert.equal(bad.decision.action, 'reject');
    await t.close();
  });

  it('authenticated clients and listed relays are not checked (no header, no DNS query)', async () => {
    const t = await createTestKernel({ plugins: [plugin()], policies: [{ name: 'inbound', spf: { mailFrom: { fail: 'reject' }, skip: { clients: ['198.51.100.0/24'] } } }] });
    const before = dns.queries();
    const relay = await t.message(msg('alice@strict.example'));
    const authed = await t.message(msg('alice@strict.example', '203.0.113.5', { auth: 'alice' }));
    for (const r of [relay, authed]) {
      assert.equal(r.decision.action, 'accept');
      assert.deepEqual(headers(r, 'Received-SPF'), []);
    }
    assert.equal(dns.queries(), before, 'no lookup at all');
    await t.close();
  });

  it('several policies enabling SPF: one check, one Received-SPF, the most severe action', async () => {
    const t = await createTestKernel({
      plugins: [plugin()],
      policies: [
        { name: 'a-tag', priority: 1, spf: { headers: { receivedSpf: true, authenticationResults: true } } },
        { name: 'b-refuse', priority: 2, match: { destination: '@dest.example' }, spf: { mailFrom: { fail: 'reject' } } },
      ],
    });
    const r = await t.message(msg('alice@strict.example'));
    assert.equal(r.decision.action, 'reject');
    const other = await t.message(msg('alice@strict.example', undefined, { rcpt: ['x@elsewhere.example'] }));
    assert.equal(other.decision.action, 'accept', 'b-refuse applies only to its destination');
    assert.equal(headers(other, 'Received-SPF').length, 1);
    assert.deepEqual(headers(other, 'Authentication-Results'), ['mx.themis.test; spf=fail smtp.mailfrom=strict.example']);
    await t.close();
  });

  it('a DNS server that never answers is temperror — never fail — and tempfails only when configured', async () => {
    const t = await createTestKernel({ plugins: [plugin()], policies: [{ name: 'inbound', spf: { mailFrom: { temperror: 'tempfail', fail: 'reject' } } }] });
    const r = await t.message(msg('alice@slow.example'));
    assert.equal(r.decision.action, 'tempfail');
    assert.deepEqual(r.decision.reply, { code: 451, enhanced: '4.7.24', text: 'SPF check of slow.example failed temporarily' });
    await t.close();
    const t2 = await createTestKernel({ plugins: [plugin()], policies: [{ name: 'inbound', spf: {} }] });
    const r2 = await t2.message(msg('alice@slow.example'));
    assert.equal(r2.decision.action, 'accept');
    assert.match(headers(r2, 'Received-SPF')[0], /^temperror /);
    await t2.close();
  });

  it('configuration errors name the place', async () => {
    // An unknown action does not compile; a configuration read from JavaScript or JSON can still carry one.
    await assert.rejects(createTestKernel({ plugins: [plugin()], policies: [{ name: 'x', spf: { mailFrom: { fail: 'smite' as never } } }] }), /policies\[0\]\.spf\.mailFrom\.fail \(x\)/);
    await assert.rejects(createTestKernel({ plugins: [plugin()], policies: [{ name: 'x', spf: { reply: { code: 250 } } }] }), /spf\.reply\.code \(x\): expected a 4xx or 5xx SMTP code/);
  });
});
