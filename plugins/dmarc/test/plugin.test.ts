// DMARC through the kernel (themis-milter/testing) with the spf and dkim plugins loaded and every
// record — SPF, DKIM keys, DMARC policies — published by a DNS server the test runs on loopback. The
// messages are signed by mailauth's own signer with keys published there; SPF passes or fails by the
// client address. Alignment relaxed and strict, p/sp with the organizational domain's record, pct
// with an injected draw, no record, malformed records, DNS failures, several From domains, the
// action matrix, the skip lists, the header and the note.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { definePlugin } from 'themis-milter';
import { createTestKernel, type TestConnectionMessage } from 'themis-milter/testing';
import spf from 'themis-plugin-spf';
import dkim from 'themis-plugin-dkim';
import headersPlugin from 'themis-plugin-headers';
import dmarc, { type DmarcNote } from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, mailauthSign, makeKey, sampleMessage, splitMessage, type TestKey } from '../../dkim/test/helpers/mail.ts';

const SPF = { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] };
/** Inside every published SPF record; 198.51.100.7 is outside all of them. */
const GOOD_IP = '192.0.2.25';
const BAD_IP = '198.51.100.7';

let dns: Awaited<ReturnType<typeof startDnsServer>>;
const keys: Record<string, TestKey> = {};
before(async () => {
  for (const d of ['example.com', 'mail.relaxed.example', 'relaxed.example', 'mail.strict.example', 'strict.example', 'thirdparty.example']) keys[d] = makeKey(d, 's1', 'ed25519');
  const zone: Parameters<typeof startDnsServer>[0] = {
    // example.com: p=reject, SPF and DKIM published.
    'example.com': SPF,
    '_dmarc.example.com': { TXT: ['v=DMARC1; p=reject; rua=mailto:dmarc@example.com'] },
    // Relaxed (the default) and strict alignment; the subdomains send with their own SPF and keys.
    '_dmarc.relaxed.example': { TXT: ['v=DMARC1; p=reject'] },
    'bounce.relaxed.example': SPF,
    '_dmarc.strict.example': { TXT: ['v=DMARC1; p=reject; aspf=s; adkim=s'] },
    'strict.example': SPF,
    'bounce.strict.example': SPF,
    // The organizational domain's record: p for the domain, sp for its subdomains.
    '_dmarc.org.example': { TXT: ['v=DMARC1; p=reject; sp=quarantine'] },
    '_dmarc.own.org.example': { TXT: ['v=DMARC1; p=none'] },
    '_dmarc.quarantine.example': { TXT: ['v=DMARC1; p=quarantine'] },
    '_dmarc.none.example': { TXT: ['v=DMARC1; p=none'] },
    '_dmarc.pct0.example': { TXT: ['v=DMARC1; p=reject; pct=0'] },
    '_dmarc.pct100.example': { TXT: ['v=DMARC1; p=reject; pct=100'] },
    '_dmarc.pct50.example': { TXT: ['v=DMARC1; p=reject; pct=50'] },
    'thirdparty.example': SPF,
    // Malformed and odd records (RFC 7489 §6.6.3).
    '_dmarc.garbage.example': { TXT: ['hello world', 'v=spf1 -all'] },
    '_dmarc.badp.example': { TXT: ['v=DMARC1; p=smite'] },
    '_dmarc.badp-rua.example': { TXT: ['v=DMARC1; p=smite; rua=mailto:r@badp-rua.example'] },
    '_dmarc.two.example': { TXT: ['v=DMARC1; p=reject', 'v=DMARC1; p=none'] },
    '_dmarc.absurd.example': { TXT: [`v=DMARC1;p=REJECT;pct=999;adkim=x;aspf=;;;=;fo=${'9'.repeat(300)};x-unknown=1; sp = quarantine`] },
    '_dmarc.huge.example': { TXT: [`v=DMARC1; p=reject; ${'z=1;'.repeat(400)}`] },
    '_dmarc.version.example': { TXT: ['v=DMARC2; p=reject', 'p=reject; v=DMARC1'] },
  };
  dns = await startDnsServer(
    {
      ...zone,
      ...Object.fromEntries(Object.values(keys).map((k) => [`s1._domainkey.${k.domain}`, { TXT: [k.record] }])),
    },
    { timeoutNames: ['_dmarc.slow.example'], servfailNames: ['_dmarc.servfail.example'] },
  );
});
after(() => dns.close());

const common = () => ({ dnsServers: [dns.address], dnsTimeout: 200, deadline: 2_000, authservId: 'mx.themis.test' });

/** A plugin after dmarc at end of message that keeps the dmarc note. */
function noteSpy() {
  const notes: (DmarcNote | undefined)[] = [];
  const plugin = definePlugin({
    name: 'dmarcspy',
    version: '1.0.0',
    kernel: '^1',
    priority: 0,
    setup: () => ({
      endOfMessage(ctx) {
        notes.push(ctx.message!.notes.of<DmarcNote>('dmarc'));
      },
    }),
  });
  return { plugin, last: () => notes.at(-1) };
}

type Policy = { name: string; priority?: number; match?: Record<string, unknown>; dmarc: Record<string, unknown> };
async function kernel(field: Record<string, unknown> = {}, extra: Record<string, unknown> = {}, policies?: Policy[]) {
  const spy = noteSpy();
  const t = await createTestKernel({
    plugins: [{ plugin: dmarc, options: { ...common(), ...extra } }, { plugin: spf, options: common() }, { plugin: dkim, options: common() }, spy.plugin],
    policies: (policies ?? [{ name: 'inbound', dmarc: field }]).map((p) => ({ spf: {}, dkim: {}, ...p })) as never,
  });
  return { t, note: () => spy.last()! };
}

/** A message From `from` (the header), sent as `mailFrom` from `ip`, signed by the keys of `signers`. */
async function msg(from: string, options: { mailFrom?: string; ip?: string; signers?: string[]; raw?: string; extra?: Partial<TestConnectionMessage> } = {}): Promise<TestConnectionMessage> {
  let raw: string | Buffer = options.raw ?? sampleMessage(from);
  for (const d of options.signers ?? []) raw = await mailauthSign(raw, keys[d]);
  const { headers, body } = splitMessage(raw);
  return { client: { address: options.ip ?? BAD_IP }, helo: 'mx.sender.example', from: options.mailFrom ?? from.replace(/^.*</, '').replace(/>.*$/, ''), rcpt: ['bob@example.net'], headers, body, ...options.extra };
}

const view = (n: DmarcNote) => ({ result: n.result, policy: n.policy, disposition: n.disposition, alignment: n.alignment });

describe('dmarc: alignment', () => {
  it('SPF pass of the From domain aligns; DKIM pass of d=From aligns; either is a pass', async () => {
    const { t, note } = await kernel({ headers: { authenticationResults: true } });
    const bySpf = await t.message(await msg('alice@example.com', { ip: GOOD_IP }));
    assert.equal(bySpf.decision.action, 'accept');
    assert.deepEqual(view(note()), { result: 'pass', policy: 'reject', disposition: 'none', alignment: { spf: true, dkim: false } });
    assert.equal(note().spfDomain, 'example.com');
    assert.equal(note().authResult, 'dmarc=pass (p=reject dis=none) header.from=example.com');
    // One header: spf's and dkim's results (when their policies ask) and dmarc's, in that order.
    assert.deepEqual(added(bySpf, 'Authentication-Results').filter((v) => v.includes('dmarc=')), ['mx.themis.test; dmarc=pass (p=reject dis=none) header.from=example.com']);

    const byDkim = await t.message(await msg('alice@example.com', { signers: ['example.com'] }));
    assert.equal(byDkim.decision.action, 'accept');
    assert.deepEqual(view(note()), { result: 'pass', policy: 'reject', disposition: 'none', alignment: { spf: false, dkim: true } });
    assert.deepEqual(note().dkimDomains, ['example.com']);
    assert.equal(note().record?.domain, 'example.com');
    await t.close();
  });

  it('relaxed (the default): subdomains of the organizational domain align, for SPF and for DKIM', async () => {
    const { t, note } = await kernel();
    const spfSub = await t.message(await msg('a@relaxed.example', { mailFrom: 'b@bounce.relaxed.example', ip: GOOD_IP }));
    assert.equal(spfSub.decision.action, 'accept');
    assert.deepEqual(view(note()), { result: 'pass', policy: 'reject', disposition: 'none', alignment: { spf: true, dkim: false } });
    assert.equal(note().spfDomain, 'bounce.relaxed.example');
    const dkimSub = await t.message(await msg('a@relaxed.example', { signers: ['mail.relaxed.example'] }));
    assert.equal(dkimSub.decision.action, 'accept');
    assert.deepEqual(note().dkimDomains, ['mail.relaxed.example']);
    // The other way round as well: From a subdomain, d= the organizational domain.
    await t.message(await msg('a@news.relaxed.example', { signers: ['relaxed.example'] }));
    assert.equal(note().result, 'pass');
    await t.close();
  });

  it('strict (aspf=s, adkim=s): a subdomain does not align, the exact domain does', async () => {
    const { t, note } = await kernel();
    const spfSub = await t.message(await msg('a@strict.example', { mailFrom: 'b@bounce.strict.example', ip: GOOD_IP }));
    assert.equal(spfSub.decision.action, 'reject');
    assert.deepEqual(view(note()), { result: 'fail', policy: 'reject', disposition: 'reject', alignment: { spf: false, dkim: false } });
    assert.equal(note().spfDomain, 'bounce.strict.example', 'SPF passed, unaligned');
    const dkimSub = await t.message(await msg('a@strict.example', { signers: ['mail.strict.example'] }));
    assert.equal(dkimSub.decision.action, 'reject');
    assert.deepEqual(note().dkimDomains, []);
    assert.equal((await t.message(await msg('a@strict.example', { ip: GOOD_IP }))).decision.action, 'accept');
    assert.equal((await t.message(await msg('a@strict.example', { signers: ['strict.example'] }))).decision.action, 'accept');
    await t.close();
  });

  it('a third-party signature and a third-party SPF pass do not align; SPF fail never counts', async () => {
    const { t, note } = await kernel();
    const r = await t.message(await msg('ceo@example.com', { mailFrom: 'x@thirdparty.example', ip: GOOD_IP, signers: ['thirdparty.example'] }));
    assert.equal(r.decision.action, 'reject');
    assert.deepEqual(view(note()), { result: 'fail', policy: 'reject', disposition: 'reject', alignment: { spf: false, dkim: false } });
    // SPF of the From domain itself, from an address outside its record: fail, not aligned.
    const spoof = await t.message(await msg('ceo@example.com'));
    assert.equal(spoof.decision.action, 'reject');
    assert.equal(note().spfDomain, undefined);
    await t.close();
  });
});

describe('dmarc: policies', () => {
  it('a spoofed From of a p=reject domain is refused with 550 5.7.1', async () => {
    const { t } = await kernel();
    const r = await t.message(await msg('Bank <security@example.com>'));
    assert.equal(r.decision.action, 'reject');
    assert.deepEqual(r.decision.reply, { code: 550, enhanced: '5.7.1', text: 'Email rejected per DMARC policy for example.com' });
    assert.match(r.trace!.entries.find((e) => e.plugin === 'dmarc')!.reason!, /^inbound: DMARC fail for example\.com \(p=reject dis=reject\)$/);
    await t.close();
  });

  it('p=quarantine is held; p=none is left alone, and tagged only when configured', async () => {
    const { t, note } = await kernel();
    const held = await t.message(await msg('a@quarantine.example'));
    assert.equal(held.trace!.outcome, 'quarantined');
    const none = await t.message(await msg('a@none.example'));
    assert.equal(none.decision.action, 'accept');
    assert.deepEqual(view(note()), { result: 'fail', policy: 'none', disposition: 'none', alignment: { spf: false, dkim: false } });
    assert.deepEqual(added(none, 'X-Themis-DMARC'), []);
    await t.close();
    const k2 = await kernel({ actions: { none: 'tag' }, tag: { value: '{result} p={policy} from={domain}' } });
    const tagged = await k2.t.message(await msg('a@none.example'));
    assert.equal(tagged.decision.action, 'accept');
    assert.deepEqual(added(tagged, 'X-Themis-DMARC'), ['fail p=none from=none.example']);
    await k2.t.close();
  });

  it('the organizational domain\'s record: p for itself, sp for subdomains; a subdomain\'s own record wins', async () => {
    const { t, note } = await kernel();
    assert.equal((await t.message(await msg('a@org.example'))).decision.action, 'reject');
    assert.equal(note().record?.domain, 'org.example');
    const sub = await t.message(await msg('a@deep.news.org.example'));
    assert.equal(sub.trace!.outcome, 'quarantined');
    assert.deepEqual(view(note()), { result: 'fail', policy: 'quarantine', disposition: 'quarantine', alignment: { spf: false, dkim: false } });
    assert.equal(note().record?.domain, 'org.example');
    assert.equal((await t.message(await msg('a@own.org.example'))).decision.action, 'accept');
    assert.equal(note().policy, 'none');
    assert.equal(note().record?.domain, 'own.org.example');
    await t.close();
  });

  it('pct: 0 lowers every failure one step, 100 none, 50 by the draw', async () => {
    let draw = 0;
    const { t, note } = await kernel({}, { random: () => draw });
    const zero = await t.message(await msg('a@pct0.example'));
    assert.equal(zero.trace!.outcome, 'quarantined');
    assert.deepEqual([note().policy, note().disposition, note().pct, note().reason], ['reject', 'quarantine', 0, 'not sampled (pct=0)']);
    assert.equal(note().authResult, 'dmarc=fail (p=reject dis=quarantine pct=0) header.from=pct0.example');
    draw = 0.999;
    assert.equal((await t.message(await msg('a@pct100.example'))).decision.action, 'reject');
    for (const [d, expected] of [[0.2, 'reject'], [0.49, 'reject'], [0.5, 'quarantine'], [0.9, 'quarantine']] as const) {
      draw = d;
      await t.message(await msg('a@pct50.example'));
      assert.equal(note().disposition, expected, `draw ${d}`);
    }
    await t.close();
  });

  it('the action matrix: overrides per disposition, the most severe of several policies, a configured reply, the metrics', async () => {
    const { t } = await kernel({ actions: { reject: 'hold', quarantine: 'reject' }, reply: { text: 'Not from {domain} (p={policy})' } });
    assert.equal((await t.message(await msg('a@example.com'))).trace!.outcome, 'quarantined');
    const q = await t.message(await msg('a@quarantine.example'));
    assert.deepEqual(q.decision.reply, { code: 550, enhanced: '5.7.1', text: 'Not from quarantine.example (p=quarantine)' });
    await t.close();
    const k2 = await kernel({}, {}, [
      { name: 'a-tag', priority: 1, dmarc: { actions: { reject: 'tag' } } },
      { name: 'b-tempfail', priority: 2, match: { destination: '@dest.example' }, dmarc: { actions: { reject: 'tempfail' } } },
    ]);
    const tagged = await k2.t.message(await msg('a@example.com'));
    assert.equal(tagged.decision.action, 'accept');
    assert.deepEqual(added(tagged, 'X-Themis-DMARC'), ['fail']);
    const temp = await k2.t.message(await msg('a@example.com', { extra: { rcpt: ['x@dest.example'] } }));
    assert.equal(temp.decision.action, 'tempfail');
    assert.deepEqual(temp.decision.reply, { code: 451, enhanced: '4.7.1', text: 'DMARC fail for example.com, try again later' });
    await k2.t.message(await msg('a@example.com', { ip: GOOD_IP }));
    const results = await k2.t.kernel.registry.getSingleMetricAsString('themis_plugin_dmarc_results_total');
    assert.match(results, /^themis_plugin_dmarc_results_total\{result="fail"\} 2$/m);
    assert.match(results, /^themis_plugin_dmarc_results_total\{result="pass"\} 1$/m);
    const acted = await k2.t.kernel.registry.getSingleMetricAsString('themis_plugin_dmarc_actions_total');
    assert.match(acted, /^themis_plugin_dmarc_actions_total\{policy="a-tag",action="tag"\} 1$/m);
    assert.match(acted, /^themis_plugin_dmarc_actions_total\{policy="b-tempfail",action="tempfail"\} 1$/m);
    await k2.t.close();
  });

  it('the headers plugin reads the note: {dmarc.result}, { note: \'dmarc.result\' }', async () => {
    const t = await createTestKernel({
      plugins: [headersPlugin, { plugin: dmarc, options: common() }, { plugin: spf, options: common() }, { plugin: dkim, options: common() }],
      policies: [{ name: 'in', spf: {}, dkim: {}, dmarc: { actions: { reject: 'ignore' } }, headers: [{ name: 'dmarc', if: { note: 'dmarc.result', equals: 'fail' }, then: [{ add: 'X-DMARC-Seen', value: 'DMARC {dmarc.result} p={dmarc.policy} ({dmarc.domain})' }] }] }],
    });
    assert.deepEqual(added(await t.message(await msg('a@example.com')), 'X-DMARC-Seen'), ['DMARC fail p=reject (example.com)']);
    assert.deepEqual(added(await t.message(await msg('a@example.com', { ip: GOOD_IP })), 'X-DMARC-Seen'), []);
    await t.close();
  });

  it('skip lists: authenticated clients (default), forwarder networks, From domains — not evaluated, no note', async () => {
    const { t, note } = await kernel({ skip: { clients: ['203.0.113.0/24'], fromDomains: ['example.com'] } });
    for (const m of [
      await msg('a@quarantine.example', { extra: { auth: 'alice' } }),
      await msg('a@quarantine.example', { ip: '203.0.113.9' }),
      await msg('a@example.com'),
      await msg('a@sub.example.com'),
    ]) {
      const r = await t.message(m);
      assert.equal(r.decision.action, 'accept');
      assert.equal(note(), undefined);
    }
    // A listed domain in the display name is not the From domain.
    const disguised = await t.message(await msg('"a@example.com" <a@quarantine.example>'));
    assert.equal(disguised.trace!.outcome, 'quarantined');
    // Nor is one listed domain among several (a permerror).
    await t.message(await msg('a@example.com, b@quarantine.example', { mailFrom: 'a@example.com' }));
    assert.equal(note()?.result, 'permerror');
    assert.equal((await t.message(await msg('a@quarantine.example'))).trace!.outcome, 'quarantined', 'the others are checked');
    await t.close();
  });
});

describe('dmarc: none, errors and bad input', () => {
  it('no record is none; records that do not parse are ignored (none), a bad p with rua is p=none', async () => {
    const { t, note } = await kernel({ actions: { none: 'reject', permerror: 'reject' } });
    for (const d of ['nodmarc.example', 'garbage.example', 'badp.example', 'two.example', 'version.example']) {
      const r = await t.message(await msg(`a@${d}`));
      assert.equal(note().result, 'none', d);
      assert.equal(r.decision.action, 'accept', d);
      assert.equal(note().record, undefined);
    }
    assert.match(note().authResult, /^dmarc=none \(.+\) header\.from=version\.example$/);
    const rua = await t.message(await msg('a@badp-rua.example'));
    assert.deepEqual(view(note()), { result: 'fail', policy: 'none', disposition: 'none', alignment: { spf: false, dkim: false } });
    assert.equal(rua.decision.action, 'reject', 'actions.none applies to it');
    await t.close();
  });

  it('absurd tags get their defaults; a huge record parses', async () => {
    const { t, note } = await kernel();
    const r = await t.message(await msg('a@absurd.example'));
    assert.equal(r.decision.action, 'reject');
    assert.deepEqual({ ...note().record, raw: '' }, { raw: '', domain: 'absurd.example', p: 'reject', sp: 'quarantine', adkim: 'r', aspf: 'r', pct: 100 });
    assert.equal((await t.message(await msg('a@huge.example'))).decision.action, 'reject');
    await t.close();
  });

  it('a DNS timeout or SERVFAIL is temperror — never fail — and tempfails only when configured', async () => {
    const { t, note } = await kernel();
    for (const d of ['slow.example', 'servfail.example']) {
      const r = await t.message(await msg(`a@${d}`));
      assert.equal(note().result, 'temperror', d);
      assert.match(note().reason!, /^DNS: _dmarc\./);
      assert.equal(r.decision.action, 'accept');
    }
    await t.close();
    const k2 = await kernel({ actions: { temperror: 'tempfail' } });
    const r = await k2.t.message(await msg('a@slow.example'));
    assert.equal(r.decision.action, 'tempfail');
    assert.deepEqual(r.decision.reply, { code: 451, enhanced: '4.7.1', text: 'DMARC temperror for slow.example, try again later' });
    await k2.t.close();
    // Past the deadline: temperror however long the DNS would take.
    const k3 = await kernel({}, { dnsTimeout: 1_500, deadline: 150 });
    const started = Date.now();
    await k3.t.message(await msg('a@slow.example'));
    assert.ok(Date.now() - started < 3_000);
    assert.deepEqual([k3.note().result, k3.note().reason], ['temperror', 'deadline exceeded']);
    await k3.t.close();
  });

  it('several From domains or From headers are permerror; no From is none', async () => {
    const { t, note } = await kernel({ actions: { permerror: 'reject' } });
    const two = await t.message(await msg('a@example.com, b@quarantine.example', { mailFrom: 'a@example.com', ip: GOOD_IP }));
    assert.equal(note().result, 'permerror');
    assert.equal(two.decision.action, 'reject');
    assert.deepEqual(two.decision.reply, { code: 550, enhanced: '5.7.1', text: 'Email rejected per DMARC policy for example.com' });
    const raw = `From: a@example.com\r\n${sampleMessage('b@example.com')}`;
    await t.message(await msg('a@example.com', { raw, ip: GOOD_IP }));
    assert.deepEqual([note().result, note().reason], ['permerror', '2 From headers']);
    // Several mailboxes of one domain are fine.
    await t.message(await msg('a@example.com, "B, Jr." <b@example.com>', { mailFrom: 'a@example.com', ip: GOOD_IP }));
    assert.equal(note().result, 'pass');
    const noFrom = sampleMessage().replace(/^From: .*\r\n/, '');
    const r = await t.message(await msg('a@example.com', { raw: noFrom }));
    assert.deepEqual([note().result, note().domain, r.decision.action], ['none', '', 'accept']);
    for (const bad of ['undisclosed-recipients:;', 'no address at all', '<>', '"@"@', `a@${'x'.repeat(300)}.example`, 'a@[192.0.2.1]', 'a@exa mple.com']) {
      await t.message(await msg(bad, { mailFrom: 'a@example.com' }));
      assert.ok(['none', 'permerror'].includes(note().result), `${bad}: ${note().result}`);
    }
    await t.close();
  });

  it('a policy without spf (or dkim) checking its mail: not evaluated (none), never a fail; logged once with a code', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = { child: () => logger, info: () => undefined, debug: () => undefined, error: () => undefined, trace: () => undefined, fatal: () => undefined, warn: (o: Record<string, unknown>, m: string) => void lines.push({ ...o, msg: m }), isLevelEnabled: () => false };
    const spy = noteSpy();
    const t = await createTestKernel({
      plugins: [{ plugin: dmarc, options: common() }, { plugin: spf, options: common() }, { plugin: dkim, options: common() }, spy.plugin],
      policies: [{ name: 'nospf', dkim: {}, dmarc: {} }],
      logger: logger as never,
    });
    for (let i = 0; i < 3; i++) {
      const r = await t.message(await msg('a@example.com', { ip: GOOD_IP }));
      assert.equal(r.decision.action, 'accept');
      assert.deepEqual([spy.last()!.result, spy.last()!.reason], ['none', 'spf not checked']);
    }
    const warned = lines.filter((l) => l.code === 'THEMIS_DMARC_DEPENDENCY');
    assert.equal(warned.length, 1);
    assert.match(String(warned[0].msg), /^DMARC needs the results of the spf plugin: policy nospf enables dmarc/);
    await t.close();
  });

  it('loads only with spf and dkim: a coded error names the missing plugin', async () => {
    await assert.rejects(createTestKernel({ plugins: [{ plugin: dmarc, options: common() }, { plugin: spf, options: common() }], policies: [{ name: 'x', dmarc: {} }] }), (err: Error & { code?: string }) => err.code === 'THEMIS_ERR_PLUGIN_DEPENDENCY' && /dkim/.test(err.message));
    await assert.rejects(createTestKernel({ plugins: [{ plugin: dmarc, options: common() }, { plugin: spf, options: common() }, { plugin: dkim, options: common() }], policies: [{ name: 'x', dmarc: { actions: { reject: 'smite' as never } } }] }), /policies\[0\]\.dmarc\.actions\.reject \(x\)/);
  });
});
