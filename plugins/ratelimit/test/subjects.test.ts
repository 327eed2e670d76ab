// Subjects: every kind's value for a message, normalization, the null sender, what does not apply,
// and keys that never contain an address.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NULL_SENDER, networkOf, parseSubject, subjectKey, subjectValues, type SubjectFacts } from '../src/index.ts';

const facts = (f: Partial<SubjectFacts> = {}): SubjectFacts => ({ sender: 'Alice@Example.COM', auth: undefined, clientIp: '192.0.2.77', recipients: ['b@x.example', 'C@x.example', 'b@X.example', 'd@y.example'], ...f });
const values = (by: string, f?: Partial<SubjectFacts>, cost: 'message' | 'recipient' = 'message') => subjectValues(parseSubject(by), facts(f), cost);

describe('subjects', () => {
  it('sender and sender+: lower-cased; sender+ is the SASL login when there is one', () => {
    assert.deepEqual(values('sender'), [{ value: 'alice@example.com', cost: 1 }]);
    assert.deepEqual(values('sender+'), [{ value: 'alice@example.com', cost: 1 }]);
    assert.deepEqual(values('sender+', { auth: 'Bob@Example.NET' }), [{ value: 'bob@example.net', cost: 1 }]);
  });

  it('senderDomain and senderDomain+; a login without a domain counts as itself', () => {
    assert.deepEqual(values('senderDomain'), [{ value: 'example.com', cost: 1 }]);
    assert.deepEqual(values('senderDomain+', { auth: 'bob@corp.example' }), [{ value: 'corp.example', cost: 1 }]);
    assert.deepEqual(values('senderDomain+', { auth: 'bob' }), [{ value: 'bob', cost: 1 }]);
  });

  it('the null sender is its own documented subject, <>', () => {
    assert.equal(NULL_SENDER, '<>');
    assert.deepEqual(values('sender', { sender: '' }), [{ value: '<>', cost: 1 }]);
    assert.deepEqual(values('senderDomain', { sender: '' }), [{ value: '<>', cost: 1 }]);
  });

  it('saslUser applies only with SMTP AUTH; clientIp only with a client address', () => {
    assert.deepEqual(values('saslUser'), []);
    assert.deepEqual(values('saslUser', { auth: 'Alice' }), [{ value: 'alice', cost: 1 }]);
    assert.deepEqual(values('clientIp', { clientIp: undefined }), []);
  });

  it('clientIp with prefixes: IPv4 /24, IPv6 /64 by default, the address alone at full length', () => {
    assert.deepEqual(values('clientIp'), [{ value: '192.0.2.77', cost: 1 }]);
    assert.deepEqual(values('clientIp/24'), [{ value: '192.0.2.0/24', cost: 1 }]);
    assert.deepEqual(values('clientIp', { clientIp: '2001:db8:1:2:3::4' }), [{ value: '2001:db8:1:2:0:0:0:0/64', cost: 1 }]);
    assert.deepEqual(values('clientIp/32/128', { clientIp: '2001:db8::4' }), [{ value: '2001:db8:0:0:0:0:0:4', cost: 1 }]);
    assert.equal(networkOf('10.1.2.3', 8, 64), '10.0.0.0/8');
    assert.equal(networkOf('::ffff:192.0.2.1', 32, 96), '0:0:0:0:0:ffff:0:0/96');
  });

  it('recipient and recipientDomain: one value per de-duplicated recipient or domain, cost by the cost rule', () => {
    assert.deepEqual(values('recipient'), [{ value: 'b@x.example', cost: 1 }, { value: 'c@x.example', cost: 1 }, { value: 'd@y.example', cost: 1 }]);
    assert.deepEqual(values('recipientDomain', {}, 'recipient'), [{ value: 'x.example', cost: 2 }, { value: 'y.example', cost: 1 }]);
    assert.deepEqual(values('recipientDomain', {}, 'message'), [{ value: 'x.example', cost: 1 }, { value: 'y.example', cost: 1 }]);
  });

  it('cost recipient counts accepted, de-duplicated recipients; policy is one shared budget', () => {
    assert.deepEqual(values('sender', {}, 'recipient'), [{ value: 'alice@example.com', cost: 3 }]);
    assert.deepEqual(values('policy', {}, 'recipient'), [{ value: '', cost: 3 }]);
  });

  it('composites join their parts and do not apply when a part is missing', () => {
    assert.deepEqual(values('saslUser+clientIp/24', { auth: 'alice' }), [{ value: 'alice|192.0.2.0/24', cost: 1 }]);
    assert.deepEqual(values('saslUser+clientIp'), []);
    assert.equal(parseSubject(['saslUser', 'clientIp/24']).name, 'saslUser+clientIp/24/64');
    assert.equal(parseSubject('sender++clientIp').name, 'sender++clientIp/32/64');
  });

  it('bad subjects are refused with the accepted forms', () => {
    assert.throws(() => parseSubject('senderr'), /unknown subject "senderr": expected .*sender\+/);
    assert.throws(() => parseSubject('clientIp/40'), /prefixes are 1–32/);
    assert.throws(() => parseSubject('recipient+sender'), /cannot be combined/);
  });

  it('keys are per policy and subject kind, hashed: no address in the key name', () => {
    const by = parseSubject('sender');
    const k1 = subjectKey('outbound', by, 'alice@example.com');
    assert.match(k1, /^rl:outbound:sender:[a-z2-7]{26}$/);
    assert.doesNotMatch(k1, /alice|example/);
    assert.notEqual(k1, subjectKey('inbound', by, 'alice@example.com'), 'two policies never share a counter');
    assert.notEqual(k1, subjectKey('outbound', parseSubject('sender+'), 'alice@example.com'));
  });
});
