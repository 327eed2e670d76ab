// DKIM behind a real Postfix, keys published by a DNS server the test runs on loopback:
// - mail Themis signs (RSA and Ed25519) leaves Postfix with signatures that an independent
//   implementation, Debian's python3-dkim (dkimpy), verifies on the bytes Postfix delivered;
// - mail dkimpy signed arrives through Postfix and gets one Authentication-Results header carrying
//   both the spf and the dkim results (the kernel's one header), the forged one removed;
// - `simple/simple` signatures over headers written `Name:value` or with odd spacing verify as
//   delivered (the kernel negotiates SMFIP_HDR_LEADSPC for the plugin, so the bytes are exact);
// - a list's ARC-sealed message forwarded through Postfix gets Themis's set on top, and dkimpy's
//   arc_verify passes the two-hop chain on the delivered bytes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../../../test/helpers/postfix.ts';
import { startThemis } from '../../../test/helpers/themis.ts';
import { makeKey, tempDir } from './helpers/mail.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/pydkim.py', import.meta.url));
const dkimpy = spawnSync('/usr/bin/python3', ['-c', 'import dkim, nacl'], { encoding: 'utf8' });
const skip = !postfixAvailable() ? postfixUnavailableReason() : dkimpy.status !== 0 ? `python3-dkim (dkimpy with PyNaCl) is not installed — apt-get install python3-dkim (${dkimpy.error?.message ?? dkimpy.stderr.trim().split('\n').pop()})` : false;
if (skip) console.log(`# skipping DKIM through Postfix: ${skip}`);

const py = (args: string[], input: Buffer) => spawnSync('/usr/bin/python3', [SCRIPT, ...args], { input, maxBuffer: 16 * 1024 * 1024 });
const header = (m: { headers: [string, string][] }, name: string) => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

describe('DKIM through a real Postfix', { skip }, () => {
  it('signs outbound mail that dkimpy verifies as delivered; verifies dkimpy-signed inbound mail into one Authentication-Results with spf', async (t) => {
    const rsa = makeKey('example.com', 'pf-rsa');
    const ed = makeKey('example.com', 'pf-ed', 'ed25519');
    const partner = makeKey('partner.example', 'p1');
    const records: Record<string, string> = {};
    for (const k of [rsa, ed, partner]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
    const dns = await startDnsServer({
      ...Object.fromEntries(Object.entries(records).map(([name, record]) => [name, { TXT: [record] }])),
      'example.com': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      'partner.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
    });
    t.after(() => dns.close());
    const dir = tempDir();
    const file = join(dir, 'themis.config.json');
    const keys = [rsa, ed].map(({ domain, selector, keyFile }) => ({ domain, selector, keyFile }));
    writeFileSync(
      file,
      JSON.stringify({
        plugins: [
          { plugin: 'themis-plugin-spf', options: { dnsServers: [dns.address], dnsTimeout: 500, authservId: 'mx.themis.test' } },
          { plugin: 'themis-plugin-dkim', options: { dnsServers: [dns.address], dnsTimeout: 500, authservId: 'mx.themis.test', keys } },
        ],
        policies: [
          // The test's Postfix relays everything from 127.0.0.1: the sender tells outbound from inbound.
          { name: 'outbound', priority: 1, match: { source: '@example.com' }, dkim: { sign: {}, verify: { enabled: false } }, stopHere: true },
          { name: 'inbound', priority: 2, spf: { headers: { receivedSpf: false, authenticationResults: true } }, dkim: { verify: { headers: { authenticationResults: true } } } },
        ],
      }),
    );
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    // Outbound: a multipart message with a folded header, signed by Themis.
    const outbound = join(dir, 'outbound.eml');
    writeFileSync(
      outbound,
      'From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: quarterly figures, as promised,\r\n folded over two lines\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="=_b1"\r\n\r\n--=_b1\r\nContent-Type: text/plain\r\n\r\nSee attached.  \r\n\r\n--=_b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n--=_b1--\r\n',
    );
    assert.equal((await pf.swaks(['--from', 'alice@example.com', '--to', 'bob@example.test', '--data', outbound])).code, 0);

    // Inbound: signed by dkimpy, with a forged Authentication-Results claiming our authserv-id.
    const unsigned = Buffer.from('Authentication-Results: mx.themis.test; dkim=pass header.d=bank.example\r\nFrom: Partner <news@partner.example>\r\nTo: bob@example.net\r\nSubject: inbound\r\n\r\nHello from a partner.\r\n');
    const signed = py(['sign', 'partner.example', 'p1', partner.keyFile, 'rsa-sha256', 'relaxed/relaxed'], unsigned);
    assert.equal(signed.status, 0, signed.stderr.toString());
    const inbound = join(dir, 'inbound.eml');
    writeFileSync(inbound, signed.stdout);
    assert.equal((await pf.swaks(['--from', 'news@partner.example', '--to', 'bob@example.test', '--data', inbound])).code, 0);

    const delivered = await pf.waitForDelivered(2);
    const out = delivered.find((m) => header(m, 'Subject')[0]?.startsWith('quarterly'))!;
    assert.equal(header(out, 'DKIM-Signature').length, 2, 'an RSA and an Ed25519 signature');
    const verified = py(['verify', JSON.stringify(records)], Buffer.from(out.raw, 'utf8'));
    assert.equal(verified.status, 0, `dkimpy on the delivered message: ${verified.stdout} ${verified.stderr}\n${out.raw}`);
    assert.equal(verified.stdout.toString().trim(), '[true, true]');

    const inb = delivered.find((m) => header(m, 'Subject')[0] === 'inbound')!;
    const ar = header(inb, 'Authentication-Results');
    assert.equal(ar.length, 1, `one Authentication-Results, the forged one gone: ${JSON.stringify(ar)}`);
    assert.match(ar[0], /^mx\.themis\.test;\s+spf=pass smtp\.mailfrom=partner\.example;\s+dkim=pass header\.d=partner\.example header\.s=p1 header\.a=rsa-sha256 header\.b=\S{8}$/);
  });

  it('simple/simple over headers written Name:value verifies as delivered; a forwarded list message gets an ARC set dkimpy validates', async (t) => {
    const rsa = makeKey('example.com', 'pf-simple');
    const author = makeKey('partner.example', 'p2');
    const list = makeKey('lists.example.org', 'arc1');
    const forwarder = makeKey('forwarder.themis.test', 'arc2026');
    const records: Record<string, string> = {};
    for (const k of [rsa, author, list, forwarder]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
    const dns = await startDnsServer(Object.fromEntries(Object.entries(records).map(([name, record]) => [name, { TXT: [record] }])));
    t.after(() => dns.close());
    const dir = tempDir();
    const file = join(dir, 'themis.config.json');
    const keys = [rsa, forwarder].map(({ domain, selector, keyFile }) => ({ domain, selector, keyFile }));
    writeFileSync(
      file,
      JSON.stringify({
        plugins: [{ plugin: 'themis-plugin-dkim', options: { dnsServers: [dns.address], dnsTimeout: 500, authservId: 'forwarder.themis.test', keys } }],
        policies: [
          { name: 'outbound', priority: 1, match: { source: '@example.com' }, dkim: { sign: { canonicalization: 'simple/simple' }, verify: { enabled: false } }, stopHere: true },
          { name: 'forward', priority: 2, match: { source: '@lists.example.org' }, dkim: { verify: { headers: { authenticationResults: true } }, seal: { domain: 'forwarder.themis.test' } } },
        ],
      }),
    );
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    const tight = join(dir, 'tight.eml');
    writeFileSync(tight, 'From:Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject:no space after the colon\r\nX-Spacing:   three spaces\r\nDate:Thu, 03 Dec 2026 22:00:00 +0000\r\n\r\nSigned simple.\r\n');
    assert.equal((await pf.swaks(['--from', 'alice@example.com', '--to', 'bob@example.test', '--data', tight])).code, 0);

    // The author signs, the list adds a footer (breaking that signature) and seals i=1 with dkimpy.
    const original = Buffer.from('Authentication-Results: lists.example.org; dkim=pass header.d=partner.example header.s=p2\r\nFrom: Partner <news@partner.example>\r\nTo: list@lists.example.org\r\nSubject: through the list\r\n\r\nHello list.\r\n');
    const signed = py(['sign', 'partner.example', 'p2', author.keyFile, 'rsa-sha256', 'relaxed/relaxed'], original);
    assert.equal(signed.status, 0, signed.stderr.toString());
    const footered = Buffer.concat([signed.stdout, Buffer.from('-- \r\nThe example list\r\n')]);
    const sealed = py(['arcsign', 'lists.example.org', 'arc1', list.keyFile, 'lists.example.org'], footered);
    assert.equal(sealed.status, 0, sealed.stderr.toString());
    const forwarded = join(dir, 'forwarded.eml');
    writeFileSync(forwarded, sealed.stdout);
    assert.equal((await pf.swaks(['--from', 'list-bounces@lists.example.org', '--to', 'bob@example.test', '--data', forwarded])).code, 0);

    const delivered = await pf.waitForDelivered(2);
    const out = delivered.find((m) => m.raw.includes('Signed simple.'))!;
    assert.match(out.raw, /^Subject:no space after the colon$/m, 'Postfix delivered the header as written');
    assert.match(header(out, 'DKIM-Signature')[0] ?? '', /c=simple\/simple/);
    const verified = py(['verify', JSON.stringify(records)], Buffer.from(out.raw, 'utf8'));
    assert.equal(verified.status, 0, `dkimpy on the delivered message: ${verified.stdout} ${verified.stderr}\n${out.raw}`);
    assert.equal(verified.stdout.toString().trim(), '[true]');

    const fwd = delivered.find((m) => header(m, 'Subject')[0] === 'through the list')!;
    assert.equal(header(fwd, 'ARC-Seal').length, 2, 'the list\'s set and Themis\'s');
    assert.match(header(fwd, 'ARC-Authentication-Results').join('\n'), /i=2; forwarder\.themis\.test;[\s\S]*dkim=fail[\s\S]*arc=pass/);
    const arc = py(['arcverify', JSON.stringify(records)], Buffer.from(fwd.raw, 'utf8'));
    assert.equal(arc.status, 0, `dkimpy arc_verify on the delivered message: ${arc.stdout} ${arc.stderr}\n${fwd.raw}`);
    assert.equal(JSON.parse(arc.stdout.toString()).cv, 'pass');
  });
});
