// DKIM signing and ARC sealing behind a real Sendmail 8.17 (test/helpers/sendmail.ts: a private,
// throwaway instance), keys on a DNS server the test runs on loopback, checked by dkimpy on the bytes
// Sendmail delivered: Sendmail offers SMFIP_HDR_LEADSPC as Postfix does, so a `simple/simple`
// signature over headers written `Subject:value` verifies, and a list's ARC-sealed message gets
// Themis's set on top, which dkimpy's arc_verify passes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { sendmailAvailable, sendmailUnavailableReason, startSendmail } from '../../../test/helpers/sendmail.ts';
import { SmtpConversation } from '../../../test/helpers/smtp.ts';
import { startThemis } from '../../../test/helpers/themis.ts';
import { makeKey, tempDir } from './helpers/mail.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/pydkim.py', import.meta.url));
const tools = spawnSync('/usr/bin/python3', ['-c', 'import dkim, authres; dkim.arc_sign'], { encoding: 'utf8' });
const skip = !sendmailAvailable()
  ? `sendmail not available: ${sendmailUnavailableReason()}`
  : tools.status !== 0
    ? `python3-dkim with ARC is not installed — apt-get install python3-dkim python3-authres (${tools.error?.message ?? tools.stderr.trim().split('\n').pop()})`
    : false;
if (skip) console.log(`# skipping DKIM through Sendmail: ${skip}`);
const py = (args: string[], input: Buffer) => spawnSync('/usr/bin/python3', [SCRIPT, ...args], { input, maxBuffer: 16 * 1024 * 1024 });
const header = (m: { headers: [string, string][] }, name: string) => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

describe('DKIM through a real Sendmail', { skip }, () => {
  it('a simple/simple signature over Name:value headers verifies as delivered; a forwarded list message gets an ARC set dkimpy validates', async (t) => {
    const own = makeKey('example.org', 'sm-simple');
    const author = makeKey('partner.example', 'p3');
    const list = makeKey('lists.example.org', 'arc1');
    const forwarder = makeKey('forwarder.themis.test', 'arc2026');
    const records: Record<string, string> = {};
    for (const k of [own, author, list, forwarder]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
    const dns = await startDnsServer(Object.fromEntries(Object.entries(records).map(([name, record]) => [name, { TXT: [record] }])));
    t.after(() => dns.close());
    const dir = tempDir();
    const file = join(dir, 'themis.config.json');
    const keys = [own, forwarder].map(({ domain, selector, keyFile }) => ({ domain, selector, keyFile }));
    writeFileSync(
      file,
      JSON.stringify({
        mta: 'sendmail',
        plugins: [{ plugin: 'themis-plugin-dkim', options: { dnsServers: [dns.address], dnsTimeout: 500, authservId: 'forwarder.themis.test', keys } }],
        policies: [
          { name: 'outbound', priority: 1, match: { source: '@example.org' }, dkim: { sign: { canonicalization: 'simple/simple' }, verify: { enabled: false } }, stopHere: true },
          { name: 'forward', priority: 2, match: { source: '@lists.example.org' }, dkim: { verify: { headers: { authenticationResults: true } }, seal: { domain: 'forwarder.themis.test' } } },
        ],
      }),
    );
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const sm = await startSendmail({ milter: `inet:${themis.port}@127.0.0.1` });
    t.after(() => sm.stop());
    const send = async (from: string, message: Buffer) => {
      const { smtp } = await SmtpConversation.open(sm.smtpPort);
      try {
        await smtp.command('EHLO client.example.org');
        const replies = await smtp.send(from, ['rcpt@example.test'], message.toString('latin1'));
        assert.equal(replies.at(-1)!.code, 250, replies.at(-1)!.text);
      } finally {
        await smtp.quit();
      }
    };

    await send('sender@example.org', Buffer.from('From: Sender <sender@example.org>\r\nTo: <rcpt@example.test>\r\nSubject:no space after the colon\r\nX-Spacing:   three spaces\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\n\r\nSigned simple behind Sendmail.\r\n'));

    const original = Buffer.from('Authentication-Results: lists.example.org; dkim=pass header.d=partner.example header.s=p3\r\nFrom: Partner <news@partner.example>\r\nTo: list@lists.example.org\r\nSubject: through the list\r\n\r\nHello list.\r\n');
    const signed = py(['sign', 'partner.example', 'p3', author.keyFile, 'rsa-sha256', 'relaxed/relaxed'], original);
    assert.equal(signed.status, 0, signed.stderr.toString());
    const sealed = py(['arcsign', 'lists.example.org', 'arc1', list.keyFile, 'lists.example.org'], Buffer.concat([signed.stdout, Buffer.from('-- \r\nThe example list\r\n')]));
    assert.equal(sealed.status, 0, sealed.stderr.toString());
    await send('list-bounces@lists.example.org', sealed.stdout);

    const delivered = await sm.waitForDelivered(2);
    const out = delivered.find((m) => m.raw.includes('Signed simple behind Sendmail.'))!;
    assert.match(out.raw, /^Subject:no space after the colon\r?$/m, 'Sendmail delivered the header as written');
    assert.match(header(out, 'DKIM-Signature')[0] ?? '', /c=simple\/simple/);
    const verified = py(['verify', JSON.stringify(records)], Buffer.from(out.raw, 'utf8'));
    assert.equal(verified.status, 0, `dkimpy on the delivered message: ${verified.stdout} ${verified.stderr}\n${out.raw}`);
    assert.equal(verified.stdout.toString().trim(), '[true]');

    const fwd = delivered.find((m) => header(m, 'Subject')[0] === 'through the list')!;
    assert.equal(header(fwd, 'ARC-Seal').length, 2);
    const arc = py(['arcverify', JSON.stringify(records)], Buffer.from(fwd.raw, 'utf8'));
    assert.equal(arc.status, 0, `dkimpy arc_verify on the delivered message: ${arc.stdout} ${arc.stderr}\n${fwd.raw}`);
    assert.equal(JSON.parse(arc.stdout.toString()).cv, 'pass');
  });
});
