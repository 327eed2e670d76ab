// checkSpf and createResolver against a real DNS server on loopback (test/helpers/dns.ts): real
// sockets, real timeouts, and a query counter to prove what the cache saves.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type DnsServer, type DnsZone } from '../../../test/helpers/dns.ts';
import { checkSpf, type SpfCheckOptions } from '../src/check.ts';
import { createResolver } from 'themis-milter/dns';

// Eleven includes: one more DNS-querying term than RFC 7208 §4.6.4 allows.
const tooMany = Array.from({ length: 11 }, (_, i) => `include:l${i}.example.org`).join(' ');

const ZONE: DnsZone = {
  'pass.example.org': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all', 'google-site-verification=xyz'] },
  'fail.example.org': { TXT: ['v=spf1 ip4:192.0.2.0/24 -all exp=exp.fail.example.org'] },
  'exp.fail.example.org': { TXT: ['%{i} is not allowed to send for %{d}'] },
  'soft.example.org': { TXT: ['v=spf1 ip4:192.0.2.0/24 ~all'] },
  'nospf.example.org': { TXT: ['just some text'], A: ['192.0.2.10'] },
  'mx.example.net': { TXT: ['v=spf1 a -all'], A: ['198.51.100.7'] },
  'chain.example.org': { TXT: ['v=spf1 include:c1.example.org -all'] },
  'c1.example.org': { TXT: ['v=spf1 include:c2.example.org ~all'] },
  'c2.example.org': { TXT: ['v=spf1 mx -all'], MX: [{ exchange: 'mail.c2.example.org', priority: 10 }] },
  'mail.c2.example.org': { A: ['203.0.113.25'], AAAA: ['2001:db8::25'] },
  'many.example.org': { TXT: [`v=spf1 ${tooMany} -all`] },
  ...Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`l${i}.example.org`, { TXT: ['v=spf1 -all'] }])),
  'void.example.org': { TXT: ['v=spf1 a:nx1.example.org a:nx2.example.org a:nx3.example.org -all'] },
  'slow.example.org': { TXT: ['v=spf1 include:timeout.example.org -all'] },
  'broken.example.org': { TXT: ['v=spf1 include:servfail.example.org -all'] },
  'big.example.org': { TXT: [`v=spf1 ${Array.from({ length: 40 }, (_, i) => `ip4:10.0.${i}.0/24`).join(' ')} -all`] },
  'types.example.org': {
    A: ['192.0.2.1', '192.0.2.2'],
    AAAA: ['2001:db8::1'],
    MX: [{ exchange: 'mx.example.net', priority: 5 }],
    TXT: ['v=spf1 -all', 'x'.repeat(300)],
  },
  '1.2.0.192.in-addr.arpa': { PTR: ['host.example.org'] },
};

let dns: DnsServer;
before(async () => {
  dns = await startDnsServer(ZONE, { timeoutNames: ['timeout.example.org'], servfailNames: ['servfail.example.org'] });
});
after(() => dns.close());

/** A fresh cacheless resolver, so every check reaches the server. */
const opts = (extra: SpfCheckOptions = {}): SpfCheckOptions => ({
  resolver: createResolver({ servers: [dns.address], timeoutMs: 500, tries: 1, cache: false }),
  receiver: 'mx.local',
  ...extra,
});

describe('checkSpf', () => {
  it('pass: exact Received-SPF and Authentication-Results values', async () => {
    const r = await checkSpf({ ip: '192.0.2.1', sender: 'alice@pass.example.org', helo: 'mx.example.net' }, opts());
    assert.equal(r.result, 'pass');
    assert.equal(r.identity, 'mailfrom');
    assert.equal(r.domain, 'pass.example.org');
    assert.equal(
      r.receivedSpf,
      'pass (mx.local: domain of alice@pass.example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="alice@pass.example.org"; helo=mx.example.net; receiver=mx.local; identity=mailfrom',
    );
    assert.equal(r.authResult, 'spf=pass smtp.mailfrom=pass.example.org');
  });

  it('fail carries the domain\'s explanation (macros expanded), not in the header', async () => {
    const r = await checkSpf({ ip: '203.0.113.9', sender: 'bob@fail.example.org', helo: 'mx.example.net' }, opts());
    assert.equal(r.result, 'fail');
    assert.equal(r.explanation, '203.0.113.9 is not allowed to send for fail.example.org');
    assert.equal(
      r.receivedSpf,
      'fail (mx.local: domain of bob@fail.example.org does not designate 203.0.113.9 as permitted sender) client-ip=203.0.113.9; envelope-from="bob@fail.example.org"; helo=mx.example.net; receiver=mx.local; identity=mailfrom',
    );
    assert.equal(r.authResult, 'spf=fail smtp.mailfrom=fail.example.org');
  });

  it('softfail', async () => {
    const r = await checkSpf({ ip: '203.0.113.9', sender: 'c@soft.example.org', helo: 'h.example.net' }, opts());
    assert.equal(r.result, 'softfail');
    assert.match(r.receivedSpf, /^softfail \(mx\.local: domain of transitioning c@soft\.example\.org does not designate 203\.0\.113\.9 as permitted sender\) /);
  });

  it('none: no SPF record, and no domain at all', async () => {
    const a = await checkSpf({ ip: '192.0.2.1', sender: 'd@nospf.example.org', helo: 'h.example.net' }, opts());
    assert.equal(a.result, 'none');
    assert.equal(a.receivedSpf, 'none (mx.local: nospf.example.org does not designate permitted sender hosts) client-ip=192.0.2.1; envelope-from="d@nospf.example.org"; helo=h.example.net; receiver=mx.local; identity=mailfrom');
    assert.equal(a.authResult, 'spf=none smtp.mailfrom=nospf.example.org');
    const b = await checkSpf({ ip: '192.0.2.1', sender: 'd@nx.example.org', helo: 'h.example.net' }, opts());
    assert.equal(b.result, 'none');
  });

  it('null sender: the HELO identity (postmaster@<helo>), no envelope-from', async () => {
    const r = await checkSpf({ ip: '198.51.100.7', sender: '', helo: 'mx.example.net' }, opts());
    assert.equal(r.result, 'pass');
    assert.equal(r.identity, 'helo');
    assert.equal(r.domain, 'mx.example.net');
    assert.equal(
      r.receivedSpf,
      'pass (mx.local: domain of postmaster@mx.example.net designates 198.51.100.7 as permitted sender) client-ip=198.51.100.7; helo=mx.example.net; receiver=mx.local; identity=helo',
    );
    assert.equal(r.authResult, 'spf=pass smtp.helo=mx.example.net');
    const bad = await checkSpf({ ip: '192.0.2.99', sender: '', helo: 'mx.example.net' }, opts());
    assert.equal(bad.result, 'fail');
    assert.equal(bad.authResult, 'spf=fail smtp.helo=mx.example.net');
  });

  it('identity: helo checks the HELO name even with a sender', async () => {
    const r = await checkSpf({ ip: '198.51.100.7', sender: 'x@fail.example.org', helo: 'mx.example.net' }, opts({ identity: 'helo' }));
    assert.equal(r.result, 'pass');
    assert.equal(r.identity, 'helo');
    assert.equal(r.authResult, 'spf=pass smtp.helo=mx.example.net');
  });

  it('include chain down to an mx mechanism (IPv4 and IPv6)', async () => {
    assert.equal((await checkSpf({ ip: '203.0.113.25', sender: 'e@chain.example.org', helo: 'h' }, opts())).result, 'pass');
    assert.equal((await checkSpf({ ip: '2001:db8::25', sender: 'e@chain.example.org', helo: 'h' }, opts())).result, 'pass');
    assert.equal((await checkSpf({ ip: '203.0.113.26', sender: 'e@chain.example.org', helo: 'h' }, opts())).result, 'fail');
  });

  it('more than 10 DNS-querying terms → permerror with a problem', async () => {
    const r = await checkSpf({ ip: '192.0.2.1', sender: 'f@many.example.org', helo: 'h' }, opts());
    assert.equal(r.result, 'permerror');
    assert.equal(r.problem, 'Too many DNS requests');
    assert.match(r.receivedSpf, /; problem="Too many DNS requests"$/);
    assert.equal(r.authResult, 'spf=permerror smtp.mailfrom=many.example.org');
  });

  it('more than 2 void lookups → permerror', async () => {
    const r = await checkSpf({ ip: '192.0.2.1', sender: 'g@void.example.org', helo: 'h' }, opts());
    assert.equal(r.result, 'permerror');
    assert.equal(r.problem, 'Too many void DNS results');
  });

  it('a DNS server that never answers → temperror within the deadline, never fail', async () => {
    // Per-query timeout longer than the deadline: the deadline must win. (The orphaned query runs
    // on until its own timeout, so keep that modest.)
    const resolver = createResolver({ servers: [dns.address], timeoutMs: 1500, tries: 1, cache: false });
    const start = Date.now();
    const r = await checkSpf({ ip: '192.0.2.1', sender: 'h@slow.example.org', helo: 'h' }, { resolver, receiver: 'mx.local', timeoutMs: 400 });
    const elapsed = Date.now() - start;
    assert.equal(r.result, 'temperror');
    assert.ok(elapsed < 1500, `took ${elapsed} ms`);
    assert.equal(r.authResult, 'spf=temperror smtp.mailfrom=slow.example.org');
    // And with the per-query timeout shorter than the deadline: the resolver's ETIMEOUT.
    const r2 = await checkSpf({ ip: '192.0.2.1', sender: 'h@slow.example.org', helo: 'h' }, opts({ timeoutMs: 3000 }));
    assert.equal(r2.result, 'temperror');
    assert.equal(r2.problem, 'DNS timeout');
  });

  it('SERVFAIL → temperror', async () => {
    const r = await checkSpf({ ip: '192.0.2.1', sender: 'i@broken.example.org', helo: 'h' }, opts());
    assert.equal(r.result, 'temperror');
    assert.equal(r.receivedSpf.startsWith('temperror (mx.local: error in processing during lookup of i@broken.example.org) '), true);
  });

  it('an invalid client IP is temperror, not fail', async () => {
    assert.equal((await checkSpf({ ip: 'not-an-ip', sender: 'a@fail.example.org', helo: 'h' }, opts())).result, 'temperror');
  });

  it('header injection through HELO and MAIL FROM is neutralised', async () => {
    const r = await checkSpf(
      { ip: '192.0.2.1', sender: 'a"b\\c)(\r\nX-Evil: 1@pass.example.org', helo: 'h.example.net\r\nX-Injected: yes; receiver=evil' },
      opts(),
    );
    for (const v of [r.receivedSpf, r.authResult]) {
      assert.doesNotMatch(v, /[\r\n\0]/);
    }
    assert.equal(
      r.receivedSpf,
      `${r.result} (mx.local: domain of a"b\\\\c\\)\\(X-Evil: 1@pass.example.org designates 192.0.2.1 as permitted sender) client-ip=192.0.2.1; envelope-from="a\\"b\\\\c)(X-Evil: 1@pass.example.org"; helo="h.example.netX-Injected: yes; receiver=evil"; receiver=mx.local; identity=mailfrom`,
    );
    const h = await checkSpf({ ip: '192.0.2.1', sender: '', helo: 'evil"\r\nX: y' }, opts());
    assert.doesNotMatch(h.receivedSpf + h.authResult, /[\r\n]/);
    assert.match(h.authResult, /^spf=\w+ smtp\.helo="evil\\"X: y"$/);
  });
});

describe('createResolver', () => {
  it('answers like dns.promises.resolve', async () => {
    const resolve = createResolver({ servers: [dns.address], timeoutMs: 500, tries: 1 });
    assert.deepEqual(await resolve('types.example.org', 'A'), ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual(await resolve('types.example.org', 'AAAA'), ['2001:db8::1']);
    assert.deepEqual(await resolve('types.example.org', 'MX'), [{ exchange: 'mx.example.net', priority: 5 }]);
    assert.deepEqual(await resolve('1.2.0.192.in-addr.arpa', 'PTR'), ['host.example.org']);
    // A long TXT string comes as 255-byte chunks, and the answer is too big for UDP: TCP fallback.
    assert.deepEqual(await resolve('TYPES.example.org.', 'TXT'), [['v=spf1 -all'], ['x'.repeat(255), 'x'.repeat(45)]]);
    assert.equal(((await resolve('big.example.org', 'TXT')) as string[][])[0].join('').length > 512, true);
    await assert.rejects(resolve('nx.example.org', 'TXT'), { code: 'ENOTFOUND' });
    await assert.rejects(resolve('nospf.example.org', 'MX'), { code: 'ENODATA' });
    await assert.rejects(resolve('servfail.example.org', 'TXT'), { code: 'ESERVFAIL' });
    await assert.rejects(resolve(`${'a'.repeat(64)}.example.org`, 'TXT'), { code: 'EBADNAME' });
    await assert.rejects(createResolver({ servers: [dns.address], timeoutMs: 100, tries: 2 })('timeout.example.org', 'TXT'), { code: 'ETIMEOUT' });
  });

  it('accepts ip, ip:port and [v6]:port servers, and rejects nonsense', () => {
    createResolver({ servers: ['192.0.2.53', '192.0.2.53:5353', '[2001:db8::53]:53', '2001:db8::53'] });
    assert.throws(() => createResolver({ servers: ['dns.example.org'] }), TypeError);
  });

  it('a second identical check sends no DNS query', async () => {
    const resolver = createResolver({ servers: [dns.address], timeoutMs: 500, tries: 1 });
    const input = { ip: '203.0.113.25', sender: 'e@chain.example.org', helo: 'h' };
    const first = dns.queries();
    assert.equal((await checkSpf(input, { resolver })).result, 'pass');
    const sent = dns.queries() - first;
    assert.ok(sent >= 4, `first check sent ${sent} queries`);
    assert.equal((await checkSpf(input, { resolver })).result, 'pass');
    assert.equal(dns.queries() - first, sent);
  });

  it('negative answers are cached; timeouts and SERVFAIL are not', async () => {
    const resolve = createResolver({ servers: [dns.address], timeoutMs: 100, tries: 1 });
    const q0 = dns.queries();
    await assert.rejects(resolve('nx.example.org', 'TXT'), { code: 'ENOTFOUND' });
    await assert.rejects(resolve('nx.example.org', 'TXT'), { code: 'ENOTFOUND' });
    assert.equal(dns.queries() - q0, 1);
    const q1 = dns.queries();
    await assert.rejects(resolve('servfail.example.org', 'TXT'), { code: 'ESERVFAIL' });
    await assert.rejects(resolve('servfail.example.org', 'TXT'), { code: 'ESERVFAIL' });
    await assert.rejects(resolve('timeout.example.org', 'TXT'), { code: 'ETIMEOUT' });
    await assert.rejects(resolve('timeout.example.org', 'TXT'), { code: 'ETIMEOUT' });
    assert.equal(dns.queries() - q1, 4);
    assert.equal(resolve.cacheSize(), 1);
  });

  it('entries expire with their TTL (and the TTL bounds apply)', async () => {
    let clock = 1_000_000;
    const resolve = createResolver({ servers: [dns.address], timeoutMs: 500, tries: 1, now: () => clock });
    const q0 = dns.queries();
    await resolve('types.example.org', 'A');
    clock += 299_000;
    await resolve('types.example.org', 'A');
    assert.equal(dns.queries() - q0, 1, 'still fresh at 299 s of 300');
    clock += 2_000;
    await resolve('types.example.org', 'A');
    assert.equal(dns.queries() - q0, 2, 'expired after 300 s');

    const capped = createResolver({ servers: [dns.address], timeoutMs: 500, tries: 1, now: () => clock, cache: { maxTtlSeconds: 10 } });
    const q1 = dns.queries();
    await capped('types.example.org', 'A');
    clock += 11_000;
    await capped('types.example.org', 'A');
    assert.equal(dns.queries() - q1, 2, 'maxTtlSeconds caps the 300 s TTL');
  });

  it('the cache is bounded, least recently used out first; clear() empties it', async () => {
    const resolve = createResolver({ servers: [dns.address], timeoutMs: 500, tries: 1, cache: { maxEntries: 3 } });
    for (const n of ['l0', 'l1', 'l2']) await resolve(`${n}.example.org`, 'TXT');
    await resolve('l0.example.org', 'TXT'); // l0 is now the most recently used
    await resolve('l3.example.org', 'TXT'); // evicts l1
    assert.equal(resolve.cacheSize(), 3);
    const q0 = dns.queries();
    await resolve('l0.example.org', 'TXT');
    assert.equal(dns.queries() - q0, 0, 'l0 kept');
    await resolve('l1.example.org', 'TXT');
    assert.equal(dns.queries() - q0, 1, 'l1 evicted');
    resolve.clear();
    assert.equal(resolve.cacheSize(), 0);
  });

  it('concurrent identical questions share one query', async () => {
    const resolve = createResolver({ servers: [dns.address], timeoutMs: 500, tries: 1 });
    const q0 = dns.queries();
    await Promise.all(Array.from({ length: 5 }, () => resolve('pass.example.org', 'TXT')));
    assert.equal(dns.queries() - q0, 1);
  });
});

describe('checkSpf: the deciding mechanism', () => {
  it('names the term that decided, and stays silent when it cannot be sure', async (t) => {
    const dns = await startDnsServer({
      'mech.example': { TXT: ['v=spf1 ip4:192.0.2.0/24 a:host.mech.example mx include:inc.mech.example ~all'], MX: [{ exchange: 'mx.mech.example', priority: 10 }] },
      'host.mech.example': { A: ['198.51.100.1'] },
      'mx.mech.example': { A: ['198.51.100.2'] },
      'inc.mech.example': { TXT: ['v=spf1 ip4:203.0.113.0/24 -all'] },
      'ptr.mech.example': { TXT: ['v=spf1 ptr -all'] },
      'redir.mech.example': { TXT: ['v=spf1 redirect=inc.mech.example'] },
    });
    t.after(() => dns.close());
    const resolver = createResolver({ servers: [dns.address] });
    const mech = async (ip: string, domain = 'mech.example') => (await checkSpf({ ip, sender: `a@${domain}`, helo: 'h.example' }, { resolver })).mechanism;
    assert.equal(await mech('192.0.2.7'), 'ip4:192.0.2.0/24');
    assert.equal(await mech('198.51.100.1'), 'a:host.mech.example');
    assert.equal(await mech('198.51.100.2'), 'mx');
    assert.equal(await mech('203.0.113.9'), 'include:inc.mech.example');
    assert.equal(await mech('10.1.1.1'), '~all');
    assert.equal(await mech('10.1.1.1', 'ptr.mech.example'), undefined, 'ptr is not re-evaluated: unknown rather than wrong');
    assert.equal(await mech('203.0.113.9', 'redir.mech.example'), 'redirect=inc.mech.example');
    const r = await checkSpf({ ip: '10.1.1.1', sender: 'a@mech.example', helo: 'h.example' }, { resolver });
    assert.equal(r.header, r.receivedSpf);
  });
});
