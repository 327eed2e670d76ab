// DMARC and ARC (RFC 8617 §7.2, RFC 7489 `trusted_forwarder`): a message from a p=reject domain,
// forwarded (SPF fails at the forwarder's address) with a footer that breaks the author's DKIM
// signature, ARC-sealed by the forwarder (mailauth's sealer). A trusted newest sealer whose
// ARC-Authentication-Results show the message authenticated for the From domain overrides the
// disposition to none — the result stays fail, the override is in the note and Authentication-Results;
// an untrusted sealer, results that show no pass, a chain broken after sealing or a trusted sealer that
// is not the newest change nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { definePlugin } from 'themis-milter';
import { createTestKernel, type TestConnectionMessage } from 'themis-milter/testing';
import spf from 'themis-plugin-spf';
import dkim from 'themis-plugin-dkim';
import dmarc, { parseAuthResults, type DmarcNote } from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, mailauthSeal, mailauthSign, makeKey, sampleMessage, splitMessage, type TestKey } from '../../dkim/test/helpers/mail.ts';

/** The forwarder's address: outside example.com's SPF record. */
const FORWARDER_IP = '198.51.100.7';

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let author: TestKey;
let forwarder: TestKey;
let other: TestKey;
before(async () => {
  author = makeKey('example.com', 's1', 'ed25519');
  forwarder = makeKey('forwarder.example', 'arc', 'ed25519');
  other = makeKey('other.example', 'arc', 'ed25519');
  dns = await startDnsServer({
    'example.com': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
    '_dmarc.example.com': { TXT: ['v=DMARC1; p=reject'] },
    ...Object.fromEntries([author, forwarder, other].map((k) => [`${k.selector}._domainkey.${k.domain}`, { TXT: [k.record] }])),
  });
});
after(() => dns.close());

const common = () => ({ dnsServers: [dns.address], dnsTimeout: 300, deadline: 3_000, authservId: 'mx.themis.test' });

function noteSpy() {
  const notes: (DmarcNote | undefined)[] = [];
  const plugin = definePlugin({ name: 'dmarcspy', version: '1.0.0', kernel: '^1', priority: 0, setup: () => ({ endOfMessage: (ctx) => void notes.push(ctx.message!.notes.of<DmarcNote>('dmarc')) }) });
  return { plugin, last: () => notes.at(-1) };
}

async function kernel(policies: { name: string; dmarc: Record<string, unknown>; dkim?: Record<string, unknown> }[]) {
  const spy = noteSpy();
  const t = await createTestKernel({
    plugins: [{ plugin: dmarc, options: common() }, { plugin: spf, options: common() }, { plugin: dkim, options: common() }, spy.plugin],
    policies: policies.map((p) => ({ spf: {}, dkim: {}, ...p })) as never,
  });
  return { t, spy };
}

const msg = (raw: Buffer): TestConnectionMessage => {
  const { headers, body } = splitMessage(raw);
  // Forwarded as is: the original envelope sender, from the forwarder's address.
  return { client: { address: FORWARDER_IP }, helo: 'mx.forwarder.example', from: 'alice@example.com', rcpt: ['bob@example.net'], headers, body };
};

const GOOD_AAR = (sealer: string) => `${sealer}; dkim=pass header.d=example.com header.s=s1; spf=pass smtp.mailfrom=alice@example.com; dmarc=pass header.from=example.com`;

/** Signed by the author, footer added by the forwarder (breaking DKIM), sealed by `sealer` with `aar`. */
async function forwarded(sealer: TestKey, aar = GOOD_AAR(sealer.domain)): Promise<Buffer> {
  const signed = await mailauthSign(sampleMessage(), author);
  const footered = Buffer.concat([signed, Buffer.from('-- \r\nForwarded by forwarder.example\r\n')]);
  return mailauthSeal(footered, sealer, { authResults: aar });
}

describe('dmarc with ARC', () => {
  it('a trusted forwarder: accepted, the result stays fail, the override is recorded', async () => {
    const { t, spy } = await kernel([{ name: 'inbound', dmarc: { arc: { trustedSealers: ['Forwarder.Example.'] }, headers: { authenticationResults: true } }, dkim: { verify: { headers: { authenticationResults: true } } } }]);
    const r = await t.message(msg(await forwarded(forwarder)));
    assert.equal(r.decision.action, 'accept');
    const note = spy.last()!;
    assert.equal(note.result, 'fail');
    assert.equal(note.policy, 'reject');
    assert.equal(note.disposition, 'none');
    assert.equal(note.reason, 'arc');
    assert.deepEqual(note.override, { type: 'trusted_forwarder', comment: 'arc=pass i=1 as=forwarder.example aar=dmarc=pass header.from=example.com' });
    assert.equal(note.authResult, 'dmarc=fail (p=reject dis=none arc=pass as=forwarder.example) header.from=example.com');
    const [ar] = added(r, 'Authentication-Results');
    assert.match(ar, /arc=pass \(i=1 as=forwarder\.example\)/);
    assert.match(ar, /dmarc=fail \(p=reject dis=none arc=pass as=forwarder\.example\) header\.from=example\.com/);
    await t.close();
  });

  it('an untrusted forwarder (or none trusted): refused per p=reject', async () => {
    for (const trustedSealers of [['other.example'], []]) {
      const { t, spy } = await kernel([{ name: 'inbound', dmarc: { arc: { trustedSealers } } }]);
      const r = await t.message(msg(await forwarded(forwarder)));
      assert.equal(r.decision.action, 'reject', JSON.stringify(trustedSealers));
      assert.equal(spy.last()!.disposition, 'reject');
      assert.equal(spy.last()!.override, undefined);
      assert.equal(spy.last()!.authResult, 'dmarc=fail (p=reject dis=reject) header.from=example.com');
      await t.close();
    }
  });

  it('the trusted sealer\'s results decide: aligned DKIM or SPF pass suffice, a failure or another domain does not', async () => {
    const { t, spy } = await kernel([{ name: 'inbound', dmarc: { arc: { trustedSealers: ['forwarder.example'] } } }]);
    const cases: [string, string, string | undefined][] = [
      ['aligned DKIM only', 'forwarder.example; dkim=pass (good signature) header.d=mail.example.com', 'dkim=pass header.d=mail.example.com'],
      ['aligned SPF only', 'forwarder.example; spf=pass smtp.mailfrom="alice@example.com"', 'spf=pass smtp.mailfrom=example.com'],
      ['dmarc=fail', 'forwarder.example; dkim=fail header.d=example.com; spf=fail smtp.mailfrom=example.com; dmarc=fail header.from=example.com', undefined],
      ['pass for another domain', 'forwarder.example; dkim=pass header.d=example.org; dmarc=pass header.from=example.org', undefined],
      ['nothing', 'forwarder.example; none', undefined],
    ];
    for (const [what, aar, evidence] of cases) {
      const r = await t.message(msg(await forwarded(forwarder, aar)));
      if (evidence) {
        assert.equal(r.decision.action, 'accept', what);
        assert.equal(spy.last()!.override?.comment, `arc=pass i=1 as=forwarder.example aar=${evidence}`, what);
      } else {
        assert.equal(r.decision.action, 'reject', what);
        assert.equal(spy.last()!.override, undefined, what);
      }
    }
    await t.close();
  });

  it('a chain broken after sealing, or a trusted sealer that is not the newest: refused', async () => {
    const { t, spy } = await kernel([{ name: 'inbound', dmarc: { arc: { trustedSealers: ['forwarder.example'] } } }]);
    const tampered = Buffer.concat([await forwarded(forwarder), Buffer.from('added after sealing\r\n')]);
    assert.equal((await t.message(msg(tampered))).decision.action, 'reject');
    assert.equal(spy.last()!.override, undefined);
    // forwarder.example sealed first, other.example (untrusted) last.
    const twice = await mailauthSeal(await forwarded(forwarder), other, { authResults: GOOD_AAR('other.example'), cv: 'pass' });
    assert.equal((await t.message(msg(twice))).decision.action, 'reject');
    // And the other way round: the trusted forwarder is the newest sealer.
    const reversed = await mailauthSeal(await forwarded(other), forwarder, { authResults: `forwarder.example; arc=pass; dmarc=pass header.from=example.com`, cv: 'pass' });
    assert.equal((await t.message(msg(reversed))).decision.action, 'accept');
    assert.equal(spy.last()!.override?.comment, 'arc=pass i=2 as=forwarder.example aar=dmarc=pass header.from=example.com');
    await t.close();
  });

  it('each policy its own trust: a policy that does not trust the sealer still refuses', async () => {
    const { t, spy } = await kernel([
      { name: 'trusting', dmarc: { arc: { trustedSealers: ['forwarder.example'] } } },
      { name: 'strict', dmarc: { reply: { text: 'refused by policy (dis={disposition})' } } },
    ]);
    const r = await t.message(msg(await forwarded(forwarder)));
    assert.equal(r.decision.action, 'reject');
    assert.equal(r.decision.reply?.text, 'refused by policy (dis=reject)');
    assert.ok(spy.last()!.override);
    await t.close();
  });

  it('parseAuthResults reads resinfos, comments and quoted values', () => {
    const parsed = parseAuthResults('mx.example (v1); dkim=pass (2048-bit; ok) header.d=a.example header.s="s;1"; spf=pass smtp.mailfrom=x@b.example; dmarc/1=fail header.from=c.example; junk');
    assert.equal(parsed.authservId, 'mx.example');
    assert.deepEqual(parsed.results, [
      { method: 'dkim', result: 'pass', props: { 'header.d': 'a.example', 'header.s': 's;1' } },
      { method: 'spf', result: 'pass', props: { 'smtp.mailfrom': 'x@b.example' } },
      { method: 'dmarc', result: 'fail', props: { 'header.from': 'c.example' } },
    ]);
  });
});
