// SMTP reply formatting and header validation: what Postfix and Sendmail would refuse never leaves.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MilterError, checkHeaderName, checkReplyText, formatSocketSpec, formatSmtpReply, normaliseHeaderValue, parseSocketSpec } from '../../src/milter/index.ts';

const code = (c: string) => (e: unknown) => e instanceof MilterError && e.code === c;

describe('formatSmtpReply', () => {
  it('R8: a single line with an enhanced code', () => {
    assert.equal(formatSmtpReply({ code: 550, enhanced: '5.7.1', text: 'Denied' }, 5), '550 5.7.1 Denied');
  });
  it('R9: several lines, CRLF-separated, dash on all but the last', () => {
    assert.equal(formatSmtpReply({ code: 550, enhanced: '5.7.1', text: ['A', 'B'] }), '550-5.7.1 A\r\n550 5.7.1 B');
    assert.equal(formatSmtpReply({ code: 451, text: 'one\ntwo' }, 4), '451-one\r\n451 two');
  });
  it('escapes % for the MTA', () => {
    assert.equal(formatSmtpReply({ code: 550, text: '100% spam' }), '550 100%% spam');
  });
  it('refuses 2xx, a class that does not fit the decision, and a mismatched enhanced code', () => {
    assert.throws(() => formatSmtpReply({ code: 250 }), code('THEMIS_ERR_MILTER_BAD_REPLY'));
    assert.throws(() => formatSmtpReply({ code: 451 }, 5), code('THEMIS_ERR_MILTER_BAD_REPLY'));
    assert.throws(() => formatSmtpReply({ code: 550, enhanced: '4.7.1' }), code('THEMIS_ERR_MILTER_BAD_REPLY'));
    assert.throws(() => formatSmtpReply({ code: 550, enhanced: 'x.y.z' }), code('THEMIS_ERR_MILTER_BAD_REPLY'));
  });
  it('refuses CR/NUL inside a line, too many lines and too long lines', () => {
    assert.throws(() => formatSmtpReply({ code: 550, text: 'a\rb' }), code('THEMIS_ERR_MILTER_BAD_REPLY'));
    assert.throws(() => formatSmtpReply({ code: 550, text: Array(33).fill('x') }), code('THEMIS_ERR_MILTER_BAD_REPLY'));
    assert.throws(() => formatSmtpReply({ code: 550, text: 'x'.repeat(1000) }), code('THEMIS_ERR_MILTER_BAD_REPLY'));
  });
  it('421 is a valid tempfail (it closes the SMTP session)', () => {
    assert.equal(formatSmtpReply({ code: 421, enhanced: '4.7.0', text: 'Too busy' }, 4), '421 4.7.0 Too busy');
  });
  it('every formatted reply passes the client-side (Postfix-like) check', () => {
    for (const r of [{ code: 550, enhanced: '5.7.1', text: ['a', 'b', 'c'] }, { code: 421 }, { code: 452, enhanced: '4.5.3', text: 'too many' }]) {
      assert.equal(checkReplyText(formatSmtpReply(r)), undefined);
    }
    assert.match(checkReplyText('550 4.7.1 x')!, /class/);
    assert.match(checkReplyText('550-a\r\n551 b')!, /changes/);
  });
});

describe('header validation', () => {
  it('accepts RFC 5322 names and refuses others', () => {
    checkHeaderName('X-Themis-Result');
    for (const bad of ['', 'With Space', 'Colon:', 'Tab\t', 'Ümlaut']) assert.throws(() => checkHeaderName(bad), code('THEMIS_ERR_MILTER_BAD_HEADER'));
  });
  it('folds with LF, refuses injected lines and overlong lines', () => {
    assert.equal(normaliseHeaderValue('X', 'a\r\n\tb'), 'a\n\tb');
    assert.throws(() => normaliseHeaderValue('X', 'a\nBcc: evil@example.org'), code('THEMIS_ERR_MILTER_BAD_HEADER'));
    assert.throws(() => normaliseHeaderValue('X', 'a\n'), code('THEMIS_ERR_MILTER_BAD_HEADER'));
    assert.throws(() => normaliseHeaderValue('X', 'y'.repeat(997)), code('THEMIS_ERR_MILTER_BAD_HEADER'));
    assert.equal(normaliseHeaderValue('X', `${'y'.repeat(900)}\n ${'z'.repeat(900)}`).length, 1802);
  });
});

describe('socket specs', () => {
  it('reads the libmilter forms and the Postfix form', () => {
    assert.deepEqual(parseSocketSpec('inet:8440@127.0.0.1'), { kind: 'inet', host: '127.0.0.1', port: 8440, family: 4 });
    assert.deepEqual(parseSocketSpec('inet:127.0.0.1:8440'), { kind: 'inet', host: '127.0.0.1', port: 8440, family: 4 });
    assert.deepEqual(parseSocketSpec('inet6:8440@[::1]'), { kind: 'inet', host: '::1', port: 8440, family: 6 });
    assert.deepEqual(parseSocketSpec('inet:8440'), { kind: 'inet', host: '0.0.0.0', port: 8440, family: 4 });
    assert.deepEqual(parseSocketSpec('unix:/run/themis/milter.sock'), { kind: 'unix', path: '/run/themis/milter.sock' });
    assert.deepEqual(parseSocketSpec('local:/tmp/x'), { kind: 'unix', path: '/tmp/x' });
    assert.equal(formatSocketSpec(parseSocketSpec('inet6:25@[2001:db8::1]')), 'inet6:25@[2001:db8::1]');
  });
  it('says what is wrong with a bad spec', () => {
    for (const bad of ['tcp:25@x', 'inet:http@localhost', 'inet:70000@127.0.0.1', 'unix:', 'inet6:25@127.0.0.1', 'inet:25@']) {
      assert.throws(() => parseSocketSpec(bad), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_LISTEN_SPEC' && e.message.includes(JSON.stringify(bad)), bad);
    }
  });
});
