// DKIM verification through the kernel (themis-milter/testing), with the keys published by a DNS
// server the test runs on loopback. The messages are signed by mailauth's own signer (not the
// plugin's): pass with RSA and Ed25519 and both canonicalisations, fail for an altered body or
// header, none, permerror for broken key records and signatures, temperror from a DNS server that
// never answers, several signatures, maxSignatures, the matrix, the skip lists and the header.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestKernel, type TestConnectionMessage } from 'themis-milter/testing';
import headersPlugin from 'themis-plugin-headers';
import dkim from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, mailauthSign, makeKey, noteSpy, sampleMessage, signWithLength, splitMessage, type TestKey } from './helpers/mail.ts';

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let rsa: TestKey;
let ed: TestKey;
let other: TestKey;
let badRecord: TestKey;
let revoked: TestKey;
let slow: TestKey;
let unpublished: TestKey;
let big: TestKey;
before(async () => {
  big = makeKey('example.com', 'big4096', 'rsa', 4096);
  rsa = makeKey('example.com', 'rsa1');
  ed = makeKey('example.com', 'ed1', 'ed25519');
  other = makeKey('lists.example.org', 'l1');
  badRecord = makeKey('example.com', 'broken');
  revoked = makeKey('example.com', 'revoked');
  slow = makeKey('slow.example', 's1');
  unpublished = makeKey('example.com', 'nokey');
  dns = await startDnsServer(
    {
      'rsa1._domainkey.example.com': { TXT: [rsa.record] },
      'ed1._domainkey.example.com': { TXT: [ed.record] },
      'l1._domainkey.lists.example.org': { TXT: [other.record] },
      'broken._domainkey.example.com': { TXT: ['v=DKIM1; k=rsa; p=not*base64!'] },
      'revoked._domainkey.example.com': { TXT: ['v=DKIM1; k=rsa; p='] },
      's1._domainkey.slow.example': { TXT: [slow.record] },
      'big4096._domainkey.example.com': { TXT: [big.record] },
      // 24,000 characters of key: far past any real key, and past UDP (the resolver retries over TCP).
      'huge._domainkey.example.com': { TXT: [`v=DKIM1; k=rsa; p=${'QUJD'.repeat(6_000)}`] },
    },
    { timeoutNames: ['s1._domainkey.slow.example'] },
  );
});
after(() => dns.close());

const options = (extra: Record<string, unknown> = {}) => ({ dnsServers: [dns.address], dnsTimeout: 200, deadline: 2_000, authservId: 'mx.themis.test', ...extra });

async function kernel(dkimField: Record<string, unknown> = {}, extra: Record<string, unknown> = {}, policies?: { name: string; priority?: number; match?: Record<string, unknown>; dkim: Record<string, unknown> }[]) {
  const spy = noteSpy();
  const t = await createTestKernel({ plugins: [{ plugin: dkim, options: options(extra) }, spy.plugin], policies: (policies ?? [{ name: 'inbound', dkim: dkimField }]) as never });
  return { t, spy };
}

const msg = (raw: string | Buffer, extra: Partial<TestConnectionMessage> = {}): TestConnectionMessage => {
  const { headers, body } = splitMessage(raw);
  return { client: { address: '198.51.100.7' }, helo: 'mx.example.com', from: 'alice@example.com', rcpt: ['bob@example.net'], headers, body, ...extra };
};

describe('dkim verification', () => {
  it('RSA and Ed25519, relaxed and simple: pass, aligned with From, in the note', async () => {
    const { t, spy } = await kernel({ verify: { headers: { authenticationResults: true } } });
    for (const [key, canonicalization] of [[rsa, 'relaxed/relaxed'], [ed, 'simple/simple'], [rsa, 'simple/relaxed'], [ed, 'relaxed/simple']] as const) {
      const r = await t.message(msg(await mailauthSign(sampleMessage(), key, { canonicalization })));
      assert.equal(r.decision.action, 'accept');
      const note = spy.last()!;
      assert.equal(note.result, 'pass', `${key.selector} ${canonicalization}: ${JSON.stringify(note.results)}`);
      assert.deepEqual(note.domains, ['example.com']);
      assert.equal(note.verified, true);
      assert.deepEqual(
        note.results.map(({ result, domain, selector, algorithm, headerFrom, aligned }) => ({ result, domain, selector, algorithm, headerFrom, aligned })),
        [{ result: 'pass', domain: 'example.com', selector: key.selector, algorithm: key === rsa ? 'rsa-sha256' : 'ed25519-sha256', headerFrom: 'example.com', aligned: true }],
      );
      const [ar] = added(r, 'Authentication-Results');
      assert.match(ar, new RegExp(`^mx\\.themis\\.test; dkim=pass header\\.d=example\\.com header\\.s=${key.selector} header\\.a=${key === rsa ? 'rsa' : 'ed25519'}-sha256 header\\.b=[A-Za-z0-9+/]{8}$`));
      assert.deepEqual(added(r, 'X-Themis-DKIM'), []);
    }
    await t.close();
  });

  it('a third-party signature passes but is not aligned', async () => {
    const { t, spy } = await kernel();
    await t.message(msg(await mailauthSign(sampleMessage(), other)));
    const note = spy.last()!;
    assert.equal(note.result, 'pass');
    assert.equal(note.results[0].aligned, false);
    assert.deepEqual(note.domains, ['lists.example.org']);
    await t.close();
  });

  it('an altered body or header fails; by default a fail is tagged, not refused', async () => {
    const { t, spy } = await kernel();
    const signed = (await mailauthSign(sampleMessage(), rsa)).toString();
    const body = await t.message(msg(signed.replace('the report is attached', 'the invoice is attached')));
    assert.equal(body.decision.action, 'accept');
    assert.equal(spy.last()!.result, 'fail');
    assert.match(spy.last()!.results[0].reason!, /body hash/);
    assert.deepEqual(added(body, 'X-Themis-DKIM'), ['fail']);
    const header = await t.message(msg(signed.replace('Subject: The quarterly report', 'Subject: The quarterly invoice')));
    assert.equal(spy.last()!.result, 'fail');
    assert.match(spy.last()!.results[0].reason!, /signature/);
    assert.deepEqual(added(header, 'X-Themis-DKIM'), ['fail']);
    await t.close();
  });

  it('an unsigned message is none', async () => {
    const { t, spy } = await kernel({ verify: { headers: { authenticationResults: true } } });
    const r = await t.message(msg(sampleMessage()));
    assert.equal(r.decision.action, 'accept');
    assert.deepEqual({ ...spy.last()!, bodyBytes: 0 }, { results: [], result: 'none', domains: [], headerFrom: 'example.com', verified: true, bodyBytes: 0, arc: { result: 'none', instances: 0, sealers: [] } });
    assert.deepEqual(added(r, 'Authentication-Results'), ['mx.themis.test; dkim=none']);
    await t.close();
  });

  it('permerror: a broken or revoked key record, no key, a malformed signature, an absurd l=', async () => {
    const { t, spy } = await kernel({ verify: { actions: { permerror: 'reject' } } });
    for (const key of [badRecord, revoked, unpublished]) {
      const r = await t.message(msg(await mailauthSign(sampleMessage(), key)));
      assert.equal(spy.last()!.result, 'permerror', `${key.selector}: ${JSON.stringify(spy.last()!.results)}`);
      assert.equal(r.decision.action, 'reject');
      assert.deepEqual(r.decision.reply, { code: 550, enhanced: '5.7.20', text: 'DKIM permerror for example.com' });
    }
    // Required tags missing, a signature that does not cover From, a b= that is no base64, an l= past the body.
    const good = (await mailauthSign(sampleMessage(), rsa)).toString();
    const malformed = [
      `DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa1\r\n${sampleMessage()}`,
      good.replace(/h=[^;]+;/, 'h=Subject:To;'),
      good.replace(/ b=[^;]+$/m, ' b=!!!!'),
      `DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=rsa1; l=99999999999999999999999999; h=From:Subject; bh=AAAA; b=AAAA\r\n${sampleMessage()}`,
      `DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa1; h=From; bh=${'A'.repeat(4000)}; b=${'B'.repeat(8000)}\r\n${sampleMessage()}`,
    ];
    for (const raw of malformed) {
      const r = await t.message(msg(raw));
      assert.ok(['permerror', 'neutral', 'fail'].includes(spy.last()!.result), `${raw.slice(0, 80)}: ${JSON.stringify(spy.last()!.results)}`);
      assert.notEqual(spy.last()!.result, 'pass');
      if (process.env.DKIM_DEBUG) console.log(JSON.stringify(spy.last()!.results));
      assert.equal(spy.last()!.results.length, 1);
      if (spy.last()!.result === 'permerror') assert.equal(r.decision.action, 'reject');
    }
    await t.close();
  });

  it('huge keys and absurd header lists are results, never a crash or a stuck session', async () => {
    const { t, spy } = await kernel();
    // A real 4,096-bit key verifies.
    await t.message(msg(await mailauthSign(sampleMessage(), big)));
    assert.equal(spy.last()!.result, 'pass', JSON.stringify(spy.last()!.results));
    // A 24,000-character key record (garbage base64), fetched over TCP: permerror, with a reason.
    const good = (await mailauthSign(sampleMessage(), rsa)).toString();
    await t.message(msg(good.replace(/s=rsa1;/, 's=huge;')));
    assert.deepEqual(spy.last()!.results.map((x) => x.result), ['permerror'], JSON.stringify(spy.last()!.results));
    // h= naming From 3,000 times (over-signing gone mad), and 3,000 distinct names that are not there.
    const names = Array.from({ length: 3_000 }, (_, i) => `X-H${i}`).join(':');
    for (const headerList of ['From:'.repeat(3_000).slice(0, -1), `From:${names}`]) {
      const r = await t.message(msg(await mailauthSign(sampleMessage(), rsa, { headerList })));
      assert.equal(r.decision.action, 'accept');
      assert.equal(spy.last()!.results.length, 1);
      assert.ok(['pass', 'permerror', 'fail', 'neutral'].includes(spy.last()!.result), JSON.stringify(spy.last()!.results));
    }
    await t.close();
  });

  it('a valid signature whose l= is past the end of the body is permerror', async () => {
    const { t, spy } = await kernel();
    for (const l of [1_000, 99_999_999_999]) {
      await t.message(msg(await signWithLength(sampleMessage(), rsa, l)));
      assert.deepEqual(spy.last()!.results.map((x) => [x.result, x.reason]), [['permerror', 'l= is longer than the body']], `l=${l}`);
    }
    // The same signature with an l= that is the body's length verifies.
    await t.message(msg(await signWithLength(sampleMessage(), rsa, 48)));
    assert.equal(spy.last()!.result, 'pass', JSON.stringify(spy.last()!.results));
    await t.close();
  });

  it('a signature with l= covering part of the body passes, and says so', async () => {
    const { t, spy } = await kernel();
    const signed = (await mailauthSign(sampleMessage(), rsa, { maxBodyLength: 12 })).toString();
    await t.message(msg(`${signed}Appended by someone else.\r\n`));
    assert.equal(spy.last()!.result, 'pass');
    assert.match(spy.last()!.results[0].reason!, /l= leaves \d+ body bytes unsigned/);
    await t.close();
  });

  it('a DNS server that never answers is temperror — never fail — and tempfails only when configured', async () => {
    const { t, spy } = await kernel({ verify: { actions: { temperror: 'tempfail' } } });
    const raw = await mailauthSign(sampleMessage('a@slow.example'), slow);
    const r = await t.message(msg(raw, { from: 'a@slow.example' }));
    assert.equal(spy.last()!.result, 'temperror');
    assert.equal(r.decision.action, 'tempfail');
    assert.deepEqual(r.decision.reply, { code: 451, enhanced: '4.7.5', text: 'DKIM check of slow.example failed temporarily' });
    await t.close();
    // Past the deadline: temperror as well, however long the DNS would take.
    const k2 = await kernel({}, { dnsTimeout: 1_500, deadline: 300 });
    const started = Date.now();
    const r2 = await k2.t.message(msg(raw, { from: 'a@slow.example' }));
    assert.ok(Date.now() - started < 3_000);
    assert.equal(r2.decision.action, 'accept');
    assert.deepEqual(k2.spy.last()!.results.map((x) => [x.result, x.reason]), [['temperror', 'deadline exceeded']]);
    await k2.t.close();
  });

  it('several signatures: each is reported, any pass makes the message pass; maxSignatures bounds the work', async () => {
    const { t, spy } = await kernel({ verify: { headers: { authenticationResults: true } } });
    const twice = await mailauthSign(await mailauthSign(sampleMessage(), other), ed);
    // The body hash is checked before the key is looked up: a made-up signature fails.
    const three = Buffer.concat([Buffer.from(`DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=nokey; h=From; bh=AAAA; b=AAAA\r\n`), twice]);
    const r = await t.message(msg(three));
    const note = spy.last()!;
    assert.equal(note.result, 'pass');
    assert.deepEqual(note.results.map((x) => [x.result, x.domain, x.selector]), [['fail', 'example.com', 'nokey'], ['pass', 'example.com', 'ed1'], ['pass', 'lists.example.org', 'l1']]);
    assert.deepEqual(note.domains, ['example.com', 'lists.example.org']);
    assert.equal(added(r, 'Authentication-Results')[0].split('\n\t').length, 4);
    await t.close();

    const k2 = await kernel({}, { maxSignatures: 1 });
    const before = dns.queries();
    await k2.t.message(msg(twice));
    assert.deepEqual(k2.spy.last()!.results.map((x) => [x.result, x.selector, x.reason]), [['pass', 'ed1', undefined], ['neutral', 'l1', 'not checked']]);
    assert.equal(dns.queries() - before, 1, 'one key looked up');
    await k2.t.close();
  });

  it('the matrix: reject, hold, the most severe of several policies, a configured reply', async () => {
    const signed = (await mailauthSign(sampleMessage(), rsa)).toString().replace('the report', 'THE report');
    const { t } = await kernel({ verify: { actions: { fail: 'reject' } } });
    const r = await t.message(msg(signed));
    assert.equal(r.decision.action, 'reject');
    assert.deepEqual(r.decision.reply, { code: 550, enhanced: '5.7.20', text: 'DKIM fail for example.com' });
    await t.close();
    const k2 = await kernel({}, {}, [
      { name: 'a-hold', priority: 1, dkim: { verify: { actions: { fail: 'hold' } } } },
      { name: 'b-reject', priority: 2, match: { destination: '@dest.example' }, dkim: { verify: { actions: { fail: 'reject' }, reply: { text: 'Forged mail from {domain} ({reason})' } } } },
    ]);
    const held = await k2.t.message(msg(signed));
    assert.equal(held.trace!.outcome, 'quarantined');
    const refused = await k2.t.message(msg(signed, { rcpt: ['x@dest.example'] }));
    assert.equal(refused.decision.action, 'reject');
    assert.equal(refused.decision.reply!.enhanced, '5.7.20');
    assert.match(String(refused.decision.reply!.text), /^Forged mail from example\.com \(body hash did not verify\)$/);
    await k2.t.close();
    // Refusing a pass (a policy that accepts no DKIM-signed mail at all) is 5.7.21, no acceptable signature.
    const k3 = await kernel({ verify: { actions: { pass: 'reject' } } });
    const pass = await k3.t.message(msg(await mailauthSign(sampleMessage(), rsa)));
    assert.deepEqual(pass.decision.reply, { code: 550, enhanced: '5.7.21', text: 'DKIM pass for example.com' });
    await k3.t.close();
  });

  it('authenticated clients and listed relays and senders are not checked (no header, no DNS query)', async () => {
    const { t, spy } = await kernel({ verify: { actions: { fail: 'reject', none: 'reject' }, headers: { authenticationResults: true }, skip: { clients: ['198.51.100.0/24'], senders: ['@lists.example.org'] } } });
    const before = dns.queries();
    const signed = await mailauthSign(sampleMessage(), rsa);
    for (const m of [msg(signed), msg(signed, { client: { address: '203.0.113.5' }, auth: 'alice' }), msg(signed, { client: { address: '203.0.113.5' }, from: 'x@lists.example.org' })]) {
      const r = await t.message(m);
      assert.equal(r.decision.action, 'accept');
      assert.deepEqual(added(r, 'Authentication-Results'), []);
      assert.equal(spy.last()!.verified, false);
    }
    assert.equal(dns.queries(), before, 'no lookup at all');
    const checked = await t.message(msg(sampleMessage(), { client: { address: '203.0.113.5' } }));
    assert.equal(checked.decision.action, 'reject', 'the others are');
    await t.close();
  });

  it('the headers plugin reads the note: {dkim.result}, { note: \'dkim.result\' }', async () => {
    const t = await createTestKernel({
      plugins: [headersPlugin, { plugin: dkim, options: options() }],
      policies: [{ name: 'in', dkim: { verify: { actions: { fail: 'ignore' } } }, headers: [{ name: 'dkim', if: { note: 'dkim.result', oneOf: ['pass', 'fail'] }, then: [{ add: 'X-DKIM-Seen', value: 'DKIM {dkim.result} ({dkim.headerFrom})' }] }] }],
    });
    const signed = await mailauthSign(sampleMessage(), rsa);
    assert.deepEqual(added(await t.message(msg(signed)), 'X-DKIM-Seen'), ['DKIM pass (example.com)']);
    assert.deepEqual(added(await t.message(msg(signed.toString().replace('report', 'rep0rt'))), 'X-DKIM-Seen'), ['DKIM fail (example.com)']);
    assert.deepEqual(added(await t.message(msg(sampleMessage())), 'X-DKIM-Seen'), []);
    await t.close();
  });

  it('verify.enabled: false checks nothing; configuration errors name the place', async () => {
    const { t, spy } = await kernel({ verify: { enabled: false, actions: { none: 'reject' } } });
    const r = await t.message(msg(sampleMessage()));
    assert.equal(r.decision.action, 'accept');
    assert.equal(spy.last()!.verified, false);
    await t.close();
    await assert.rejects(createTestKernel({ plugins: [{ plugin: dkim, options: options() }], policies: [{ name: 'x', dkim: { verify: { actions: { fail: 'smite' as never } } } }] }), /policies\[0\]\.dkim\.verify\.actions\.fail \(x\)/);
    await assert.rejects(createTestKernel({ plugins: [{ plugin: dkim, options: options() }], policies: [{ name: 'x', dkim: { verify: { reply: { code: 250 } } } }] }), /dkim\.verify\.reply\.code \(x\)/);
  });
});
