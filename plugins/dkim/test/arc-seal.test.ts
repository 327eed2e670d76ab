// ARC sealing (RFC 8617 §5.1, src/arc-seal.ts), proven against an independent implementation:
// Debian's python3-dkim (dkimpy, through test/fixtures/pydkim.py: `arcverify` runs dkim.arc_verify,
// `arcnewest` checks the newest set's two signatures on their own, `arcsign` seals with
// dkim.arc_sign), and against Themis's own ARC validation (VerifyStream, keys on a loopback DNS
// server). The sets Themis makes are inserted the way a milter inserts them and the message rebuilt
// from the header list (headerBlock + body) is what every verifier gets. Without python3-dkim (and
// python3-authres) the interop tests are skipped, saying why; the bad-input tests always run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { HeaderEvent } from 'themis-milter';
import { createResolver } from 'themis-milter/dns';
import { arcSeal, type ArcSealInput, type ArcSealResult } from '../src/arc-seal.ts';
import type { SigningKey } from '../src/keys.ts';
import type { MailauthArcData, MailauthDkimVerifier } from '../src/mailauth.ts';
import { headerBlock } from '../src/message.ts';
import { BodyHashes } from '../src/sign.ts';
import { VerifyStream, type ArcResult } from '../src/verify.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { assemble, mailauthSign, mailauthSeal, makeKey, splitMessage, type TestKey } from './helpers/mail.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/pydkim.py', import.meta.url));

/** The python that has dkimpy with ARC (authres) and Ed25519 (PyNaCl), or why there is none. */
function findPython(): { python?: string; why?: string } {
  const tried: string[] = [];
  for (const python of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(python, ['-c', 'import dkim, authres, nacl; dkim.arc_sign'], { encoding: 'utf8' });
    if (r.status === 0) return { python };
    tried.push(`${python}: ${r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`)}`);
  }
  return { why: `python3-dkim with ARC and Ed25519 (dkimpy, python3-authres, python3-nacl) is not installed — apt-get install python3-dkim python3-authres python3-nacl (${tried.join('; ')})` };
}
const { python, why } = findPython();

function py(args: string[], input: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(python!, [SCRIPT, ...args], { input, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/**
 * dkimpy's arc_verify: `cv` is `pass`, `fail`, `none`, or `None` for a chain a cv=fail seal ended.
 * dkimpy limits ARC to rsa-sha256; `ed25519` admits ed25519-sha256 too (its DKIM code verifies it).
 */
function pyArcVerify(raw: Buffer, ed25519 = false): { cv: string; reason: string; status: number | null } {
  const r = py([ed25519 ? 'arcverify+ed25519' : 'arcverify', JSON.stringify(records)], raw);
  assert.ok(r.stdout.length, `dkimpy arcverify printed nothing: ${r.stderr}`);
  return { ...(JSON.parse(r.stdout.toString()) as { cv: string; reason: string }), status: r.status };
}

/** dkimpy's check of the newest set alone. */
function pyNewest(raw: Buffer, ed25519 = false): { instance: number; cv: string; ams_valid: boolean; as_valid: boolean } {
  const r = py([ed25519 ? 'arcnewest+ed25519' : 'arcnewest', JSON.stringify(records)], raw);
  assert.ok(r.stdout.length, `dkimpy arcnewest printed nothing: ${r.stderr}`);
  return JSON.parse(r.stdout.toString()) as { instance: number; cv: string; ams_valid: boolean; as_valid: boolean };
}

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let author: TestKey;
let list: TestKey;
let hop3: TestKey;
let themisRsa: TestKey;
let themisEd: TestKey;
const records: Record<string, string> = {};
before(async () => {
  author = makeKey('example.com', 'a1');
  list = makeKey('lists.example.org', 'arc1');
  hop3 = makeKey('hop3.example', 'arc3');
  themisRsa = makeKey('forwarder.themis.test', 'arc-rsa');
  themisEd = makeKey('forwarder.themis.test', 'arc-ed', 'ed25519');
  for (const k of [author, list, hop3, themisRsa, themisEd]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
  dns = await startDnsServer(Object.fromEntries(Object.entries(records).map(([n, r]) => [n, { TXT: [r] }])));
});
after(() => dns.close());

const signingKey = (k: TestKey): SigningKey => ({ domain: k.domain, selector: k.selector, file: k.keyFile, algorithm: k.privateKey.asymmetricKeyType === 'ed25519' ? 'ed25519-sha256' : 'rsa-sha256', privateKey: k.privateKey });

const AUTHSERV = 'forwarder.themis.test';
const RESULTS = ['spf=pass smtp.mailfrom=lists.example.org', 'dkim=fail (body hash did not verify) header.d=example.com header.s=a1 header.b=AbCdEfGh', 'dmarc=fail (p=reject) header.from=example.com'];
const TIME = 1_796_340_000;

const LONG_TO = Array.from({ length: 12 }, (_, i) => `"Recipient Number ${i}" <recipient.${i}@example.net>`).join(',\r\n\t');
/** Message shapes (CRLF). */
const SHAPES: Record<string, string> = {
  plain: 'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: plain\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\nMessage-ID: <p1@example.com>\r\n\r\nHello Bob.\r\n',
  multipart:
    'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: with an attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary="=_b1"\r\n\r\n' +
    'This is a multi-part message in MIME format.\r\n\r\n--=_b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the attachment.  \r\n\r\n--=_b1\r\nContent-Type: application/octet-stream; name="a.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n\r\n--=_b1--\r\n',
  'long folded headers': `From: Alice <alice@example.com>\r\nTo: ${LONG_TO}\r\nSubject: a subject that goes on and on and on, far past the seventy-eight characters\r\n of one line, folded\r\n\tand folded again   with   odd   spacing\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\n\r\nBody.\r\n`,
  '8bit': 'From: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>\r\nTo: bob@example.net\r\nSubject: Grüße aus Köln — ünïcödé\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße,\r\nJörg — 日本語のテキスト\r\n',
  'trailing blank lines': 'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: blank lines\r\n\r\ntext  with  spaces \t \r\n\r\n\r\n\r\n',
};

/** A raw message as the MTA hands it to a milter: header events (no leading space, LF folds) and the body. */
function milterView(raw: string | Buffer): { events: HeaderEvent[]; body: Buffer; split: [string, string][] } {
  const { headers, body } = splitMessage(raw);
  return { events: headers.map(([name, value]) => ({ name, value: value.replace(/^ /, '').replace(/\r\n/g, '\n') })), body, split: headers };
}

/** The `relaxed` body hash as the plugin streams it. */
function bodyHash(body: Buffer): string {
  const h = new BodyHashes(['relaxed']);
  for (let off = 0; off < body.length; off += 7) h.update(body.subarray(off, off + 7));
  return h.digest('relaxed');
}

/** The message as delivered: the new set on top of the header list, the body. */
function delivered(set: readonly HeaderEvent[], events: readonly HeaderEvent[], body: Buffer): Buffer {
  return Buffer.concat([headerBlock([...set, ...events]), body]);
}

/** Themis's own ARC validation of a raw message, and the ARC data its verify pass collected. */
async function themisArc(raw: Buffer): Promise<{ arc: ArcResult; data: MailauthArcData }> {
  const { events, body } = milterView(raw);
  const stream = new VerifyStream(events, { resolver: createResolver({ servers: [dns.address] }), maxSignatures: 10, arc: true });
  for (let off = 0; off < body.length; off += 4096) await stream.write(Buffer.from(body.subarray(off, off + 4096)));
  const v = await stream.finish(5_000);
  assert.ok(v.arc, 'no ARC result');
  // The verify pass's ARC data, as the plugin hands it to the sealer (the verifier is private to the stream).
  const data = (stream as unknown as { verifier: MailauthDkimVerifier }).verifier.arc;
  return { arc: v.arc, data };
}

const isEd = (k: TestKey) => k.privateKey.asymmetricKeyType === 'ed25519';

/**
 * dkimpy's verdict on a chain whose newest seals may be Ed25519: for an RSA chain arc_verify must
 * pass as is; with an Ed25519 seal it must refuse the algorithm (dkimpy 1.1.4 limits ARC to
 * rsa-sha256) and pass once ed25519-sha256 is admitted.
 */
function assertDkimpyPasses(raw: Buffer, ed25519: boolean, what: string): void {
  const strict = pyArcVerify(raw);
  if (!ed25519) {
    assert.equal(strict.cv, 'pass', `${what}: dkimpy says ${JSON.stringify(strict)}\n${raw.toString()}`);
    assert.equal(strict.status, 0, what);
    return;
  }
  assert.equal(strict.cv, 'fail', `${what}: dkimpy (rsa-sha256 only for ARC) says ${JSON.stringify(strict)}`);
  assert.match(strict.reason, /unknown signature algorithm: b'ed25519-sha256'/, what);
  const admitted = pyArcVerify(raw, true);
  assert.equal(admitted.cv, 'pass', `${what}: dkimpy with ed25519-sha256 admitted says ${JSON.stringify(admitted)}\n${raw.toString()}`);
}

/** Seals and insists it worked. */
async function sealOk(input: ArcSealInput): Promise<Extract<ArcSealResult, { ok: true }>> {
  const r = await arcSeal(input);
  assert.ok(r.ok, `not sealed: ${JSON.stringify(r)}`);
  return r;
}

/** Checks the set is in the form a milter sends: names in order, values without `Name:`, LF folds. */
function assertMilterForm(r: Extract<ArcSealResult, { ok: true }>, instance: number, cv: string, key: TestKey): void {
  assert.deepEqual(r.headers.map((h) => h.name), ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results']);
  assert.equal(r.instance, instance);
  for (const h of r.headers) {
    assert.doesNotMatch(h.value, /\r/, `${h.name} has a CR`);
    assert.doesNotMatch(h.value, /^[ \t]/, `${h.name} starts with whitespace`);
    assert.doesNotMatch(h.value, /^ARC-/i, `${h.name} starts with a header name`);
    assert.doesNotMatch(h.value, /\n(?![ \t])/, `${h.name} has a line break that is not a fold`);
    assert.doesNotMatch(h.value, /\n[ \t]*(\n|$)/, `${h.name} has an empty continuation line`);
    for (const line of h.value.split('\n')) assert.ok(Buffer.byteLength(line) < 998, `${h.name} has a line of ${line.length}`);
  }
  const [as, ams, aar] = r.headers.map((h) => h.value.replace(/\n[ \t]+/g, ' '));
  assert.match(as, new RegExp(`^i=${instance}; a=${key.privateKey.asymmetricKeyType === 'ed25519' ? 'ed25519' : 'rsa'}-sha256; t=${TIME}; cv=${cv}; d=${key.domain}; s=${key.selector}; b=`));
  assert.doesNotMatch(as, /\bh=/);
  assert.match(ams, new RegExp(`^i=${instance}; a=\\S+-sha256; c=relaxed/relaxed; d=${key.domain}; h=[^;]*\\bFrom\\b[^;]*;`));
  assert.doesNotMatch(ams.match(/h=([^;]*)/)![1], /ARC-|Authentication-Results/i, 'the AMS covers no ARC header and no Authentication-Results');
  assert.equal(aar, `i=${instance}; ${AUTHSERV}; ${RESULTS.join('; ')}`);
}

describe('ARC sealing: the first set (i=1, cv=none)', () => {
  it('dkimpy and Themis validate what Themis seals — RSA-2048 (dkimpy as is) and Ed25519 (dkimpy with ed25519-sha256 admitted for ARC), every shape; the set is in milter form and Postfix would write the same bytes', async (t) => {
    let checked = 0;
    for (const key of [themisRsa, themisEd]) {
      for (const [shape, raw] of Object.entries(SHAPES)) {
        const { events, body, split } = milterView(raw);
        const r = await sealOk({ headers: events, bodyHash: bodyHash(body), cv: 'none', authservId: AUTHSERV, authResults: RESULTS, key: signingKey(key), time: TIME });
        assertMilterForm(r, 1, 'none', key);
        const sealed = delivered(r.headers, events, body);
        // What Postfix writes after a milter inserts the three headers at the top, in order.
        const postfix = assemble(split, r.headers.map((h, index) => ({ type: 'insertHeader', index, name: h.name, value: h.value }) as never), body);
        assert.ok(postfix.equals(sealed), `${shape}: Postfix's message differs from the header list rebuilt\n${postfix.toString()}\n---\n${sealed.toString()}`);
        assert.ok(sealed.toString('latin1').startsWith(`ARC-Seal: ${r.headers[0].value.replace(/\n/g, '\r\n')}\r\nARC-Message-Signature: `), shape);

        const mine = await themisArc(sealed);
        assert.equal(mine.arc.result, 'pass', `${shape} ${key.selector}: Themis says ${JSON.stringify(mine.arc)}`);
        assert.deepEqual(mine.arc.sealers, [AUTHSERV]);
        assert.equal(mine.arc.lastAuthResults, `${AUTHSERV}; ${RESULTS.join('; ')}`);
        if (!python) continue;
        assertDkimpyPasses(sealed, isEd(key), `${shape} ${key.selector}`);
        assert.deepEqual(pyNewest(sealed, isEd(key)), { instance: 1, cv: 'none', ams_valid: true, as_valid: true });
        // dkimpy also notices a body changed after sealing.
        assert.notEqual(pyArcVerify(Buffer.concat([sealed, Buffer.from('tampered\r\n')]), true).cv, 'pass', `${shape}: dkimpy accepted a changed body`);
        checked++;
      }
    }
    if (!python) {
      t.diagnostic(`dkimpy part skipped: ${why}`);
      t.skip(why);
      return;
    }
    t.diagnostic(`${checked} Themis-sealed messages pass Themis's validation and dkim.arc_verify (RSA-2048 as is; Ed25519 refused by dkimpy's rsa-sha256-only ARC, passing once admitted)`);
  });
});

describe('ARC sealing: what the set records', () => {
  it('an ARC-Authentication-Results with UTF-8 and a long resinfo is sealed byte for byte, folded only at its spaces', async (t) => {
    const { events, body } = milterView(SHAPES['8bit']);
    const results = ['spf=pass smtp.mailfrom=jörg@bücher.example (Jörg — 日本語のテキスト)', `dkim=pass (${'a comment that runs on '.repeat(8).trim()}) header.d=example.com header.s=a1`];
    const r = await sealOk({ headers: events, bodyHash: bodyHash(body), cv: 'none', authservId: AUTHSERV, authResults: results, key: signingKey(themisRsa), time: TIME });
    const aar = r.headers[2].value;
    assert.ok(aar.split('\n').length > 3, `not folded: ${aar}`);
    for (const line of aar.split('\n')) assert.ok(line.length <= 80, `a line of ${line.length}: ${line}`);
    assert.equal(aar.replace(/;\n\t/g, '; ').replace(/\n /g, ' '), `i=1; ${AUTHSERV}; ${results.join('; ')}`, 'folds only added before spaces and after the semicolons');
    const sealed = delivered(r.headers, events, body);
    assert.ok(sealed.includes(Buffer.from('ARC-Authentication-Results: i=1; forwarder.themis.test;\r\n\tspf=pass smtp.mailfrom=jörg@bücher.example (Jörg — 日本語のテキスト);\r\n', 'utf8')));
    const mine = await themisArc(sealed);
    assert.equal(mine.arc.result, 'pass', JSON.stringify(mine.arc));
    assert.equal(mine.arc.lastAuthResults, `${AUTHSERV}; ${results.join('; ')}`);
    if (!python) {
      t.diagnostic(`dkimpy part skipped: ${why}`);
      return;
    }
    assertDkimpyPasses(sealed, false, 'UTF-8 AAR');
    // The seal covers the AAR: one byte of it changed breaks the chain for dkimpy.
    const edited = Buffer.from(sealed.toString('utf8').replace('日本語', '中国語'), 'utf8');
    assert.notEqual(pyArcVerify(edited).cv, 'pass');
  });
});

describe('ARC sealing: header bytes', () => {
  it('headers with `raw` (SMFIP_HDR_LEADSPC: `Name:value`, odd spacing) are sealed as written; written `Name: value` the set passes both, `Name:value` passes Themis but crashes dkimpy', async (t) => {
    const raw = 'From:Alice <alice@example.com>\r\nTo:   bob@example.net\r\nSubject:\tno space,\r\n  a tab and a fold\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\n\r\nHello.\r\n';
    const { headers, body } = splitMessage(raw);
    // What the kernel hands over with HDR_LEADSPC: `raw` exactly what followed the colon (LF folds), `value` without the one space.
    const events: HeaderEvent[] = headers.map(([name, v]) => ({ name, value: v.replace(/^ /, '').replace(/\r\n/g, '\n'), raw: v.replace(/\r\n/g, '\n') }));
    assert.ok(headerBlock(events).equals(Buffer.from(raw.slice(0, raw.indexOf('\r\n\r\n') + 4))), 'headerBlock rebuilds the header block byte for byte');
    for (const key of [themisRsa, themisEd]) {
      const r = await sealOk({ headers: events, bodyHash: bodyHash(body), cv: 'none', authservId: AUTHSERV, authResults: RESULTS, key: signingKey(key), time: TIME });
      const withSpace = delivered(r.headers, events, body);
      // The set as an MTA writes it when the milter's value has no leading space under HDR_LEADSPC.
      const noSpace = Buffer.concat([Buffer.from(r.headers.map((h) => `${h.name}:${h.value.replace(/\n/g, '\r\n')}\r\n`).join(''), 'utf8'), Buffer.from(raw, 'utf8')]);
      for (const [what, message] of [['Name: value', withSpace], ['Name:value', noSpace]] as const) {
        const mine = await themisArc(message);
        assert.equal(mine.arc.result, 'pass', `${key.selector} ${what}: ${JSON.stringify(mine.arc)}`);
      }
      if (!python) continue;
      assertDkimpyPasses(withSpace, isEd(key), `${key.selector} Name: value`);
      // dkimpy 1.1.4 finds the newest ARC-Message-Signature by " i=N;" with the space: without it
      // arc_verify itself fails (IndexError), so a milter must send the set's values with a leading
      // space when HDR_LEADSPC is negotiated.
      const crash = py([isEd(key) ? 'arcverify+ed25519' : 'arcverify', JSON.stringify(records)], noSpace);
      assert.notEqual(crash.status, 0);
      assert.match(crash.stderr, /raw_ams_header[\s\S]*IndexError/, `dkimpy on Name:value: ${crash.stdout.toString()} ${crash.stderr}`);
    }
    if (!python) t.diagnostic(`dkimpy part skipped: ${why}`);
    else t.diagnostic('dkimpy 1.1.4 crashes (IndexError) on an ARC-Message-Signature written "ARC-Message-Signature:i=…" without the space: send the values with a leading space under HDR_LEADSPC');
  });
});

describe('ARC sealing on top of a chain', () => {
  const LIST_AR = 'lists.example.org; dkim=pass header.d=example.com header.s=a1; spf=pass smtp.mailfrom=alice@example.com; dmarc=pass header.from=example.com';

  /** The author signs; the list adds a footer and dkimpy seals i=1. */
  async function dkimpyHop1(): Promise<Buffer> {
    const signed = await mailauthSign(SHAPES.plain, author);
    const footered = Buffer.concat([Buffer.from(`Authentication-Results: ${LIST_AR}\r\n`), signed, Buffer.from('-- \r\nThe example list\r\n')]);
    const hop1 = py(['arcsign', list.domain, list.selector, list.keyFile, 'lists.example.org', String(TIME - 60)], footered);
    assert.equal(hop1.status, 0, hop1.stderr);
    assert.equal(pyArcVerify(hop1.stdout).cv, 'pass', 'dkimpy\'s own check of its set');
    return hop1.stdout;
  }

  it('dkimpy i=1 → Themis i=2 cv=pass (RSA and Ed25519) → dkimpy and Themis pass; a third hop by dkimpy on top passes too', async (t) => {
    if (!python) {
      t.diagnostic(why!);
      t.skip(why);
      return;
    }
    const hop1 = await dkimpyHop1();
    const verified = await themisArc(hop1);
    assert.equal(verified.arc.result, 'pass', JSON.stringify(verified.arc));
    assert.equal(verified.data.chain && verified.data.chain.length, 1);
    const { events, body } = milterView(hop1);
    for (const key of [themisRsa, themisEd]) {
      const r = await sealOk({ headers: events, bodyHash: bodyHash(body), chain: verified.data, cv: 'pass', authservId: AUTHSERV, authResults: RESULTS, key: signingKey(key), time: TIME });
      assertMilterForm(r, 2, 'pass', key);
      const hop2 = delivered(r.headers, events, body);
      assertDkimpyPasses(hop2, isEd(key), `two hops (${key.selector})`);
      assert.deepEqual(pyNewest(hop2, isEd(key)), { instance: 2, cv: 'pass', ams_valid: true, as_valid: true });
      const mine = await themisArc(hop2);
      assert.equal(mine.arc.result, 'pass', JSON.stringify(mine.arc));
      assert.deepEqual(mine.arc.sealers, ['lists.example.org', AUTHSERV]);
      assert.equal(mine.arc.instances, 2);
      assert.equal(mine.arc.firstAuthResults, LIST_AR.replace(/; /g, '; '));

      // A third hop: dkimpy seals on top of Themis's set (its cv from its own Authentication-Results).
      const withAr = Buffer.concat([Buffer.from('Authentication-Results: hop3.example; arc=pass (i=2); spf=pass smtp.mailfrom=forwarder.themis.test\r\n'), hop2]);
      const hop3Out = py(['arcsign', hop3.domain, hop3.selector, hop3.keyFile, 'hop3.example', String(TIME + 60)], withAr);
      assert.equal(hop3Out.status, 0, hop3Out.stderr);
      assert.match(hop3Out.stdout.toString(), /^ARC-Seal: i=3; cv=pass;/);
      assertDkimpyPasses(hop3Out.stdout, isEd(key), `three hops (${key.selector})`);
      const three = await themisArc(hop3Out.stdout);
      assert.equal(three.arc.result, 'pass', JSON.stringify(three.arc));
      assert.deepEqual(three.arc.sealers, ['lists.example.org', AUTHSERV, 'hop3.example']);

      // And Themis seals i=4 on the three-hop chain it validated.
      const v3 = milterView(hop3Out.stdout);
      const r4 = await sealOk({ headers: v3.events, bodyHash: bodyHash(v3.body), chain: three.data, cv: 'pass', authservId: AUTHSERV, authResults: RESULTS, key: signingKey(key), time: TIME });
      assert.equal(r4.instance, 4);
      const hop4 = delivered(r4.headers, v3.events, v3.body);
      assertDkimpyPasses(hop4, isEd(key), `four hops (${key.selector})`);
      assert.equal((await themisArc(hop4)).arc.result, 'pass');
    }
    t.diagnostic('dkimpy → Themis → dkimpy → Themis chains pass in Themis and dkimpy (RSA Themis seals as is; Ed25519 ones once dkimpy admits ed25519-sha256 for ARC)');
  });

  it('a mailauth-sealed chain takes a Themis set too (chain derived from the headers when not given)', async (t) => {
    const one = await mailauthSeal(SHAPES.multipart, list, { authResults: LIST_AR });
    const verified = await themisArc(one);
    assert.equal(verified.arc.result, 'pass');
    const { events, body } = milterView(one);
    const r = await sealOk({ headers: events, bodyHash: bodyHash(body), cv: 'pass', authservId: AUTHSERV, authResults: RESULTS, key: signingKey(themisRsa), time: TIME });
    const two = delivered(r.headers, events, body);
    const mine = await themisArc(two);
    assert.equal(mine.arc.result, 'pass', JSON.stringify(mine.arc));
    assert.deepEqual(mine.arc.sealers, ['lists.example.org', AUTHSERV]);
    if (!python) {
      t.diagnostic(`dkimpy part skipped: ${why}`);
      return;
    }
    assert.equal(pyArcVerify(two).cv, 'pass');
  });

  it('a chain that failed validation is sealed with cv=fail (its own set only), which ends it: dkimpy and Themis report it, and it is never sealed again', async (t) => {
    if (!python) {
      t.diagnostic(why!);
      t.skip(why);
      return;
    }
    const hop1 = await dkimpyHop1();
    const text = hop1.toString('latin1');
    const cases: [string, Buffer, RegExp][] = [
      ['a body changed after sealing', Buffer.concat([hop1, Buffer.from('P.S. added after sealing\r\n')]), /no valid signature|body hash/],
      ['a sealed ARC-Authentication-Results edited', Buffer.from(text.replace('dmarc=pass header.from=example.com', 'dmarc=pass header.from=evil.example'), 'latin1'), /seal signature validation failed/],
    ];
    for (const [what, tampered, themisReason] of cases) {
      assert.notEqual(tampered.toString('latin1'), text, what);
      const verified = await themisArc(tampered);
      assert.equal(verified.arc.result, 'fail', what);
      assert.match(verified.arc.reason ?? '', themisReason, what);
      assert.notEqual(pyArcVerify(tampered).cv, 'pass', `${what}: dkimpy agrees the incoming chain fails`);

      const { events, body } = milterView(tampered);
      const r = await sealOk({ headers: events, bodyHash: bodyHash(body), chain: verified.data, cv: 'fail', authservId: AUTHSERV, authResults: ['arc=fail (i=1 seal)', ...RESULTS.slice(1)], key: signingKey(themisRsa), time: TIME });
      assert.equal(r.instance, 2, what);
      assert.match(r.headers[0].value, /^i=2; a=rsa-sha256; t=\d+; cv=fail;/);
      const sealed = delivered(r.headers, events, body);

      // dkimpy: the chain is ended (arc_verify answers None, "reported failure, the chain is terminated"), never pass ...
      const v = pyArcVerify(sealed);
      assert.notEqual(v.status, 0, what);
      assert.equal(v.cv, 'None', `${what}: dkimpy says ${JSON.stringify(v)}`);
      assert.equal(v.reason, 'ARC-Seal[2] reported failure, the chain is terminated', what);
      t.diagnostic(`${what}: dkimpy arc_verify says cv=${v.cv}, "${v.reason}"`);
      // ... and the cv=fail seal itself and its ARC-Message-Signature are valid signatures.
      assert.deepEqual(pyNewest(sealed), { instance: 2, cv: 'fail', ams_valid: true, as_valid: true }, what);
      // Themis: fail, the newest seal's cv=fail named.
      const mine = await themisArc(sealed);
      assert.equal(mine.arc.result, 'fail', what);
      assert.match(mine.arc.reason ?? '', /cv=fail/, what);

      // A chain whose newest seal says cv=fail is not sealed again, whatever the caller says.
      const next = milterView(sealed);
      for (const cv of ['fail', 'pass'] as const) {
        const again = await arcSeal({ headers: next.events, bodyHash: bodyHash(next.body), chain: mine.data, cv, authservId: AUTHSERV, authResults: RESULTS, key: signingKey(themisEd), time: TIME });
        assert.equal(again.ok, false, `${what}: sealed again with cv=${cv}`);
        assert.ok(!again.ok && again.code === 'THEMIS_DKIM_ARC_SEAL_REFUSED', JSON.stringify(again));
        assert.ok(!again.ok && /cv=fail/.test(again.reason), JSON.stringify(again));
      }
    }
    t.diagnostic('tampered chains sealed with cv=fail: dkimpy reports the chain terminated, its seal valid; Themis fails it; no further set');
  });

  it('a 50-set chain Themis built itself passes both validators; a 51st set is refused', async (t) => {
    const { events: start, body } = milterView(SHAPES.plain);
    const bh = bodyHash(body);
    let events: HeaderEvent[] = start;
    for (let i = 1; i <= 50; i++) {
      const r = await sealOk({ headers: events, bodyHash: bh, cv: i === 1 ? 'none' : 'pass', authservId: AUTHSERV, authResults: [`arc=${i === 1 ? 'none' : 'pass'}`], key: signingKey(themisRsa), time: TIME + i });
      assert.equal(r.instance, i);
      events = [...r.headers, ...events];
    }
    const fifty = delivered([], events, body);
    const mine = await themisArc(fifty);
    assert.equal(mine.arc.result, 'pass', JSON.stringify(mine.arc).slice(0, 300));
    assert.equal(mine.arc.instances, 50);
    for (const cv of ['pass', 'fail'] as const) {
      const r = await arcSeal({ headers: events, bodyHash: bh, chain: mine.data, cv, authservId: AUTHSERV, authResults: RESULTS, key: signingKey(themisRsa), time: TIME });
      assert.equal(r.ok, false, `a 51st set (cv=${cv})`);
      assert.ok(!r.ok && r.code === 'THEMIS_DKIM_ARC_SEAL_REFUSED' && /50/.test(r.reason), JSON.stringify(r));
    }
    if (!python) {
      t.diagnostic(`dkimpy part skipped: ${why}`);
      return;
    }
    assert.equal(pyArcVerify(fifty).cv, 'pass', 'dkimpy on 50 sets');
  });
});

describe('ARC sealing: bad input never throws', () => {
  const base = (): ArcSealInput => {
    const { events, body } = milterView(SHAPES.plain);
    return { headers: events, bodyHash: bodyHash(body), cv: 'none', authservId: AUTHSERV, authResults: RESULTS, key: signingKey(themisRsa), time: TIME };
  };
  async function refused(input: unknown, code: string, reason: RegExp, what: string): Promise<void> {
    let r: ArcSealResult | undefined;
    await assert.doesNotReject(async () => {
      r = await arcSeal(input as ArcSealInput);
    }, what);
    assert.ok(r && !r.ok, `${what}: sealed ${JSON.stringify(r)}`);
    assert.equal(r.code, code, `${what}: ${JSON.stringify(r)}`);
    assert.match(r.reason, reason, what);
  }

  it('unusable keys: THEMIS_DKIM_ARC_SEAL_KEY', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const small = generateKeyPairSync('rsa', { modulusLength: 512 }).privateKey;
    const key = signingKey(themisRsa);
    const cases: [string, unknown, RegExp][] = [
      ['no key', undefined, /no key/],
      ['an EC key', { ...key, privateKey: ec }, /ec key/],
      ['an RSA-512 key', { ...key, privateKey: small }, /512 bits/],
      ['a public key', { ...key, privateKey: createPublicKey(themisRsa.privateKey) }, /not a private key/],
      ['a PEM string instead of a KeyObject', { ...key, privateKey: themisRsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) }, /not a private key/],
      ['the algorithm of another key type', { ...key, algorithm: 'ed25519-sha256' }, /algorithm ed25519-sha256/],
      ['a bad domain', { ...key, domain: 'not a domain' }, /not a domain name/],
      ['a bad selector', { ...key, selector: 'sel;x=1' }, /not a selector/],
    ];
    for (const [what, k, reason] of cases) await refused({ ...base(), key: k }, 'THEMIS_DKIM_ARC_SEAL_KEY', reason, what);
  });

  it('bad input: THEMIS_DKIM_ARC_SEAL; a cv that does not fit the headers: THEMIS_DKIM_ARC_SEAL_REFUSED', async () => {
    const b = base();
    const sealedOnce = await sealOk(b);
    const arcHeaders = [...sealedOnce.headers, ...b.headers];
    const cases: [string, unknown, string, RegExp][] = [
      ['no input', undefined, 'THEMIS_DKIM_ARC_SEAL', /no input/],
      ['headers not a list', { ...b, headers: 'From: a@b' }, 'THEMIS_DKIM_ARC_SEAL', /no header list/],
      ['a header name with a colon', { ...b, headers: [{ name: 'From:', value: 'a@example.com' }] }, 'THEMIS_DKIM_ARC_SEAL', /not a header/],
      ['a header without a value', { ...b, headers: [{ name: 'From' }] }, 'THEMIS_DKIM_ARC_SEAL', /not a header/],
      ['no From header', { ...b, headers: b.headers.filter((h) => h.name !== 'From') }, 'THEMIS_DKIM_ARC_SEAL', /no From header/],
      ['a body hash that is not one', { ...b, bodyHash: 'not-a-hash' }, 'THEMIS_DKIM_ARC_SEAL', /body hash/],
      ['a SHA-1 sized body hash', { ...b, bodyHash: Buffer.alloc(20).toString('base64') }, 'THEMIS_DKIM_ARC_SEAL', /body hash/],
      ['an unknown cv', { ...b, cv: 'maybe' }, 'THEMIS_DKIM_ARC_SEAL', /cv "maybe"/],
      ['an authserv-id with a space', { ...b, authservId: 'mx example' }, 'THEMIS_DKIM_ARC_SEAL', /authserv-id/],
      ['an empty authserv-id', { ...b, authservId: '' }, 'THEMIS_DKIM_ARC_SEAL', /authserv-id/],
      ['a result with a line break', { ...b, authResults: ['spf=pass\r\nX-Injected: yes'] }, 'THEMIS_DKIM_ARC_SEAL', /one line/],
      ['results not a list', { ...b, authResults: 'spf=pass' }, 'THEMIS_DKIM_ARC_SEAL', /one line/],
      ['a time that is not one', { ...b, time: Number.NaN }, 'THEMIS_DKIM_ARC_SEAL', /signing time/],
      ['a time of 0', { ...b, time: 0 }, 'THEMIS_DKIM_ARC_SEAL', /signing time/],
      ['a header list that is not a list', { ...b, headerList: 'From:Subject' }, 'THEMIS_DKIM_ARC_SEAL', /header list/],
      ['a header list entry that is not a name', { ...b, headerList: ['From', 'Sub ject'] }, 'THEMIS_DKIM_ARC_SEAL', /header list/],
      ['cv=pass without ARC headers', { ...b, cv: 'pass' }, 'THEMIS_DKIM_ARC_SEAL_REFUSED', /no ARC headers/],
      ['cv=fail without ARC headers', { ...b, cv: 'fail' }, 'THEMIS_DKIM_ARC_SEAL_REFUSED', /no ARC headers/],
      ['cv=none with ARC headers', { ...b, headers: arcHeaders }, 'THEMIS_DKIM_ARC_SEAL_REFUSED', /has ARC headers/],
      ['cv=pass, a chain that is not the one in the headers', { ...b, headers: arcHeaders, cv: 'pass', chain: { chain: false, warnings: [] } }, 'THEMIS_DKIM_ARC_SEAL_REFUSED', /not the one in the headers/],
      ['cv=pass on a broken structure (i=2 only)', { ...b, headers: arcHeaders.map((h) => (h.name.startsWith('ARC-') ? { ...h, value: h.value.replace(/\bi=1\b/, 'i=2') } : h)), cv: 'pass' }, 'THEMIS_DKIM_ARC_SEAL_REFUSED', /not usable \(i=2 expected=1\)/],
    ];
    for (const [what, input, code, reason] of cases) await refused(input, code, reason, what);
    // A header list without From signs From anyway; ARC headers and Authentication-Results are never signed.
    const r = await sealOk({ ...b, headerList: ['Subject', 'ARC-Seal', 'Authentication-Results'] });
    assert.match(r.headers[1].value.replace(/\n\s+/g, ' '), /\bh=Subject: From;/);
    // An empty result list: `authserv-id; none` (RFC 8601 no-result).
    const none = await sealOk({ ...b, authResults: [] });
    assert.equal(none.headers[2].value, `i=1; ${AUTHSERV};\n\tnone`);
  });
});
