/**
 * Header text as rules see it and as they write it: unfolding and RFC 2047 decoding for matching;
 * sanitising, RFC 2047 encoding and folding for values the rules add, so that nothing a template
 * pulls in (a subject, an address, another plugin's note) can inject a header or break a line limit.
 * @module
 */

/** Joins folded lines: the MTA sends a fold as LF (or CRLF) followed by its space or tab. */
export function unfold(value: string): string {
  return value.includes('\n') ? value.replace(/\r?\n(?=[ \t])/g, '').replace(/[\r\n]/g, '') : value;
}

const ENCODED_WORD = /=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=/g;

/**
 * Decodes RFC 2047 encoded words (`=?UTF-8?B?…?=`, `=?iso-8859-1?Q?…?=`). Whitespace between two
 * encoded words is dropped (RFC 2047 §6.2), and adjacent words of one charset are decoded together,
 * so a character split across two words comes out whole. A word in an unknown charset, or one that
 * does not decode, is kept as written: matching then sees the raw text rather than nothing.
 */
export function decodeWords(value: string): string {
  if (!value.includes('=?')) return value;
  let out = '';
  let last = 0;
  let pending: { charset: string; bytes: Buffer[]; raw: string } | undefined;
  const flush = () => {
    if (!pending) return;
    out += decodeBytes(pending.charset, Buffer.concat(pending.bytes)) ?? pending.raw;
    pending = undefined;
  };
  for (const m of value.matchAll(ENCODED_WORD)) {
    const between = value.slice(last, m.index);
    const adjacent = pending !== undefined && /^[ \t]*$/.test(between);
    if (!adjacent) {
      flush();
      out += between;
    }
    const charset = m[1].toLowerCase();
    const bytes = m[2] === 'b' || m[2] === 'B' ? Buffer.from(m[3], 'base64') : decodeQ(m[3]);
    if (pending && pending.charset === charset) {
      pending.bytes.push(bytes);
      pending.raw += between + m[0];
    } else {
      flush();
      pending = { charset, bytes: [bytes], raw: m[0] };
    }
    last = m.index + m[0].length;
  }
  flush();
  return out + value.slice(last);
}

function decodeQ(text: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '_') bytes.push(0x20);
    else if (c === '=' && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(text.charCodeAt(i) & 0xff);
  }
  return Buffer.from(bytes);
}

function decodeBytes(charset: string, bytes: Buffer): string | undefined {
  try {
    return new TextDecoder(charset === 'us-ascii' ? 'utf-8' : charset).decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * Makes a computed value safe for one header: control characters (CR and LF above all, which
 * would start a new header) become spaces, runs of spaces collapse, and the ends are trimmed.
 */
export function sanitise(value: string): string {
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\u0000-\u0008\u000a-\u001f\u007f]+/g, ' ').replace(/[ \t]{2,}/g, ' ').trim();
}

/**
 * Encodes the non-ASCII part of a value as RFC 2047 UTF-8 encoded words (`B` encoding, each word at
 * most 75 characters), keeping the ASCII words before and after readable: a header must be 7-bit for
 * every hop that does not speak SMTPUTF8.
 */
export function encodeWords(value: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[^\u0000-\u007f]/.test(value)) return value;
  const words = value.split(' ');
  // eslint-disable-next-line no-control-regex
  const nonAscii = (w: string) => /[^\u0000-\u007f]/.test(w);
  const first = words.findIndex(nonAscii);
  const last = words.findLastIndex(nonAscii);
  // Whitespace between encoded words is dropped by decoders: the run from the first to the last
  // non-ASCII word is encoded as one text, spaces included.
  const run = words.slice(first, last + 1).join(' ');
  const encoded: string[] = [];
  let chunk: number[] = [];
  const push = () => {
    if (chunk.length > 0) encoded.push(`=?UTF-8?B?${Buffer.from(chunk).toString('base64')}?=`);
    chunk = [];
  };
  for (const ch of run) {
    const bytes = Buffer.from(ch, 'utf8');
    // 45 bytes make 60 base64 characters: with `=?UTF-8?B?` and `?=`, 72 ≤ 75 (RFC 2047 §2).
    if (chunk.length + bytes.length > 45) push();
    chunk.push(...bytes);
  }
  push();
  return [...words.slice(0, first), ...encoded, ...words.slice(last + 1)].join(' ');
}

/** Soft line length (RFC 5322 §2.1.1 "SHOULD be no more than 78"). */
const SOFT_LIMIT = 78;
/** Hard line length (RFC 5322 §2.1.1 "MUST be no more than 998"). */
const HARD_LIMIT = 998;

/**
 * Folds a one-line value at spaces so that each line of `Name: value` stays within 78 characters
 * where a space allows it, and within 998 always: a word too long for one line is cut (the only
 * way to keep the message valid), and the result says so through `truncated`.
 */
export function fold(name: string, value: string): { value: string; truncated: boolean } {
  let truncated = false;
  const words = value.split(' ');
  const lines: string[] = [];
  let line = '';
  // The first line carries `Name: `; continuation lines start with one space.
  let room = SOFT_LIMIT - name.length - 2;
  for (let word of words) {
    const hard = (lines.length === 0 ? HARD_LIMIT - name.length - 2 : HARD_LIMIT - 1);
    if (word.length > hard) {
      word = word.slice(0, hard);
      truncated = true;
    }
    if (line === '') line = word;
    else if (line.length + 1 + word.length <= room) line += ' ' + word;
    else {
      lines.push(line);
      line = word;
      room = SOFT_LIMIT - 1;
    }
  }
  lines.push(line);
  // Protocol rule: folds are LF plus whitespace; the MTA adds the CR (a CRLF would become CR CR LF).
  return { value: lines.join('\n '), truncated };
}

/** A header name per RFC 5322 §2.2: printable ASCII except space and colon. */
export const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
