// Interoperability with an independent implementation, Debian's python3-dkim (dkimpy), through
// test/fixtures/pydkim.py (it answers key lookups from the records it is given: the `dkimverify`
// command cannot use our loopback DNS). Messages Themis signs — RSA and Ed25519, every
// canonicalisation — verify with dkimpy; messages dkimpy signs verify as `pass` in Themis. Shapes:
// multipart, 8bit (UTF-8 body and header), long folded headers, LF-only and CRLF bodies, an empty
// body, trailing blank lines. Without python3-dkim the tests are skipped, saying why.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestKernel } from 'themis-milter/testing';
import dkim from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, assemble, makeKey, noteSpy, splitMessage, tempDir, type TestKey } from './helpers/mail.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/pydkim.py', import.meta.url));

/** The python that has dkimpy (and PyNaCl for Ed25519), or why there is none. */
function findPython(): { python?: string; why?: string } {
  const tried: string[] = [];
  for (const python of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(python, ['-c', 'import dkim, nacl'], { encoding: 'utf8' });
    if (r.status === 0) return { python };
    tried.push(`${python}: ${r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`)}`);
  }
  return { why: `python3-dkim (dkimpy with PyNaCl) is not installed — apt-get install python3-dkim (${tried.join('; ')})` };
}
const { python, why } = findPython();

function py(args: string[], input: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(python!, [SCRIPT, ...args], { input, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

const LONG_TO = Array.from({ length: 12 }, (_, i) => `"Recipient Number ${i}" <recipient.${i}@example.net>`).join(',\r\n\t');

/** The message shapes, CRLF unless said otherwise. */
const SHAPES: Record<string, string> = {
  plain: 'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: plain\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\nMessage-ID: <p1@example.com>\r\n\r\nHello Bob.\r\n',
  multipart:
    'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: with an attachment\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary="=_b1"\r\n\r\n' +
    'This is a multi-part message in MIME format.\r\n\r\n--=_b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSee the attachment.  \r\n\r\n--=_b1\r\nContent-Type: application/octet-stream; name="a.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n\r\n--=_b1--\r\n',
  '8bit': 'From: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>\r\nTo: bob@example.net\r\nSubject: Grüße aus Köln — ünïcödé\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße,\r\nJörg — 日本語のテキスト\r\n',
  'long folded headers': `From: Alice <alice@example.com>\r\nTo: ${LONG_TO}\r\nSubject: a subject that goes on and on and on, far past the seventy-eight characters\r\n of one line, folded\r\n\tand folded again   with   odd   spacing\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\n\r\nBody.\r\n`,
  'LF-only': 'From: Alice <alice@example.com>\nTo: bob@example.net\nSubject: LF line ends\n folded\n\nline one\nline two\n\n',
  'empty body': 'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: nothing to say\r\n\r\n',
  // No space, two spaces, a tab after the colon, an empty value: `simple` header canonicalisation
  // signs them byte for byte (the kernel negotiates SMFIP_HDR_LEADSPC for the plugin's exactHeaders).
  'header spacing': 'From:Alice <alice@example.com>\r\nTo:  bob@example.net\r\nSubject:\tspacing after the colon\r\nDate:Thu, 03 Dec 2026 22:00:00 +0000\r\nMessage-ID:\r\n <spacing@example.com>\r\nX-Empty:\r\n\r\nBody.\r\n',
  'trailing blank lines': 'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: blank lines\r\n\r\ntext  with  spaces \t \r\n\r\n\r\n\r\n\r\n',
};
const CANONS = ['relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple'];

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let rsa: TestKey;
let ed: TestKey;
let edSeedFile: string;
const records: Record<string, string> = {};
before(async () => {
  rsa = makeKey('example.com', 'py-rsa');
  ed = makeKey('example.com', 'py-ed', 'ed25519');
  // dkimpy reads an Ed25519 key as the base64 of its 32-byte seed: the end of the PKCS#8 DER.
  const der = ed.privateKey.export({ type: 'pkcs8', format: 'der' });
  edSeedFile = join(tempDir(), 'py-ed.seed');
  writeFileSync(edSeedFile, der.subarray(der.length - 32).toString('base64'));
  for (const k of [rsa, ed]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
  dns = await startDnsServer(Object.fromEntries(Object.entries(records).map(([n, r]) => [n, { TXT: [r] }])));
});
after(() => dns.close());

describe('interop with python3-dkim', () => {
  it('messages Themis signs verify with dkimpy (RSA and Ed25519, every canonicalisation, every shape)', async (t) => {
    if (!python) {
      t.diagnostic(why!);
      t.skip(why);
      return;
    }
    let checked = 0;
    for (const canonicalization of CANONS) {
      const k = await createTestKernel({
        plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], keys: [rsa, ed].map(({ domain, selector, keyFile }) => ({ domain, selector, keyFile })) } }],
        policies: [{ name: 'out', dkim: { sign: { canonicalization: canonicalization as never }, verify: { enabled: false } } }],
      });
      for (const [shape, raw] of Object.entries(SHAPES)) {
        const { headers, body } = splitMessage(raw);
        const r = await k.message({ client: { address: '203.0.113.9' }, auth: 'alice', from: 'alice@example.com', rcpt: ['bob@example.net'], headers, body });
        assert.equal(added(r, 'DKIM-Signature').length, 2, shape);
        const delivered = assemble(headers, r.modifications, body);
        const v = py(['verify', JSON.stringify(records)], delivered);
        assert.equal(v.status, 0, `${shape} ${canonicalization}: dkimpy says ${v.stdout.toString().trim()} ${v.stderr}\n${delivered.toString()}`);
        assert.equal(v.stdout.toString().trim(), '[true, true]');
        checked++;
      }
      await k.close();
    }
    t.diagnostic(`${checked} messages, each with an RSA and an Ed25519 signature, verified by dkimpy`);
  });

  it('messages dkimpy signs verify as pass in Themis (RSA and Ed25519, every canonicalisation, every shape)', async (t) => {
    if (!python) {
      t.diagnostic(why!);
      t.skip(why);
      return;
    }
    const spy = noteSpy();
    const k = await createTestKernel({ plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], dnsTimeout: 500 } }, spy.plugin], policies: [{ name: 'in', dkim: { verify: { actions: { fail: 'reject', permerror: 'reject', neutral: 'reject' } } } }] });
    let checked = 0;
    for (const canonicalization of CANONS) {
      for (const [shape, raw] of Object.entries(SHAPES)) {
        for (const [key, file, algorithm] of [[rsa, rsa.keyFile, 'rsa-sha256'], [ed, edSeedFile, 'ed25519-sha256']] as const) {
          const s = py(['sign', key.domain, key.selector, file, algorithm, canonicalization], Buffer.from(raw, 'utf8'));
          assert.equal(s.status, 0, `dkimpy could not sign ${shape}: ${s.stderr}`);
          // Check dkimpy agrees with itself before holding Themis to it.
          assert.equal(py(['verify', JSON.stringify(records)], s.stdout).status, 0, `dkimpy's own check of ${shape} ${canonicalization} ${algorithm}`);
          const { headers, body } = splitMessage(s.stdout);
          const r = await k.message({ client: { address: '198.51.100.7' }, from: 'alice@example.com', rcpt: ['bob@example.net'], headers, body });
          assert.equal(r.decision.action, 'accept', `${shape} ${canonicalization} ${algorithm}`);
          assert.deepEqual(spy.last()!.results.map((x) => [x.result, x.domain, x.selector, x.algorithm]), [['pass', 'example.com', key.selector, algorithm]], `${shape} ${canonicalization} ${algorithm}: ${JSON.stringify(spy.last()!.results)}`);
          checked++;
        }
      }
    }
    await k.close();
    t.diagnostic(`${checked} dkimpy-signed messages verified as pass`);
  });
});
