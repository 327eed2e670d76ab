// The spf plugin's bounds (issue 21): the only thing it keeps between messages is its DNS cache,
// capped at `cacheEntries` (least recently used out) and at an hour per answer; it writes no store
// key. Distinct names are asked of a DNS server on loopback (every one NXDOMAIN, which is cached).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MemoryStore } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import spf from '../src/index.ts';
import { createResolver } from 'themis-milter/dns';
import { startDnsServer } from '../../../test/helpers/dns.ts';

let dns: Awaited<ReturnType<typeof startDnsServer>>;
before(async () => {
  dns = await startDnsServer({ 'strict.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] } });
});
after(() => dns.close());

describe('spf bounds', () => {
  it('5,000 distinct names: the cache holds cacheEntries answers, the most recent', async () => {
    const resolver = createResolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1, cache: { maxEntries: 100 } });
    let largest = 0;
    for (let i = 0; i < 5_000; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => resolver(`n${i + j}.unknown.example`, 'TXT').catch(() => undefined)));
      largest = Math.max(largest, resolver.cacheSize());
    }
    assert.equal(largest, 100);
    const asked = dns.queries();
    await resolver('n4999.unknown.example', 'TXT').catch(() => undefined);
    assert.equal(dns.queries(), asked, 'the latest answer is cached');
    await resolver('n0.unknown.example', 'TXT').catch(() => undefined);
    assert.equal(dns.queries(), asked + 1, 'the oldest was evicted');
  });

  it('through the kernel: messages from many sender domains write no store key', async () => {
    const store = new MemoryStore();
    await store.set('other:plugin', 'kept');
    const base = store.size;
    const k = await createTestKernel({ store, plugins: [{ plugin: spf, options: { dnsServers: [dns.address], dnsTimeout: 500, cacheEntries: 20 } }], policies: [{ name: 'in', spf: {} }] });
    for (let i = 0; i < 60; i++) await k.message({ from: `a@d${i}.unknown.example`, rcpt: ['r@dest.example'], client: { address: '198.51.100.7' }, helo: 'mx.strict.example' });
    assert.equal((await k.message({ from: 'a@strict.example', rcpt: ['r@dest.example'], client: { address: '192.0.2.7' } })).decision.action, 'accept');
    assert.equal(store.size, base);
    await k.close();
  });
});
