// DKIM signing through the kernel: the message as Postfix writes it after the milter's
// modifications verifies with mailauth's own verifier (and with the plugin's); RSA and Ed25519,
// dual signing, which key signs (From: domain, parent domain, signingDomain), over-signing, no
// second signature of the same d= and s=, canonicalisations, and keys refused at setup with a
// coded error naming the file.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { dkimVerify } from 'mailauth';
import { definePlugin, isPluginError } from 'themis-milter';
import { createTestKernel, type TestConnectionMessage } from 'themis-milter/testing';
import dkim, { DEFAULT_OVERSIGNED_HEADERS } from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, assemble, makeKey, noteSpy, sampleMessage, splitMessage, tempDir, type TestKey } from './helpers/mail.ts';

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let rsa: TestKey;
let ed: TestKey;
let org: TestKey;
const records: Record<string, string> = {};
before(async () => {
  rsa = makeKey('example.com', 'r2026');
  ed = makeKey('example.com', 'e2026', 'ed25519');
  org = makeKey('example.org', 'o1');
  for (const k of [rsa, ed, org]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
  dns = await startDnsServer(Object.fromEntries(Object.entries(records).map(([n, r]) => [n, { TXT: [r] }])));
});
after(() => dns.close());

const resolver = async (name: string) => {
  const r = records[name.toLowerCase()];
  if (!r) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
  return [[r]];
};

/** Verifies a message with mailauth directly (strict): each signature's [result, d, s, a]. */
async function verify(raw: Buffer): Promise<string[][]> {
  const r = await dkimVerify(raw, { resolver: resolver as never, strict: true } as never);
  return r.results.map((x) => [x.status.result, x.signingDomain ?? '', x.selector ?? '', String(x.algo ?? '')]);
}

const keyOptions = (...keys: TestKey[]) => keys.map(({ domain, selector, keyFile }) => ({ domain, selector, keyFile }));

async function kernel(keys: TestKey[], sign: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const spy = noteSpy();
  const t = await createTestKernel({ plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], dnsTimeout: 300, keys: keyOptions(...keys), ...extra } }, spy.plugin], policies: [{ name: 'outbound', dkim: { sign, verify: { enabled: false } } }] as never });
  return { t, spy };
}

const outgoing = (raw: string | Buffer, extra: Partial<TestConnectionMessage> = {}): TestConnectionMessage => {
  const { headers, body } = splitMessage(raw);
  return { client: { address: '203.0.113.9' }, auth: 'alice', from: 'alice@example.com', rcpt: ['bob@example.net'], headers, body, ...extra };
};

/** Sends a message through the kernel and returns it as delivered. */
async function through(t: Awaited<ReturnType<typeof kernel>>['t'], raw: string | Buffer, extra: Partial<TestConnectionMessage> = {}) {
  const m = outgoing(raw, extra);
  const r = await t.message(m);
  return { r, delivered: assemble(m.headers as [string, string][], r.modifications, m.body as Buffer) };
}

describe('dkim signing', () => {
  it('RSA: the delivered message verifies; the signature is on top, folded, with t= and bh=', async () => {
    const { t, spy } = await kernel([rsa]);
    const { r, delivered } = await through(t, sampleMessage());
    assert.equal(r.decision.action, 'accept');
    const [sig] = added(r, 'DKIM-Signature');
    assert.match(sig, /^v=1; a=rsa-sha256; c=relaxed\/relaxed; d=example\.com;\n h=/);
    assert.ok(sig.split('\n').every((l) => l.length <= 78), 'folded');
    assert.match(sig, /s=r2026;/);
    assert.ok(delivered.toString().startsWith('DKIM-Signature: v=1;'));
    assert.deepEqual(await verify(delivered), [['pass', 'example.com', 'r2026', 'rsa-sha256']]);
    assert.deepEqual(spy.last()!.signed, [{ domain: 'example.com', selector: 'r2026', algorithm: 'rsa-sha256' }]);
    await t.close();
  });

  it('dual signing: an RSA and an Ed25519 key of one domain both sign', async () => {
    const { t } = await kernel([rsa, ed, org]);
    const { r, delivered } = await through(t, sampleMessage());
    assert.equal(added(r, 'DKIM-Signature').length, 2);
    assert.deepEqual((await verify(delivered)).sort(), [['pass', 'example.com', 'e2026', 'ed25519-sha256'], ['pass', 'example.com', 'r2026', 'rsa-sha256']]);
    await t.close();
  });

  it('which key signs: the From: domain, its nearest parent, signingDomain; none without a key', async () => {
    const { t } = await kernel([rsa, org]);
    const sub = await through(t, sampleMessage('News <news@mail.example.org>'));
    assert.deepEqual(await verify(sub.delivered), [['pass', 'example.org', 'o1', 'rsa-sha256']]);
    const none = await through(t, sampleMessage('x@unrelated.example'));
    assert.deepEqual(added(none.r, 'DKIM-Signature'), []);
    assert.equal(none.r.decision.action, 'accept');
    await t.close();
    const forced = await kernel([rsa, org], { signingDomain: 'example.org' });
    const f = await through(forced.t, sampleMessage());
    assert.deepEqual(await verify(f.delivered), [['pass', 'example.org', 'o1', 'rsa-sha256']]);
    await forced.t.close();
  });

  it('never a second signature of the same d= and s=', async () => {
    const { t } = await kernel([rsa, ed]);
    const once = await through(t, sampleMessage());
    // The signed message comes back (a loop, a resubmission): nothing of example.com is added again.
    const again = await through(t, once.delivered);
    assert.deepEqual(added(again.r, 'DKIM-Signature'), []);
    assert.deepEqual((await verify(again.delivered)).map((x) => x[0]), ['pass', 'pass']);
    // Only one of the two present: the other one signs.
    const { headers, body } = splitMessage(once.delivered);
    const oneGone = Buffer.concat([Buffer.from(headers.filter(([n, v]) => !(n === 'DKIM-Signature' && v.includes('s=e2026'))).map(([n, v]) => `${n}:${v}\r\n`).join('') + '\r\n'), body]);
    const third = await through(t, oneGone);
    assert.equal(added(third.r, 'DKIM-Signature').length, 1);
    assert.match(added(third.r, 'DKIM-Signature')[0], /s=e2026/);
    await t.close();
  });

  it('over-signing: h= names an over-signed header once more than it occurs, so an added one breaks the signature', async () => {
    const { t } = await kernel([rsa], { oversign: ['From', 'Subject', 'Reply-To'], headers: ['From', 'To', 'Subject', 'Date'] });
    const { r, delivered } = await through(t, sampleMessage());
    const h = /h=([^;]+);/.exec(added(r, 'DKIM-Signature')[0].replace(/\s+/g, ''))![1];
    assert.deepEqual(h.split(':'), ['From', 'From', 'To', 'Subject', 'Subject', 'Date', 'Reply-To']);
    assert.deepEqual((await verify(delivered)).map((x) => x[0]), ['pass']);
    const text = delivered.toString();
    for (const [what, changed] of [
      ['a second Subject', text.replace('\r\n\r\n', '\r\nSubject: Urgent: pay now\r\n\r\n')],
      ['a Reply-To', text.replace('\r\n\r\n', '\r\nReply-To: thief@example.net\r\n\r\n')],
    ]) assert.deepEqual((await verify(Buffer.from(changed))).map((x) => x[0]), ['fail'], what);
    // A header that is neither signed nor over-signed may be added.
    assert.deepEqual((await verify(Buffer.from(text.replace('\r\n\r\n', '\r\nX-Mailer: list\r\n\r\n')))).map((x) => x[0]), ['pass']);
    await t.close();
    assert.ok(DEFAULT_OVERSIGNED_HEADERS.includes('From'));
  });

  it('every canonicalisation verifies, for bodies with trailing blank lines, LF line ends, no body at all', async () => {
    for (const canonicalization of ['relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple']) {
      const { t } = await kernel([rsa, ed], { canonicalization });
      for (const body of ['Trailing  spaces \t\r\nand blank lines\r\n\r\n\r\n\r\n', '', 'no final line break', 'LF\nonly\nlines\n']) {
        const raw = sampleMessage(undefined, body);
        const { r, delivered } = await through(t, raw);
        assert.match(added(r, 'DKIM-Signature')[0], new RegExp(`c=${canonicalization.replace('/', '\\/')};`));
        assert.deepEqual((await verify(delivered)).map((x) => x[0]), ['pass', 'pass'], `${canonicalization} ${JSON.stringify(body)}`);
      }
      await t.close();
    }
  });

  it('the plugin verifies what it signed (sign and verify in one policy)', async () => {
    const spy = noteSpy();
    const t = await createTestKernel({ plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], keys: keyOptions(rsa, ed) } }, spy.plugin], policies: [{ name: 'both', dkim: { sign: {}, verify: { skip: { authenticated: false, clients: [], senders: [] } } } }] });
    const { delivered } = await through(t, sampleMessage());
    await through(t, delivered);
    assert.equal(spy.last()!.result, 'pass');
    assert.deepEqual(spy.last()!.results.map((x) => x.selector).sort(), ['e2026', 'r2026']);
    await t.close();
  });

  it('signing covers the headers as delivered: what plugins before and after it change and add is signed (finalize)', async () => {
    const early = definePlugin({
      name: 'early', version: '1.0.0', kernel: '^1', priority: 100, modifies: ['headers'],
      setup: () => ({
        endOfMessage(ctx) {
          ctx.message!.changeHeader('Subject', 1, '[ext] The quarterly report');
          ctx.message!.addHeader('Reply-To', 'other@example.net');
        },
      }),
    });
    // Runs after dkim's endOfMessage: before finalize existed, its change broke the signature.
    const late = definePlugin({
      name: 'late', version: '1.0.0', kernel: '^1', priority: 0, modifies: ['headers'],
      setup: () => ({ endOfMessage: (ctx) => void ctx.message!.addHeader('Cc', 'carol@example.net') }),
    });
    const t = await createTestKernel({ plugins: [early, { plugin: dkim, options: { keys: keyOptions(rsa) } }, late], policies: [{ name: 'p', dkim: { sign: {}, verify: { enabled: false } } }] });
    const m = outgoing(sampleMessage());
    const r = await t.message(m);
    assert.deepEqual(r.modifications.map((x) => x.type), ['changeHeader', 'addHeader', 'addHeader', 'insertHeader'], 'the signature comes last, on top');
    const [sig] = added(r, 'DKIM-Signature');
    const h = /h=([^;]+)/.exec(sig.replace(/\s+/g, ''))![1].split(':').map((x) => x.toLowerCase());
    assert.ok(h.includes('reply-to') && h.includes('cc'), `both added headers are signed: h=${h.join(':')}`);
    const delivered = assemble(m.headers as [string, string][], r.modifications, m.body as Buffer);
    assert.match(delivered.toString(), /^Subject: \[ext\] The quarterly report\r$/m);
    assert.deepEqual(await verify(delivered), [['pass', 'example.com', 'r2026', 'rsa-sha256']]);
    await t.close();
  });

  it('a message without From is not signed', async () => {
    const { t, spy } = await kernel([rsa]);
    const { r } = await through(t, 'To: bob@example.net\r\nSubject: no author\r\n\r\nbody\r\n');
    assert.deepEqual(added(r, 'DKIM-Signature'), []);
    assert.equal(spy.last()!.signed, undefined);
    await t.close();
  });

  it('keys are checked at setup: a coded error names the file', async () => {
    const dir = tempDir();
    const notPem = join(dir, 'not-a-key.pem');
    writeFileSync(notPem, 'hello\n');
    const short = join(dir, 'short.pem');
    writeFileSync(short, generateKeyPairSync('rsa', { modulusLength: 512 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const ec = join(dir, 'ec.pem');
    writeFileSync(ec, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const cases: [Record<string, unknown>[], string, RegExp][] = [
      [[{ domain: 'example.com', selector: 's', keyFile: join(dir, 'missing.pem') }], 'THEMIS_DKIM_KEY', /missing\.pem \(s\._domainkey\.example\.com\): cannot read it: ENOENT/],
      [[{ domain: 'example.com', selector: 's', keyFile: notPem }], 'THEMIS_DKIM_KEY', /not-a-key\.pem .*not a PEM private key/],
      [[{ domain: 'example.com', selector: 's', keyFile: short }], 'THEMIS_DKIM_KEY', /short\.pem .*RSA key of 512 bits/],
      [[{ domain: 'example.com', selector: 's', keyFile: ec }], 'THEMIS_DKIM_KEY', /ec\.pem .*a ec key/],
      [[{ domain: 'example.com', selector: 's', keyFile: ed.keyFile, algorithm: 'rsa-sha256' }], 'THEMIS_DKIM_KEY', /algorithm rsa-sha256 configured, but the file holds an Ed25519 key/],
      [[{ domain: 'exa mple.com', selector: 's', keyFile: rsa.keyFile }], 'THEMIS_DKIM_KEY', /is not a domain name/],
      [[{ domain: 'example.com', selector: 's', keyFile: rsa.keyFile }, { domain: 'EXAMPLE.com', selector: 's', keyFile: ed.keyFile }], 'THEMIS_DKIM_KEY_DUPLICATE', /both configured for s\._domainkey\.example\.com/],
    ];
    for (const [keys, code, message] of cases) {
      const err = await createTestKernel({ plugins: [{ plugin: dkim, options: { keys } }], policies: [{ name: 'p', dkim: { sign: {} } }] }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const found = [err, (err as { cause?: unknown })?.cause].find((e) => isPluginError(e, code)) as Error | undefined;
      assert.ok(found, `${code} for ${JSON.stringify(keys)}: got ${String(err)}`);
      assert.match(found.message, message);
    }
  });

  it("OpenDKIM's KeyTable and SigningTable: the first pattern matching the author signs, with every key it names", async () => {
    const dir = tempDir();
    const keyTable = join(dir, 'KeyTable');
    const signingTable = join(dir, 'SigningTable');
    writeFileSync(keyTable, `# name  domain:selector:file\nrsa-com   example.com:r2026:${rsa.keyFile}\ned-com    example.com:e2026:${ed.keyFile}\n\norg-key   example.org:o1:${org.keyFile}   # the org's\n`);
    writeFileSync(signingTable, '# first match wins\nceo@example.com  rsa-com\n*@example.com    rsa-com ed-com\nexample.org      org-key\n*@*.example.org  org-key\n');
    const spy = noteSpy();
    const t = await createTestKernel({ plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], keyTable, signingTable } }, spy.plugin], policies: [{ name: 'outbound', dkim: { sign: {}, verify: { enabled: false } } }] as never });
    const cases: [string, string[][]][] = [
      ['The CEO <CEO@Example.COM>', [['pass', 'example.com', 'r2026', 'rsa-sha256']]],
      ['Alice <alice@example.com>', [['pass', 'example.com', 'e2026', 'ed25519-sha256'], ['pass', 'example.com', 'r2026', 'rsa-sha256']]],
      ['bob@example.org', [['pass', 'example.org', 'o1', 'rsa-sha256']]],
      ['"Dept" <dept@sales.example.org>', [['pass', 'example.org', 'o1', 'rsa-sha256']]],
    ];
    for (const [from, expected] of cases) {
      const { delivered } = await through(t, sampleMessage(from));
      assert.deepEqual((await verify(delivered)).sort(), expected.sort(), from);
    }
    // No row for the author: not signed (no key in `keys` either).
    const { r } = await through(t, sampleMessage('eve@elsewhere.example'));
    assert.deepEqual(added(r, 'DKIM-Signature'), []);
    await t.close();
  });

  it('bad tables are refused at setup with the file and line', async () => {
    const dir = tempDir();
    const file = (name: string, text: string) => {
      const p = join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    const goodKeys = file('KeyTable.good', `k1 example.com:r2026:${rsa.keyFile}\n`);
    const goodSigning = file('SigningTable.good', '*@example.com k1\n');
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ keyTable: goodKeys }, /keyTable needs signingTable as well/],
      [{ signingTable: goodSigning }, /signingTable needs keyTable as well/],
      [{ keyTable: join(dir, 'missing'), signingTable: goodSigning }, /missing, line 0: cannot read it: ENOENT/],
      [{ keyTable: file('KeyTable.fields', 'k1 example.com:r2026:/x extra\n'), signingTable: goodSigning }, /KeyTable\.fields, line 1: expected "NAME DOMAIN:SELECTOR:KEYFILE", found 3 field/],
      [{ keyTable: file('KeyTable.value', '\n# c\nk1 example.com-r2026\n'), signingTable: goodSigning }, /KeyTable\.value, line 3: expected DOMAIN:SELECTOR:KEYFILE after "k1"/],
      [{ keyTable: file('KeyTable.twice', `k1 example.com:r2026:${rsa.keyFile}\nk1 example.com:e2026:${ed.keyFile}\n`), signingTable: goodSigning }, /line 2: key name "k1" is defined twice \(first on line 1\)/],
      [{ keyTable: goodKeys, signingTable: file('SigningTable.unknown', '*@example.com k1 k2\n') }, /SigningTable\.unknown, line 1: key name "k2" is not in the KeyTable/],
      [{ keyTable: goodKeys, signingTable: file('SigningTable.short', '*@example.com\n') }, /line 1: expected "PATTERN NAME \[NAME…\]"/],
      [{ keyTable: file('KeyTable.badkey', `k1 example.com:r2026:${join(dir, 'nokey.pem')}\n`), signingTable: goodSigning }, /nokey\.pem \(r2026\._domainkey\.example\.com\): cannot read it: ENOENT \(.*KeyTable\.badkey, line 1\)/],
    ];
    for (const [options, message] of cases) {
      const err = await createTestKernel({ plugins: [{ plugin: dkim, options }], policies: [{ name: 'p', dkim: { sign: {} } }] }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const found = [err, (err as { cause?: unknown })?.cause].find((e) => isPluginError(e, 'THEMIS_DKIM_TABLE') || isPluginError(e, 'THEMIS_DKIM_KEY')) as Error | undefined;
      assert.ok(found, `${JSON.stringify(options)}: got ${String(err)}`);
      assert.match(found.message, message);
    }
  });
});
