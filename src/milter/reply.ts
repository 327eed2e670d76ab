/**
 * Decisions a filter returns, and the validation of custom SMTP replies and header edits, so that a
 * mistake becomes a coded error for the caller instead of bytes that make Postfix drop the filter.
 * @module
 */
import { MilterError } from './errors.ts';

/** A custom SMTP reply for reject/tempfail decisions (sent as SMFIR_REPLYCODE). */
export interface SmtpReply {
  /** Three-digit SMTP code, 4xx or 5xx (421 closes the SMTP session). */
  code: number;
  /** Enhanced status code (`5.7.1`); its class digit must equal the code's first digit. */
  enhanced?: string;
  /** Text; several lines as an array or separated by LF. `%` is escaped for the MTA automatically. */
  text?: string | readonly string[];
}

/** What a stage handler answers. */
export type Decision =
  | { readonly action: 'continue' }
  | { readonly action: 'accept' }
  | { readonly action: 'reject'; readonly reply?: SmtpReply }
  | { readonly action: 'tempfail'; readonly reply?: SmtpReply }
  | { readonly action: 'discard' }
  /** Continue, and send no more events of this kind for this message (body chunks). */
  | { readonly action: 'skip' };

/** The action names a {@link Decision} can carry. */
export type DecisionAction = Decision['action'];

/** Ready-made decisions; handlers may return these shared objects instead of allocating their own. */
export const Decisions = {
  continue: Object.freeze({ action: 'continue' }) as Decision,
  accept: Object.freeze({ action: 'accept' }) as Decision,
  reject: Object.freeze({ action: 'reject' }) as Decision,
  tempfail: Object.freeze({ action: 'tempfail' }) as Decision,
  discard: Object.freeze({ action: 'discard' }) as Decision,
  skip: Object.freeze({ action: 'skip' }) as Decision,
} as const;

const MAX_REPLY_LINE = 980;
const MAX_REPLY_LINES = 32;

/**
 * Formats a custom reply as the SMFIR_REPLYCODE payload text: `NNN-x.y.z line\r\n…NNN x.y.z last`.
 * Checks what Postfix and Sendmail check, and throws `THEMIS_ERR_MILTER_BAD_REPLY` otherwise:
 * 4xx/5xx only and matching the decision (`expectClass`), an enhanced code of the same class,
 * at most 32 lines of at most 980 characters, no NUL or CR. Without text, Postfix's default text is used. `%` becomes `%%` (Sendmail uses the
 * text as a printf format; Postfix turns `%%` back into `%`).
 */
export function formatSmtpReply(reply: SmtpReply, expectClass?: 4 | 5): string {
  const { code } = reply;
  if (!Number.isInteger(code) || code < 400 || code > 599) throw new MilterError('THEMIS_ERR_MILTER_BAD_REPLY', { reason: `code ${code} is not 4xx or 5xx` });
  const klass = Math.floor(code / 100);
  if (expectClass !== undefined && klass !== expectClass) {
    throw new MilterError('THEMIS_ERR_MILTER_BAD_REPLY', { reason: `code ${code} does not fit a ${expectClass === 5 ? 'reject (5xx)' : 'tempfail (4xx)'}` });
  }
  let enhanced = '';
  if (reply.enhanced !== undefined && reply.enhanced !== '') {
    if (!/^[245]\.\d{1,3}\.\d{1,3}$/.test(reply.enhanced)) throw new MilterError('THEMIS_ERR_MILTER_BAD_REPLY', { reason: `enhanced status code ${JSON.stringify(reply.enhanced)} is not of the form C.SSS.DDD` });
    if (Number(reply.enhanced[0]) !== klass) throw new MilterError('THEMIS_ERR_MILTER_BAD_REPLY', { reason: `enhanced status code ${reply.enhanced} does not match the class of ${code}` });
    enhanced = reply.enhanced + ' ';
  }
  // A code alone is not a reply every MTA takes: fall back to Postfix's own wording.
  const fallback = klass === 5 ? 'Command rejected' : 'Service unavailable - try again later';
  const given = reply.text === undefined ? [] : typeof reply.text === 'string' ? reply.text.split('\n') : reply.text;
  const raw = given.length === 0 || (given.length === 1 && given[0] === '') ? [fallback] : given;
  if (raw.length > MAX_REPLY_LINES) throw new MilterError('THEMIS_ERR_MILTER_BAD_REPLY', { reason: `${raw.length} lines, at most ${MAX_REPLY_LINES} allowed` });
  const lines: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const text = raw[i];
    if (/[\0\r\n]/.test(text)) throw new MilterError('THEMIS_ERR_MILTER_BAD_REPLY', { reason: `line ${i + 1} contains NUL, CR or LF` });
    const line = `${code}${i === raw.length - 1 ? ' ' : '-'}${enhanced}${text.replaceAll('%', '%%')}`.trimEnd();
    if (line.length > MAX_REPLY_LINE) throw new MilterError('THEMIS_ERR_MILTER_BAD_REPLY', { reason: `line ${i + 1} is ${line.length} characters long, at most ${MAX_REPLY_LINE} allowed` });
    lines.push(line);
  }
  return lines.join('\r\n');
}

/** Header name per RFC 5322: printable ASCII except SP and `:`. */
export function checkHeaderName(name: string): void {
  if (name.length === 0) throw new MilterError('THEMIS_ERR_MILTER_BAD_HEADER', { what: 'name', reason: 'empty' });
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 33 || c > 126 || c === 58) throw new MilterError('THEMIS_ERR_MILTER_BAD_HEADER', { what: `name ${JSON.stringify(name)}`, reason: `character ${JSON.stringify(name[i])} is not allowed (printable ASCII except space and colon)` });
  }
}

/**
 * Normalises a header value for the wire: CRLF becomes LF (Postfix would write `\r\r\n`), every line
 * break must be followed by a space or tab (otherwise it would start a new, injected header), no NUL,
 * no bare CR, and no line longer than 998 characters.
 */
export function normaliseHeaderValue(name: string, value: string): string {
  const v = value.includes('\r\n') ? value.replaceAll('\r\n', '\n') : value;
  if (v.includes('\0') || v.includes('\r')) throw new MilterError('THEMIS_ERR_MILTER_BAD_HEADER', { what: `value of ${name}`, reason: 'contains NUL or a bare CR' });
  let longest = 0;
  let lineStart = 0;
  for (let i = v.indexOf('\n'); i >= 0; i = v.indexOf('\n', i + 1)) {
    const next = v.charCodeAt(i + 1);
    if (next !== 32 && next !== 9) throw new MilterError('THEMIS_ERR_MILTER_BAD_HEADER', { what: `value of ${name}`, reason: 'a line break not followed by a space or tab would start a new header' });
    longest = Math.max(longest, i - lineStart + (lineStart === 0 ? name.length + 2 : 0));
    lineStart = i + 1;
  }
  longest = Math.max(longest, v.length - lineStart + (lineStart === 0 ? name.length + 2 : 0));
  if (longest > 998) throw new MilterError('THEMIS_ERR_MILTER_BAD_HEADER', { what: `value of ${name}`, reason: `a line of ${longest} characters exceeds 998; fold it` });
  return v;
}
