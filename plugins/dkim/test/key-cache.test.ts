// Key records parsed once across messages (verify.ts, sharedKeyCache): the record is still fetched for
// every message, so a rotated or revoked key is seen at once; the parsed records are bounded.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DnsResolver } from 'themis-milter/dns';
import { PARSED_KEYS_MAX, VerifyStream, parsedKeysHeld, sharedKeyCache } from '../src/verify.ts';
import { mailauthSign, makeKey, sampleMessage, splitMessage } from './helpers/mail.ts';

describe('the shared key-record cache', () => {
  it('a rotated, revoked or republished key is seen on the next message: only the parsing is shared', async () => {
    const key = makeKey('example.com', 'rot1');
    const other = makeKey('example.com', 'rot1');
    let record = key.record;
    let asked = 0;
    const resolver = (async (name: string) => {
      asked++;
      if (name !== 'rot1._domainkey.example.com') throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
      return [[record]];
    }) as unknown as DnsResolver;
    const { headers, body } = splitMessage(await mailauthSign(sampleMessage(), key));
    const verify = async () => {
      const v = new VerifyStream(headers.map(([name, raw]) => ({ name, value: raw.replace(/^ /, '').replace(/\r\n/g, '\n'), raw: raw.replace(/\r\n/g, '\n') })), { resolver, maxSignatures: 10, arc: false });
      await v.write(body);
      const r = await v.finish(5_000);
      return `${r.result}${r.results[0]?.reason ? ` (${r.results[0].reason})` : ''}`;
    };
    assert.equal(await verify(), 'pass');
    assert.equal(await verify(), 'pass');
    record = 'v=DKIM1; k=rsa; p=';
    assert.match(await verify(), /^permerror/, 'revoked');
    record = other.record;
    assert.match(await verify(), /^fail/, 'another key under the same selector');
    record = key.record;
    assert.equal(await verify(), 'pass', 'republished');
    assert.equal(asked, 5, 'DNS (the resolver and its TTL cache) asked for every message');
  });

  it(`at most ${PARSED_KEYS_MAX} parsed records are kept, the least recently used out first`, async () => {
    const resolver = (async (name: string) => [[`v=DKIM1; k=rsa; p=${Buffer.from(name).toString('base64')}`]]) as unknown as DnsResolver;
    const cache = sharedKeyCache(resolver);
    for (let i = 0; i < PARSED_KEYS_MAX + 500; i++) await cache.get('DKIM', `s${i}._domainkey.example.com`, 1024, { strict: true }).catch(() => undefined);
    assert.equal(parsedKeysHeld(), PARSED_KEYS_MAX);
    // Within a message, one question is asked once.
    let asked = 0;
    const counting = sharedKeyCache((async () => {
      asked++;
      return [['v=DKIM1; k=rsa; p=']];
    }) as unknown as DnsResolver);
    await Promise.allSettled([counting.get('DKIM', 'a._domainkey.example.com', 1024, { strict: true }), counting.get('AS', 'a._domainkey.example.com', 1024, { strict: true })]);
    assert.equal(asked, 1);
  });
});
