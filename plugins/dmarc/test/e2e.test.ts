// DMARC behind a real Postfix, with spf and dkim, every record served by a DNS server the test runs on
// loopback: a spoofed From: of a p=reject domain is refused with a 5xx at end of message; one of a
// p=quarantine domain goes to Postfix's hold queue; mail that passes through its own DKIM signature
// is delivered with one Authentication-Results carrying spf, dkim and dmarc; a p=reject author's message
// forwarded by a mailing list (footer added, ARC-sealed by dkimpy) is refused behind a policy that does
// not trust the list, delivered behind one that does (trusted_forwarder).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../../../test/helpers/postfix.ts';
import { startThemis } from '../../../test/helpers/themis.ts';
import { mailauthSign, makeKey, tempDir } from '../../dkim/test/helpers/mail.ts';

const skip = postfixAvailable() ? false : postfixUnavailableReason();
if (skip) console.log(`# skipping DMARC through Postfix: ${skip}`);
const PYDKIM = fileURLToPath(new URL('../../dkim/test/fixtures/pydkim.py', import.meta.url));
const arcTools = spawnSync('/usr/bin/python3', ['-c', 'import dkim, authres; dkim.arc_sign'], { encoding: 'utf8' });
const arcSkip = skip || (arcTools.status !== 0 ? `python3-dkim with ARC (python3-authres) is not installed — apt-get install python3-dkim python3-authres (${arcTools.error?.message ?? arcTools.stderr.trim().split('\n').pop()})` : false);
if (!skip && arcSkip) console.log(`# skipping the forwarded-list case: ${arcSkip}`);
const header = (m: { headers: [string, string][] }, name: string) => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

describe('DMARC through a real Postfix', { skip }, () => {
  it('refuses a spoofed p=reject From, holds a p=quarantine one, delivers aligned mail with one Authentication-Results', async (t) => {
    const own = makeKey('example.com', 'out1');
    const dns = await startDnsServer({
      // The attacker's envelope domain passes SPF from 127.0.0.1 (the test Postfix's client), but is not the From domain.
      'evil.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      'bank.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.bank.example': { TXT: ['v=DMARC1; p=reject; rua=mailto:dmarc@bank.example'] },
      'shop.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.shop.example': { TXT: ['v=DMARC1; p=quarantine'] },
      'example.com': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.example.com': { TXT: ['v=DMARC1; p=reject; adkim=s'] },
      'out1._domainkey.example.com': { TXT: [own.record] },
    });
    t.after(() => dns.close());
    const dir = tempDir();
    const file = join(dir, 'themis.config.json');
    const resolver = { dnsServers: [dns.address], dnsTimeout: 500, authservId: 'mx.themis.test' };
    writeFileSync(
      file,
      JSON.stringify({
        plugins: [
          { plugin: 'themis-plugin-spf', options: resolver },
          { plugin: 'themis-plugin-dkim', options: { ...resolver, keys: [{ domain: own.domain, selector: own.selector, keyFile: own.keyFile }] } },
          { plugin: 'themis-plugin-dmarc', options: resolver },
        ],
        policies: [
          {
            name: 'inbound',
            spf: { headers: { receivedSpf: false, authenticationResults: true } },
            dkim: { verify: { headers: { authenticationResults: true } } },
            dmarc: { headers: { authenticationResults: true } },
          },
        ],
      }),
    );
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    const spoofed = await pf.swaks(['--from', 'attacker@evil.example', '--to', 'victim@example.test', '--header', 'From: Your Bank <security@bank.example>', '--header', 'Subject: verify your account']);
    assert.match(spoofed.stdout, /<\*\* 550 5\.7\.1 .*DMARC.*bank\.example/);

    assert.equal((await pf.swaks(['--from', 'attacker@evil.example', '--to', 'victim@example.test', '--header', 'From: Shop <deals@shop.example>', '--header', 'Subject: deals'])).code, 0);
    assert.equal((await pf.waitForHeld(1)).length, 1, 'the p=quarantine message is in the hold queue');

    // Aligned through DKIM (strict): a message already signed by example.com's key (a first pass
    // through this Themis would sign it; here the key signs it in the test, as the sender's MTA would).
    const raw = await mailauthSign('From: Alice <alice@example.com>\r\nTo: bob@example.test\r\nSubject: aligned\r\n\r\nHello.\r\n', own);
    const eml = join(dir, 'aligned.eml');
    writeFileSync(eml, raw);
    assert.equal((await pf.swaks(['--from', 'alice@example.com', '--to', 'bob@example.test', '--data', eml])).code, 0);
    const [delivered] = await pf.waitForDelivered(1);
    assert.equal(header(delivered, 'Subject')[0], 'aligned');
    const ar = header(delivered, 'Authentication-Results');
    assert.equal(ar.length, 1, JSON.stringify(ar));
    assert.match(ar[0], /^mx\.themis\.test;\s+spf=fail smtp\.mailfrom=example\.com;\s+dkim=pass header\.d=example\.com header\.s=out1 [^;]*;\s+dmarc=pass \(p=reject dis=none\) header\.from=example\.com$/);
  });

  it('a p=reject author forwarded by an ARC-sealing list: refused when the sealer is not trusted, delivered when it is', { skip: arcSkip }, async (t) => {
    const author = makeKey('bank.example', 'b1');
    const list = makeKey('lists.example.org', 'arc1');
    const dns = await startDnsServer({
      'bank.example': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] },
      '_dmarc.bank.example': { TXT: ['v=DMARC1; p=reject'] },
      // The list relays from its own address: SPF passes for lists.example.org, which is not aligned.
      'lists.example.org': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      'b1._domainkey.bank.example': { TXT: [author.record] },
      'arc1._domainkey.lists.example.org': { TXT: [list.record] },
    });
    t.after(() => dns.close());
    const dir = tempDir();
    const file = join(dir, 'themis.config.json');
    const resolver = { dnsServers: [dns.address], dnsTimeout: 500, authservId: 'mx.themis.test' };
    const checks = { spf: { headers: { receivedSpf: false, authenticationResults: true } }, dkim: { verify: { headers: { authenticationResults: true } } } };
    writeFileSync(
      file,
      JSON.stringify({
        plugins: [
          { plugin: 'themis-plugin-spf', options: resolver },
          { plugin: 'themis-plugin-dkim', options: resolver },
          { plugin: 'themis-plugin-dmarc', options: resolver },
        ],
        policies: [
          { name: 'list-readers', priority: 1, match: { destination: 'reader@example.test' }, ...checks, dmarc: { headers: { authenticationResults: true }, arc: { trustedSealers: ['lists.example.org'] } }, stopHere: true },
          { name: 'inbound', priority: 2, ...checks, dmarc: { headers: { authenticationResults: true } } },
        ],
      }),
    );
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    // The author's MTA signs; the list checks it (its Authentication-Results), adds a footer (breaking
    // the signature) and seals i=1 with dkimpy.
    const signed = await mailauthSign('From: Alice <alice@bank.example>\r\nTo: list@lists.example.org\r\nSubject: through the list\r\n\r\nHello list.\r\n', author);
    const arrived = Buffer.concat([Buffer.from('Authentication-Results: lists.example.org; dkim=pass header.d=bank.example header.s=b1; dmarc=pass header.from=bank.example\r\n'), signed, Buffer.from('-- \r\nThe example list\r\n')]);
    const sealed = spawnSync('/usr/bin/python3', [PYDKIM, 'arcsign', 'lists.example.org', 'arc1', list.keyFile, 'lists.example.org'], { input: arrived });
    assert.equal(sealed.status, 0, sealed.stderr.toString());
    const eml = join(dir, 'forwarded.eml');
    writeFileSync(eml, sealed.stdout);

    const refused = await pf.swaks(['--from', 'list-bounces@lists.example.org', '--to', 'someone@example.test', '--data', eml]);
    assert.match(refused.stdout, /<\*\* 550 5\.7\.1 .*DMARC.*bank\.example/, 'an untrusted sealer changes nothing');

    assert.equal((await pf.swaks(['--from', 'list-bounces@lists.example.org', '--to', 'reader@example.test', '--data', eml])).code, 0);
    const [delivered] = await pf.waitForDelivered(1);
    assert.equal(header(delivered, 'Subject')[0], 'through the list');
    const ar = header(delivered, 'Authentication-Results').filter((v) => v.startsWith('mx.themis.test'));
    assert.equal(ar.length, 1, JSON.stringify(ar));
    assert.match(ar[0], /dkim=fail \(body hash did not verify\) header\.d=bank\.example/);
    assert.match(ar[0], /arc=pass \(i=1 as=lists\.example\.org\)/);
    assert.match(ar[0], /dmarc=fail \(p=reject dis=none arc=pass as=lists\.example\.org\) header\.from=bank\.example/);
  });
});
