// DMARC behind a real Postfix, with spf and dkim, every record served by a DNS server the test runs on
// loopback: a spoofed From: of a p=reject domain is refused with a 5xx at end of message; one of a
// p=quarantine domain goes to Postfix's hold queue; mail that passes through its own DKIM signature
// is delivered with one Authentication-Results carrying spf, dkim and dmarc.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../../../test/helpers/postfix.ts';
import { startThemis } from '../../../test/helpers/themis.ts';
import { mailauthSign, makeKey, tempDir } from '../../dkim/test/helpers/mail.ts';

const skip = postfixAvailable() ? false : postfixUnavailableReason();
if (skip) console.log(`# skipping DMARC through Postfix: ${skip}`);
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
});
