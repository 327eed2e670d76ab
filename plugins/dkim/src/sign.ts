// DKIM signing (RFC 6376 §5) of a message as it streams through: the body is hashed chunk by chunk
// (mailauth's canonicalising body hashes), the headers are the ones the MTA delivered, and the
// signature is made at end of message with mailauth's header canonicalisation and formatting — with
// over-signing (a name listed once more than it occurs, so that no such header can be added later),
// which mailauth's own signer does not do.
import { createHash, sign as cryptoSign } from 'node:crypto';
import type { HeaderEvent } from 'themis-milter';
import type { SigningKey } from './keys.ts';
import { dkimBody, formatSignatureHeaderLine, generateCanonicalizedHeader, type MailauthBodyHash, type MailauthHeaderLine } from './mailauth.ts';
import { headerLine } from './message.ts';

/** A body canonicalisation. */
export type BodyCanon = 'relaxed' | 'simple';

/** `header/body` canonicalisation of a signature. */
export type Canonicalization = 'relaxed/relaxed' | 'relaxed/simple' | 'simple/relaxed' | 'simple/simple';

/** The canonicalised body hashes (SHA-256) a message needs, fed chunk by chunk. */
export class BodyHashes {
  private readonly hashers = new Map<BodyCanon, MailauthBodyHash>();
  private readonly digests = new Map<BodyCanon, string>();
  private lastByte = 0;
  /** Body bytes hashed so far. */
  bytes = 0;

  constructor(canons: Iterable<BodyCanon>) {
    for (const c of canons) if (!this.hashers.has(c)) this.hashers.set(c, dkimBody(c, 'sha256', false));
  }

  /** Whether the hash of this canonicalisation is being computed. */
  has(canon: BodyCanon): boolean {
    return this.hashers.has(canon);
  }

  /** Hashes one chunk (a bare LF counts as CRLF, as on the wire). */
  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    let start = 0;
    for (let i = chunk.indexOf(0x0a); i >= 0; i = chunk.indexOf(0x0a, i + 1)) {
      const prev = i > 0 ? chunk[i - 1] : this.lastByte;
      if (prev === 0x0d) continue;
      this.feed(chunk.subarray(start, i));
      this.feed(CRLF);
      start = i + 1;
    }
    this.feed(start === 0 ? chunk : chunk.subarray(start));
    if (chunk.length) this.lastByte = chunk[chunk.length - 1];
  }

  private feed(part: Buffer): void {
    if (part.length === 0) return;
    for (const h of this.hashers.values()) h.update(part);
  }

  /** The base64 body hash (`bh=`) of a canonicalisation; the body must be complete. */
  digest(canon: BodyCanon): string {
    let d = this.digests.get(canon);
    if (d === undefined) {
      const h = this.hashers.get(canon);
      if (!h) throw new Error(`no ${canon} body hash was computed`);
      d = h.digest('base64');
      this.digests.set(canon, d);
    }
    return d;
  }
}

const CRLF = Buffer.from('\r\n');

/** How to sign. */
export interface SignOptions {
  /** `header/body` canonicalisation. */
  canonicalization: Canonicalization;
  /** Names of the headers to sign (each occurrence; case-insensitive). `From` is always signed. */
  headers: readonly string[];
  /** Names signed once more than they occur (also when absent), so that none can be added. */
  oversign: readonly string[];
  /** The body hash (`bh=`) of the body canonicalisation. */
  bodyHash: string;
  /** Signing time, seconds since the epoch (`t=`). */
  time: number;
  /** Expiry, seconds after `time` (`x=`); none when unset. */
  expire?: number | undefined;
}

/** The `h=` list and the header lines it covers, bottom-up per name (RFC 6376 §5.4.2). */
export function signedHeaders(headers: readonly HeaderEvent[], names: readonly string[], oversign: readonly string[]): { keys: string; headers: MailauthHeaderLine[] } {
  const wanted: string[] = [];
  const seen = new Set<string>();
  for (const n of ['From', ...names, ...oversign]) {
    const lower = n.toLowerCase();
    if (!seen.has(lower)) {
      seen.add(lower);
      wanted.push(n);
    }
  }
  const over = new Set(oversign.map((n) => n.toLowerCase()));
  const keys: string[] = [];
  const lines: MailauthHeaderLine[] = [];
  for (const name of wanted) {
    const lower = name.toLowerCase();
    for (let i = headers.length - 1; i >= 0; i--) {
      const h = headers[i];
      if (h.name.toLowerCase() !== lower) continue;
      keys.push(h.name);
      lines.push({ key: lower, casedKey: h.name, line: Buffer.from(headerLine(h), 'utf8') });
    }
    // One more than there are: a verifier finds none for it and hashes nothing, and a header of that
    // name added later breaks the signature.
    if (over.has(lower)) keys.push(name);
  }
  return { keys: keys.join(': '), headers: lines };
}

/** Signs: the DKIM-Signature value (without `DKIM-Signature:`), folded with LF and a tab-free space. */
export function signHeaders(headers: readonly HeaderEvent[], key: SigningKey, options: SignOptions): string {
  const lines = signedHeaders(headers, options.headers, options.oversign);
  const { canonicalizedHeader, dkimHeaderOpts } = generateCanonicalizedHeader('DKIM', lines, {
    signingDomain: key.domain,
    selector: key.selector,
    algorithm: key.algorithm,
    canonicalization: options.canonicalization,
    bodyHash: options.bodyHash,
    timestamp: options.time,
    ...(options.expire ? { expiration: options.time + options.expire } : {}),
  });
  const signature =
    key.algorithm === 'rsa-sha256'
      ? cryptoSign('rsa-sha256', canonicalizedHeader, key.privateKey)
      : // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the canonicalised header.
        cryptoSign(null, createHash('sha256').update(canonicalizedHeader).digest(), key.privateKey);
  const line = formatSignatureHeaderLine('DKIM', { ...dkimHeaderOpts, b: signature.toString('base64') }, true);
  const prefix = 'DKIM-Signature: ';
  if (!line.startsWith(prefix)) throw new Error('unexpected signature header format');
  return line.slice(prefix.length).replace(/\r\n/g, '\n');
}
