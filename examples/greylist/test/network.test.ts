// The client part of a triplet and the store key: what is cut, what is kept, what is hashed.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientNetwork, formatDuration, normalizeClientAddress, parseDuration, tripletKey } from '../src/index.ts';

describe('clientNetwork', () => {
  it('cuts IPv4 to the prefix, /24 by default', () => {
    assert.equal(clientNetwork('198.51.100.7'), '198.51.100.0/24');
    assert.equal(clientNetwork('198.51.100.7', 16), '198.51.0.0/16');
    assert.equal(clientNetwork('198.51.100.7', 28), '198.51.100.0/28');
    assert.equal(clientNetwork('198.51.100.23', 28), '198.51.100.16/28');
    assert.equal(clientNetwork('198.51.100.7', 32), '198.51.100.7/32');
    assert.equal(clientNetwork('198.51.100.7', 0), '0.0.0.0/0');
  });

  it('cuts IPv6 to the prefix, /64 by default, whatever the spelling (compressed, embedded IPv4, zone)', () => {
    assert.equal(clientNetwork('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2:0:0:0:0/64');
    assert.equal(clientNetwork('2001:DB8:1:2::9'), '2001:db8:1:2:0:0:0:0/64');
    assert.equal(clientNetwork('2001:db8::1', 24, 48), '2001:db8:0:0:0:0:0:0/48');
    assert.equal(clientNetwork('2001:db8:1:2:3:4:5:6', 24, 56), '2001:db8:1:0:0:0:0:0/56');
    assert.equal(clientNetwork('2001:db8:1:2ff::', 24, 60), '2001:db8:1:2f0:0:0:0:0/60');
    assert.equal(clientNetwork('64:ff9b::198.51.100.7', 24, 128), '64:ff9b:0:0:0:0:c633:6407/128');
    assert.equal(clientNetwork('fe80::1%eth0'), 'fe80:0:0:0:0:0:0:0/64');
    assert.equal(clientNetwork('IPv6:2001:db8::1'), '2001:db8:0:0:0:0:0:0/64');
  });

  it('an IPv4-mapped IPv6 address is the IPv4 client it carries', () => {
    assert.equal(clientNetwork('::ffff:198.51.100.7'), '198.51.100.0/24');
    assert.equal(clientNetwork('::ffff:c633:6407'), '198.51.100.0/24');
    assert.equal(normalizeClientAddress('::FFFF:198.51.100.7'), '198.51.100.7');
  });

  it('is undefined for what is not an IP address', () => {
    for (const a of ['', 'unknown', 'localhost', '198.51.100', '2001:db8::1::2']) assert.equal(clientNetwork(a), undefined, a);
  });
});

describe('tripletKey', () => {
  it('greylist:<policy>:<32 hex>, the addresses compared without case and unreadable in the key', () => {
    const key = tripletKey('inbound', '198.51.100.0/24', 'Sender@Example.org', 'RCPT@example.net');
    assert.match(key, /^greylist:inbound:[0-9a-f]{32}$/);
    assert.equal(key, tripletKey('inbound', '198.51.100.0/24', 'sender@example.org', 'rcpt@example.net'));
    assert.doesNotMatch(key, /example|198/);
    assert.notEqual(key, tripletKey('outbound', '198.51.100.0/24', 'sender@example.org', 'rcpt@example.net'), 'each policy on its own');
    assert.notEqual(key, tripletKey('inbound', '198.51.100.0/25', 'sender@example.org', 'rcpt@example.net'), 'the prefix length is part of the network');
    assert.notEqual(tripletKey('inbound', 'n', 'ab', 'c'), tripletKey('inbound', 'n', 'a', 'bc'), 'the parts are separated');
  });
});

describe('durations', () => {
  it("parses '500ms', '30s', '5m', '2h', '36d' and whole ms; formats them back", () => {
    assert.deepEqual(['500ms', '30s', '5m', ' 2h ', '36d', 90_000].map(parseDuration), [500, 30_000, 300_000, 7_200_000, 3_110_400_000, 90_000]);
    for (const bad of ['5 minutes', '0s', '-5m', '1.5h', '', 0, 1.5, -1]) assert.equal(parseDuration(bad), undefined, String(bad));
    assert.deepEqual([300_000, 172_800_000, 90_000, 1_500].map(formatDuration), ['5m', '2d', '90s', '1500ms']);
  });
});
