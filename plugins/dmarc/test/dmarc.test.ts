// The DMARC evaluation on its own (src/dmarc.ts): the From domain of awkward headers, record parsing
// (RFC 7489 §6.3: unknown tags ignored, bad values defaulted, no valid policy → no processing), the
// organizational domain from the public suffix list, alignment, temperror for an aligned identifier
// that could not be checked, and resolvers that fail in every way: each a result, never a throw.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createResolver } from 'themis-milter/dns';
import { aligned, authorDomain, evaluateDmarc, mailboxDomains, organizationalDomain, parseRecord } from '../src/dmarc.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';

const from = (value: string) => [{ name: 'From', value }];

let dns: Awaited<ReturnType<typeof startDnsServer>>;
before(async () => {
  dns = await startDnsServer({ '_dmarc.example.com': { TXT: ['v=DMARC1; p=reject; adkim=s'] }, '_dmarc.co.uk': { TXT: ['v=DMARC1; p=reject'] } });
});
after(() => dns.close());

describe('dmarc evaluation', () => {
  it('the From domain: display names, comments, quoted commas, groups, routes; several domains or none', () => {
    assert.deepEqual(mailboxDomains('"Doe, John" <john@Example.COM.> (work), jane@example.com'), ['example.com', 'example.com']);
    assert.deepEqual(mailboxDomains('team: a@x.example, b@y.example;'), ['x.example', 'y.example']);
    assert.deepEqual(mailboxDomains('<@relay.example:ceo@bank.example>'), ['bank.example']);
    assert.deepEqual(mailboxDomains('"a@evil.example" <ceo@bank.example>'), ['bank.example']);
    assert.deepEqual(mailboxDomains('"<a@evil.example>" <ceo@bank.example>'), ['bank.example']);
    assert.deepEqual(mailboxDomains('"a\\"<b@evil.example>" <ceo@bank.example>'), ['bank.example']);
    assert.deepEqual(mailboxDomains('<"odd>@"@bank.example>'), ['bank.example']);
    assert.deepEqual(mailboxDomains('Foo <a@evil.example> <ceo@bank.example>'), [undefined]);
    assert.deepEqual(mailboxDomains('Foo <a@evil.example <ceo@bank.example>'), [undefined]);
    assert.deepEqual(mailboxDomains('<ceo@bank.example'), ['bank.example']);
    assert.deepEqual(authorDomain(from('A <a@example.com>')), { domain: 'example.com' });
    assert.equal((authorDomain(from('a@x.example, b@y.example')) as { result: string }).result, 'permerror');
    assert.equal((authorDomain(from('a@x.example, nobody')) as { result: string }).result, 'permerror');
    assert.equal((authorDomain(from('undisclosed-recipients:;')) as { result: string }).result, 'none');
    assert.equal((authorDomain([]) as { result: string }).result, 'none');
    assert.equal((authorDomain([...from('a@x.example'), ...from('a@x.example')]) as { result: string }).result, 'permerror');
    for (const v of ['', ',,,', '<<<>>>', '(((', '"unterminated', '@', 'a@', 'a@.', `a@${'b.'.repeat(200)}example`, 'a@exa mple.com', '\u0000@\u0000']) {
      const r = authorDomain(from(v));
      assert.ok('domain' in r, v);
    }
  });

  it('records: defaults, unknown tags, case, bad values, no valid policy', () => {
    assert.deepEqual(parseRecord('v=DMARC1; p=reject', 'example.com'), { raw: 'v=DMARC1; p=reject', domain: 'example.com', p: 'reject', sp: 'reject', adkim: 'r', aspf: 'r', pct: 100 });
    assert.deepEqual({ ...parseRecord('v=DMARC1;P=Quarantine; SP=none; ADKIM=S; aspf=s; pct=25; foo=bar', 'd')!, raw: '' }, { raw: '', domain: 'd', p: 'quarantine', sp: 'none', adkim: 's', aspf: 's', pct: 25 });
    for (const pct of ['-1', '101', '1e2', '50.5', '', 'x', '9'.repeat(50)]) assert.equal(parseRecord(`v=DMARC1; p=reject; pct=${pct}`, 'd')!.pct, 100, pct);
    assert.equal(parseRecord('v=DMARC1; p=reject; pct=0', 'd')!.pct, 0);
    assert.equal(parseRecord('v=DMARC1', 'd'), undefined);
    assert.equal(parseRecord('v=DMARC1; p=reject; sp=smite', 'd'), undefined);
    assert.equal(parseRecord('v=DMARC1; rua=mailto:r@d', 'd')!.p, 'none');
    assert.equal(parseRecord('v=DMARC1; p=x; rua=not a uri', 'd'), undefined);
  });

  it('organizational domains from the public suffix list; alignment', () => {
    assert.equal(organizationalDomain('a.b.example.com'), 'example.com');
    assert.equal(organizationalDomain('mail.example.co.uk'), 'example.co.uk');
    assert.equal(organizationalDomain('co.uk'), 'co.uk');
    assert.equal(aligned('mail.example.co.uk', 'example.co.uk', 'r'), true);
    assert.equal(aligned('other.co.uk', 'example.co.uk', 'r'), false);
    assert.equal(aligned('mail.example.co.uk', 'example.co.uk', 's'), false);
    assert.equal(aligned('EXAMPLE.co.uk.', 'example.co.uk', 's'), true);
    assert.equal(aligned('', 'example.com', 'r'), false);
  });

  it('the public suffix\'s own record is not an organizational domain\'s', async () => {
    const resolver = createResolver({ servers: [dns.address], timeoutMs: 300 });
    const e = await evaluateDmarc({ headers: from('a@example.co.uk'), dkim: [] }, { resolver });
    assert.equal(e.result, 'none');
    const s = await evaluateDmarc({ headers: from('a@example.com'), dkim: [{ domain: 'mail.example.com', result: 'pass' }] }, { resolver });
    assert.deepEqual([s.result, s.disposition], ['fail', 'reject']);
  });

  it('an aligned identifier that could not be checked makes temperror, not fail', async () => {
    const resolver = createResolver({ servers: [dns.address], timeoutMs: 300 });
    const dkimTemp = await evaluateDmarc({ headers: from('a@example.com'), dkim: [{ domain: 'example.com', result: 'temperror' }] }, { resolver });
    assert.equal(dkimTemp.result, 'temperror');
    const spfTemp = await evaluateDmarc({ headers: from('a@example.com'), spf: { result: 'temperror', domain: 'example.com' }, dkim: [] }, { resolver });
    assert.equal(spfTemp.result, 'temperror');
    const unaligned = await evaluateDmarc({ headers: from('a@example.com'), spf: { result: 'temperror', domain: 'other.example' }, dkim: [] }, { resolver });
    assert.equal(unaligned.result, 'fail');
  });

  it('resolvers that fail in every way: a result, never a throw', async () => {
    const resolvers = [
      async () => { throw Object.assign(new Error('x'), { code: 'ETIMEOUT' }); },
      async () => { throw Object.assign(new Error('x'), { code: 'ESERVFAIL' }); },
      async () => { throw 'a string'; },
      async () => { throw null; },
      () => { throw new Error('synchronous'); },
      async () => undefined,
      async () => 'not an array',
      async () => [[Buffer.from('v=DMARC1; p=reject')]],
      async () => [null, 42, ['v=DMARC1; ', 'p=quarantine']],
      async () => [['v=DMARC1; p=reject'], ['v=DMARC1; p=reject']],
    ];
    const results = [];
    for (const resolver of resolvers) {
      const e = await evaluateDmarc({ headers: from('a@example.com'), dkim: [{ domain: 'x', result: 'pass' }, { domain: '', result: 'pass' }] }, { resolver: resolver as never });
      results.push(e.result);
    }
    assert.deepEqual(results, ['temperror', 'temperror', 'temperror', 'temperror', 'temperror', 'none', 'none', 'fail', 'fail', 'none']);
  });
});
