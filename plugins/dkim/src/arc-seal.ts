// ARC sealing (RFC 8617 §5.1) for a server that forwards mail: the next ARC set — ARC-Seal,
// ARC-Message-Signature, ARC-Authentication-Results — for a message as it will be delivered, made
// from the header block the MTA handed over (rebuilt byte for byte with `headerBlock`, the bytes the
// verify pass hashed) and the body hash the plugin streamed. mailauth's sealer does the work, in its
// prepared-input mode (`createSeal(false, …)`): its DKIM signer makes the ARC-Message-Signature over
// the parsed headers and the given body hash, its `signAS` the seal over the chain.
//
// The rules (RFC 8617 §4.2.1, §5.1, §5.2):
//  - the new set's instance is the highest existing one + 1; a chain that already has 50 sets gets no
//    51st (no validator would accept it);
//  - a chain whose newest seal says `cv=fail` has ended: it is not sealed again;
//  - the first set (`i=1`) says `cv=none`; a later one says what the verify pass found: `pass`, or
//    `fail` for a chain that did not validate. A `cv=fail` seal signs its own set only (the sets
//    before it are not vouched for) and ends the chain for everyone downstream — that is what the
//    RFC has a sealer do with a chain it could not validate, so that the next hops see the failure
//    instead of no ARC at all;
//  - the ARC-Message-Signature never covers ARC headers or Authentication-Results (§4.1.2); both
//    signatures use `relaxed` canonicalisation and SHA-256.
// Keys: RSA (2,048 bits recommended) or Ed25519. An Ed25519 seal validates in mailauth (Themis's
// verify pass) but not in every validator: dkimpy (python3-dkim 1.1.4) accepts only rsa-sha256 for
// ARC, so RSA is the interoperable choice for a sealing key.
// Nothing here throws: bad input, an unusable key or a chain that cannot take a set answer
// `{ ok: false, code, reason }`.
import { KeyObject } from 'node:crypto';
import type { HeaderEvent } from 'themis-milter';
import { MIN_RSA_BITS, algorithmOf, validDomain, validSelector, type SigningKey } from './keys.ts';
import { createSeal, getARChain, parseHeaders, type MailauthArcData, type MailauthArcSet, type MailauthParsedHeaders } from './mailauth.ts';
import { headerBlock } from './message.ts';

/** What a set is made from. */
export interface ArcSealInput {
  /** The header block as it will be delivered, top to bottom, before the new ARC set (values as Postfix sends them: no leading space, LF folds). */
  headers: readonly HeaderEvent[];
  /** The base64 SHA-256 hash of the body with `relaxed` body canonicalisation. */
  bodyHash: string;
  /**
   * The ARC data the verify pass collected, when the message had ARC headers. The set sealed over is
   * always the one in `headers` (the exact bytes delivered); a chain given here must be the same one
   * (same instances, same seal signatures), else nothing is sealed.
   */
  chain?: MailauthArcData | undefined;
  /** The incoming chain's validation status from the verify pass: `none` (no ARC headers), `pass`, `fail`. */
  cv: 'none' | 'pass' | 'fail';
  /** The authserv-id of the ARC-Authentication-Results (this server's, as in its Authentication-Results). */
  authservId: string;
  /** The RFC 8601 resinfo strings (`spf=pass smtp.mailfrom=a.example`, `dkim=pass header.d=…`, `arc=pass …`); none gives `authserv-id; none`. */
  authResults: readonly string[];
  /** The sealing key. */
  key: SigningKey;
  /** The headers the ARC-Message-Signature covers, each occurrence (default {@link DEFAULT_ARC_SIGNED_HEADERS}; ARC headers and Authentication-Results are always left out). */
  headerList?: readonly string[] | undefined;
  /** Signing time (`t=`), seconds since the epoch. */
  time: number;
}

/** A header of the new set, as a milter adds it: the value without `Name: `, folded with LF. */
export interface ArcSealHeader {
  name: string;
  value: string;
}

/** The new set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results, in that order: insert them in that order at the top), or why there is none. */
export type ArcSealResult = { ok: true; instance: number; headers: ArcSealHeader[] } | { ok: false; code: ArcSealErrorCode; reason: string };

/** Why a message was not sealed: the sealing failed (bad input, mailauth), the key cannot seal, or the chain cannot take another set (ended by `cv=fail`, 50 sets, a cv that does not fit the chain). */
export type ArcSealErrorCode = 'THEMIS_DKIM_ARC_SEAL' | 'THEMIS_DKIM_ARC_SEAL_KEY' | 'THEMIS_DKIM_ARC_SEAL_REFUSED';

/** RFC 8617 §4.2.1: instances run from 1 to 50. */
export const MAX_ARC_INSTANCE = 50;

/**
 * Headers the ARC-Message-Signature covers by default: the DKIM signer's defaults
 * (`DEFAULT_SIGNED_HEADERS` of the plugin) and the DKIM-Signatures, so that the next hop can tell
 * what the message looked like here (as mailauth's and dkimpy's ARC signers do).
 */
export const DEFAULT_ARC_SIGNED_HEADERS: readonly string[] = [
  'From', 'Sender', 'Reply-To', 'Subject', 'Date', 'Message-ID', 'To', 'Cc', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding',
  'Content-ID', 'Content-Description', 'Resent-Date', 'Resent-From', 'Resent-Sender', 'Resent-To', 'Resent-Cc', 'Resent-Message-ID',
  'In-Reply-To', 'References', 'List-Id', 'List-Help', 'List-Unsubscribe', 'List-Unsubscribe-Post', 'List-Subscribe', 'List-Post', 'List-Owner', 'List-Archive',
  'DKIM-Signature',
];

/** Never covered by an ARC-Message-Signature (RFC 8617 §4.1.2). */
const EXCLUDED = new Set(['arc-seal', 'arc-message-signature', 'arc-authentication-results', 'authentication-results']);
const ARC_NAMES = ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results'];

// A field name (RFC 5322 §3.6.8: printable ASCII but the colon).
const FIELD_NAME = /^[\x21-\x39\x3b-\x7e]+$/;
// An authserv-id: a token or a domain, no whitespace, no `;`, no comment or quote characters.
const AUTHSERV_ID = /^[^\s;()"\\\x00-\x1f\x7f]+$/;
// Controls that cannot be in a header value (tab is folding whitespace).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;
// A SHA-256 digest in base64.
const SHA256_B64 = /^[A-Za-z0-9+/]{43}=$/;
// The instance tag of an ARC-Seal or ARC-Message-Signature value.
const INSTANCE_TAG = /(?:^|;)\s*i\s*=\s*([0-9]+)\s*(?:;|$)/;

const fail = (code: ArcSealErrorCode, reason: string): ArcSealResult => ({ ok: false, code, reason });
const oneLine = (s: string, max = 300) => {
  const v = s.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return v.length > max ? `${v.slice(0, max)}...` : v;
};

/** Why a key cannot seal, or undefined. */
function keyProblem(key: SigningKey | undefined): string | undefined {
  if (!key || typeof key !== 'object') return 'no key';
  if (typeof key.domain !== 'string' || !validDomain(key.domain)) return `"${String(key.domain)}" is not a domain name (d=)`;
  if (typeof key.selector !== 'string' || !validSelector(key.selector)) return `"${String(key.selector)}" is not a selector (s=)`;
  const pk = key.privateKey as unknown;
  if (!(pk instanceof KeyObject) || pk.type !== 'private') return 'not a private key';
  const algorithm = algorithmOf(pk);
  if (!algorithm) return `a ${pk.asymmetricKeyType ?? 'unknown'} key: ARC seals with RSA or Ed25519`;
  if (key.algorithm !== algorithm) return `algorithm ${String(key.algorithm)} given for ${algorithm === 'rsa-sha256' ? 'an RSA' : 'an Ed25519'} key`;
  const bits = pk.asymmetricKeyDetails?.modulusLength;
  if (algorithm === 'rsa-sha256' && (bits === undefined || bits < MIN_RSA_BITS)) return `an RSA key of ${bits ?? 'unknown'} bits: at least ${MIN_RSA_BITS} (RFC 8301)`;
  return undefined;
}

/**
 * The ARC-Authentication-Results payload after `i=N; `: `authserv-id;` then one resinfo a line
 * (folded with CRLF and a tab), a resinfo longer than a line folded before one of its spaces (so the
 * unfolded value is exactly what was given).
 */
function authResultsPayload(authservId: string, results: readonly string[]): string {
  const parts = results.map((r) => r.trim().replace(/;+$/, '').trim()).filter((r) => r !== '');
  const lines = [authservId, ...(parts.length ? parts : ['none'])].map((part) => {
    const out: string[] = [];
    let rest = part;
    while (rest.length > 76) {
      const cut = rest.lastIndexOf(' ', 76);
      const at = cut > 0 ? cut : rest.indexOf(' ', 77);
      if (at <= 0) break;
      out.push(rest.slice(0, at));
      rest = rest.slice(at);
    }
    out.push(rest);
    return out.join('\r\n');
  });
  return lines.join(';\r\n\t');
}

/** The tags of an ARC set's seal that must match: its instance and signature. */
function sealId(set: MailauthArcSet | undefined): string {
  const parsed = set?.['arc-seal']?.parsed;
  return `${set?.i}:${String(parsed?.b?.value ?? '').replace(/\s+/g, '')}`;
}

/** `Name: value` (CRLF folds; the AAR as a binary string of UTF-8 bytes) → the header as a milter adds it. */
function milterHeader(line: string, expected: string, binary: boolean): ArcSealHeader | undefined {
  const text = binary ? Buffer.from(line, 'binary').toString('utf8') : line;
  const colon = text.indexOf(':');
  if (colon < 0 || text.slice(0, colon).toLowerCase() !== expected.toLowerCase()) return undefined;
  return { name: expected, value: text.slice(colon + 1).replace(/^ /, '').replace(/\r\n/g, '\n') };
}

/** Makes the next ARC set for a message (RFC 8617 §5.1). Never throws. */
export async function arcSeal(input: ArcSealInput): Promise<ArcSealResult> {
  try {
    return await seal(input);
  } catch (err) {
    return fail('THEMIS_DKIM_ARC_SEAL', `internal error: ${oneLine(err instanceof Error ? err.message : String(err))}`);
  }
}

async function seal(input: ArcSealInput): Promise<ArcSealResult> {
  if (!input || typeof input !== 'object') return fail('THEMIS_DKIM_ARC_SEAL', 'no input');
  const problem = keyProblem(input.key);
  if (problem) return fail('THEMIS_DKIM_ARC_SEAL_KEY', problem);
  const { key } = input;

  const { headers, bodyHash, cv, authservId, authResults, time } = input;
  if (!Array.isArray(headers)) return fail('THEMIS_DKIM_ARC_SEAL', 'no header list');
  for (const h of headers as readonly HeaderEvent[]) {
    if (!h || typeof h.name !== 'string' || !FIELD_NAME.test(h.name) || typeof h.value !== 'string') return fail('THEMIS_DKIM_ARC_SEAL', `not a header: ${oneLine(JSON.stringify(h) ?? String(h), 80)}`);
  }
  if (typeof bodyHash !== 'string' || !SHA256_B64.test(bodyHash)) return fail('THEMIS_DKIM_ARC_SEAL', 'the body hash is not a base64 SHA-256 digest');
  if (cv !== 'none' && cv !== 'pass' && cv !== 'fail') return fail('THEMIS_DKIM_ARC_SEAL', `cv ${oneLine(JSON.stringify(cv) ?? String(cv), 40)} is not none, pass or fail`);
  if (typeof authservId !== 'string' || !AUTHSERV_ID.test(authservId)) return fail('THEMIS_DKIM_ARC_SEAL', `"${oneLine(String(authservId), 80)}" is not an authserv-id`);
  if (!Array.isArray(authResults) || authResults.some((r) => typeof r !== 'string' || CONTROL.test(r))) return fail('THEMIS_DKIM_ARC_SEAL', 'the authentication results must be strings on one line each');
  if (typeof time !== 'number' || !Number.isFinite(time) || time < 1 || time > 999_999_999_999) return fail('THEMIS_DKIM_ARC_SEAL', `signing time ${String(time)} is not seconds since the epoch`);
  if (input.headerList !== undefined && !Array.isArray(input.headerList)) return fail('THEMIS_DKIM_ARC_SEAL', 'the header list is not a list of header names');
  const names = (input.headerList ?? DEFAULT_ARC_SIGNED_HEADERS).filter((n) => typeof n === 'string' && !EXCLUDED.has(n.trim().toLowerCase()));
  if (names.some((n) => !FIELD_NAME.test(n))) return fail('THEMIS_DKIM_ARC_SEAL', 'a header name of the header list is not a field name');
  // RFC 6376 §5.4: From is always signed (mailauth refuses a signature without it).
  if (!names.some((n) => n.toLowerCase() === 'from')) names.unshift('From');

  // The header block exactly as it is hashed (and as the verify pass parsed it).
  const parsed: MailauthParsedHeaders = parseHeaders(headerBlock(headers));
  const hasArc = parsed.parsed.some((row) => ARC_NAMES.some((n) => n.toLowerCase() === row.key));

  // The incoming chain, from the headers; undefined when its structure is broken (or there is none).
  let sets: MailauthArcSet[] | false = false;
  let broken: string | undefined;
  if (hasArc) {
    try {
      sets = getARChain(parsed, { strict: true });
    } catch (err) {
      broken = oneLine((err as Error).message);
    }
  }

  if (cv === 'none' && hasArc) return fail('THEMIS_DKIM_ARC_SEAL_REFUSED', 'cv=none, but the message has ARC headers: the next set needs the chain\'s validation status (pass or fail)');
  if (cv !== 'none' && !hasArc) return fail('THEMIS_DKIM_ARC_SEAL_REFUSED', `cv=${cv}, but the message has no ARC headers: the first set has cv=none`);
  if (cv === 'pass') {
    if (!sets || !sets.length) return fail('THEMIS_DKIM_ARC_SEAL_REFUSED', `cv=pass, but the ARC chain in the headers is not usable${broken ? ` (${broken})` : ''}`);
    const given = input.chain?.chain;
    if (input.chain !== undefined && (!given || given.length !== sets.length || given.some((s, n) => sealId(s) !== sealId((sets as MailauthArcSet[])[n])))) {
      return fail('THEMIS_DKIM_ARC_SEAL_REFUSED', `the chain the verify pass validated (${given ? given.length : 0} sets) is not the one in the headers (${sets.length} sets)`);
    }
  }

  let pem: string;
  try {
    pem = key.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  } catch (err) {
    return fail('THEMIS_DKIM_ARC_SEAL_KEY', `cannot export the private key: ${oneLine((err as Error).message)}`);
  }

  // The AAR goes through mailauth as a JS string hashed byte by byte (`binary`): UTF-8 bytes as such.
  const payload = Buffer.from(authResultsPayload(authservId, authResults), 'utf8').toString('binary');
  const result = await createSeal(false, {
    headers: parsed,
    // The chain the seal signs (cv=pass); a cv=fail seal signs its own set only.
    arc: { chain: cv === 'pass' ? sets : false },
    strict: true,
    seal: {
      signingDomain: key.domain,
      selector: key.selector,
      privateKey: pem,
      algorithm: key.algorithm,
      bodyHash,
      cv,
      authResults: payload,
      signTime: new Date(Math.floor(time) * 1000),
      headerList: names.join(':'),
    },
  });

  if (!result.headers.length) {
    const e = result.errors[0]?.err;
    const code = e?.code;
    const reason = oneLine(e?.message ?? 'mailauth made no ARC set');
    // The chain cannot take a set: ended by cv=fail, 50 sets, an instance or cv that does not fit.
    if (code === 'EARCCHAINFAILED' || code === 'EINVALIDINSTANCE' || code === 'EINVALIDCV') return fail('THEMIS_DKIM_ARC_SEAL_REFUSED', reason);
    if (code === 'EINVALIDTYPE' || code === 'ESHORTKEY' || code === 'EINVALIDALGO' || code === 'EINVALIDDOMAIN' || code === 'EINVALIDSELECTOR' || code === 'ERR_OSSL_UNSUPPORTED') return fail('THEMIS_DKIM_ARC_SEAL_KEY', reason);
    if (code === 'ENOFROM') return fail('THEMIS_DKIM_ARC_SEAL', 'the message has no From header');
    return fail('THEMIS_DKIM_ARC_SEAL', code ? `${reason} (${code})` : reason);
  }

  const [asLine, amsLine, aarLine] = result.headers;
  const out = [milterHeader(asLine ?? '', 'ARC-Seal', false), milterHeader(amsLine ?? '', 'ARC-Message-Signature', false), milterHeader(aarLine ?? '', 'ARC-Authentication-Results', true)];
  if (result.headers.length !== 3 || out.some((h) => !h)) return fail('THEMIS_DKIM_ARC_SEAL', 'mailauth answered an unexpected ARC set');
  const instance = Number(INSTANCE_TAG.exec(out[0]!.value.replace(/\n/g, ''))?.[1]);
  if (!Number.isInteger(instance) || instance < 1 || instance > MAX_ARC_INSTANCE) return fail('THEMIS_DKIM_ARC_SEAL', 'mailauth answered an ARC-Seal without a usable instance');
  return { ok: true, instance, headers: out as ArcSealHeader[] };
}
