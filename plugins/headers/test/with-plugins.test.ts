// The headers plugin with the real spf and ratelimit plugins (spf against a DNS server the test runs on
// loopback): rules read their notes (`{spf.result}`, `ratelimit.remaining`), and `onlyHeaders` keeps
// ratelimit from counting a policy's messages.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestKernel } from 'themis-milter/testing';
import ratelimit from 'themis-plugin-ratelimit';
import spf from 'themis-plugin-spf';
import { startDnsServer, type DnsServer } from '../../../test/helpers/dns.ts';
import headers from '../src/index.ts';

let dns: DnsServer;
before(async () => {
  dns = await startDnsServer({ 'forged.example': { TXT: ['v=spf1 ip4:198.51.100.0/24 -all'] }, 'good.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] } });
});
after(() => dns.close());

describe('headers with spf and ratelimit', () => {
  it('rules read the SPF result and the rate-limit usage that those plugins leave in their notes', async () => {
    const t = await createTestKernel({
      plugins: [headers, ratelimit, { plugin: spf, options: { dnsServers: [dns.address], dnsTimeout: 300, deadline: 1_000 } }],
      policies: [
        {
          name: 'inbound',
          spf: { mailFrom: { fail: 'ignore' }, headers: { receivedSpf: false, authenticationResults: false } },
          ratelimit: { windows: '3/1h', by: 'sender' },
          headers: [
            { name: 'spf', if: { note: 'spf.result', oneOf: ['fail', 'softfail'] }, then: [{ add: 'X-SPF-Warning', value: 'SPF {spf.result} for {spf.domain} ({spf.mechanism})' }] },
            { name: 'near-limit', if: { note: 'ratelimit.remaining', lte: 1 }, then: [{ add: 'X-Rate-Warning', value: '{ratelimit.used}/{ratelimit.limit} in {ratelimit.window}' }] },
          ],
        },
      ],
    });
    const send = (from: string) => t.message({ client: { address: '192.0.2.10' }, from, rcpt: ['r@example.net'] });
    const forged = await send('a@forged.example');
    assert.deepEqual(forged.modifications, [{ type: 'addHeader', name: 'X-SPF-Warning', value: 'SPF fail for forged.example (-all)' }]);
    assert.deepEqual((await send('b@good.example')).modifications, []);
    assert.deepEqual((await send('b@good.example')).modifications, [{ type: 'addHeader', name: 'X-Rate-Warning', value: '2/3 in 1h' }]);
    await t.close();
  });

  it('onlyHeaders: the policy’s messages are tagged and not rate-limited; without it the 2nd is refused', async () => {
    for (const onlyHeaders of [false, true, 'matched'] as const) {
      const t = await createTestKernel({
        plugins: [headers, ratelimit],
        policies: [{ name: 'scanned', ratelimit: { windows: '1/1h', by: 'sender' }, headers: { onlyHeaders, rules: [{ name: 'flag', if: { header: 'X-Spam-Flag', present: true }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }] }] } }],
      });
      const send = () => t.message({ from: 'a@example.org', rcpt: ['r@example.net'], headers: [['X-Spam-Flag', 'YES']] });
      assert.equal((await send()).decision.action, 'accept');
      const second = await send();
      assert.equal(second.decision.action, onlyHeaders === false ? 'tempfail' : 'accept', `onlyHeaders: ${onlyHeaders}`);
      if (onlyHeaders !== false) assert.deepEqual(second.modifications, [{ type: 'addHeader', name: 'X-Themis-Policy', value: 'scanned' }]);
      await t.close();
    }
  });
});
