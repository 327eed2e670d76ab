// SPF behind a real Postfix with real DNS lookups against a DNS server the test runs on loopback:
// a message from an unauthorised IP for a -all domain is tagged or refused as its policy says, the
// delivered message carries Received-SPF and Authentication-Results with the right result, and a DNS
// server that never answers yields temperror and the configured verdict.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../../../test/helpers/postfix.ts';
import { startThemis } from '../../../test/helpers/themis.ts';

const skip = postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}`;
const header = (m: { headers: [string, string][] }, name: string) => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

describe('spf through a real Postfix', { skip }, () => {
  it('tags or refuses by policy; Received-SPF and Authentication-Results on delivered mail, forged ones removed; temperror from a silent DNS server', async (t) => {
    // Postfix's test instance relays from 127.0.0.1: that is the client IP the policies see.
    const dns = await startDnsServer(
      {
        'tagged.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
        'refused.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] },
        'good.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
        'silent.example': { TXT: ['v=spf1 -all'] },
      },
      { timeoutNames: ['silent.example'] },
    );
    t.after(() => dns.close());
    const dir = mkdtempSync(join(tmpdir(), 'themis-spf-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    writeFileSync(
      file,
      JSON.stringify({
        plugins: [{ plugin: 'themis-plugin-spf', options: { dnsServers: [dns.address], dnsTimeout: 300, deadline: 2_000, authservId: 'mx.themis.test' } }],
        policies: [
          { name: 'refuse', priority: 1, match: { source: '@refused.example' }, spf: { mailFrom: { fail: 'reject' } }, stopHere: true },
          { name: 'silent', priority: 2, match: { source: '@silent.example' }, spf: { mailFrom: { temperror: 'tempfail' } }, stopHere: true },
          { name: 'inbound', priority: 3, spf: { headers: { receivedSpf: true, authenticationResults: true } } },
        ],
      }),
    );
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    const refused = await pf.swaks(['--from', 'a@refused.example', '--to', 'r@example.test', '--header', 'Subject: refused']);
    assert.match(refused.stdout, /<\*\* 550 5\.7\.23 SPF fail for refused\.example/);
    const silent = await pf.swaks(['--from', 'a@silent.example', '--to', 'r@example.test', '--header', 'Subject: silent']);
    assert.match(silent.stdout, /<\*\* 451 4\.7\.24 SPF check of silent\.example failed temporarily/);
    assert.equal((await pf.swaks(['--from', 'a@tagged.example', '--to', 'r@example.test', '--header', 'Subject: tagged'])).code, 0);
    // Authentication-Results claiming our authserv-id arrive with it: forged, they must go (RFC 8601 §5).
    const forged = ['--add-header', 'Authentication-Results: mx.themis.test; spf=pass smtp.mailfrom=forged.example', '--add-header', 'Authentication-Results: relay.example.org; dkim=pass header.d=example.org', '--add-header', 'Authentication-Results: MX.themis.test; dkim=pass header.d=forged.example'];
    assert.equal((await pf.swaks(['--from', 'a@good.example', '--to', 'r@example.test', '--header', 'Subject: good', ...forged])).code, 0);

    const delivered = await pf.waitForDelivered(2);
    const bySubject = new Map(delivered.map((m) => [header(m, 'Subject')[0], m]));
    const tagged = bySubject.get('tagged')!;
    assert.equal(header(tagged, 'Received-SPF').length, 1);
    assert.match(header(tagged, 'Received-SPF')[0], /^fail .*client-ip=127\.0\.0\.1;.*identity=mailfrom/);
    assert.deepEqual(header(tagged, 'Authentication-Results'), ['mx.themis.test; spf=fail smtp.mailfrom=tagged.example']);
    assert.deepEqual(header(tagged, 'X-Themis-SPF'), ['fail']);
    const good = bySubject.get('good')!;
    assert.match(header(good, 'Received-SPF')[0], /^pass /);
    assert.deepEqual(header(good, 'Authentication-Results'), ['mx.themis.test; spf=pass smtp.mailfrom=good.example', 'relay.example.org; dkim=pass header.d=example.org']);
    assert.deepEqual(header(good, 'X-Themis-SPF'), []);
  });
});
