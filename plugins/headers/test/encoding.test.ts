// Header text helpers: unfolding, RFC 2047 decoding and encoding, sanitising and folding.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeWords, encodeWords, fold, sanitise, unfold } from '../src/encoding.ts';

describe('header text', () => {
  it('unfolds LF and CRLF folds, keeping the continuation whitespace', () => {
    assert.equal(unfold('a\n\tb\r\n c'), 'a\tb c');
    assert.equal(unfold('plain'), 'plain');
  });

  it('decodes encoded words: adjacent ones join, others keep the text between them', () => {
    assert.equal(decodeWords('=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?='), 'éé');
    assert.equal(decodeWords('a =?UTF-8?Q?=C3=A9?= b'), 'a é b');
    assert.equal(decodeWords('=?UTF-8?B?4oKs?=\t=?ISO-8859-15?Q?=A4?='), '€€', 'whitespace between two encoded words goes, even across charsets');
    assert.equal(decodeWords('=?utf-8*en?Q?hi?='), 'hi', 'RFC 2231 language tags are allowed');
    assert.equal(decodeWords('=?UTF-8?B?4o?= =?UTF-8?B?gqw=?='), '€', 'a character split over two words comes out whole');
  });

  it('encodes non-ASCII as UTF-8 B words of at most 75 characters, leaving ASCII words readable', () => {
    const text = '[SPAM] ' + 'Grüße '.repeat(20) + 'end';
    const encoded = encodeWords(text);
    assert.ok(encoded.startsWith('[SPAM] =?UTF-8?B?'));
    assert.ok(encoded.endsWith(' end'));
    for (const word of encoded.split(' ')) assert.ok(word.length <= 75, word);
    assert.equal(decodeWords(encoded), text);
    assert.equal(encodeWords('ascii only'), 'ascii only');
  });

  it('sanitises control characters into single spaces', () => {
    assert.equal(sanitise(' a\r\nb\0c\u007f d \t '), 'a b c d');
  });

  it('folds at spaces under 78 characters, the first line counting the name', () => {
    const { value, truncated } = fold('Subject', Array.from({ length: 30 }, () => 'abcdefghi').join(' '));
    assert.equal(truncated, false);
    const lines = value.split('\n');
    assert.ok(lines.length > 1);
    assert.ok('Subject: '.length + lines[0].length <= 78);
    for (const l of lines.slice(1)) assert.ok(l.startsWith(' ') && l.length <= 78);
    assert.deepEqual(fold('X', 'short'), { value: 'short', truncated: false });
  });
});
