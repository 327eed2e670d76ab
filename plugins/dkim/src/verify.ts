// Streaming DKIM verification on top of mailauth's verifier (strict mode: RFC 6376, 8301, 8463 as
// written). The header block is written first, then every body chunk as it arrives — each write
// waits until mailauth has hashed it, so nothing of the body is held — and the signatures are
// checked (their keys looked up) when the message ends.
import type { HeaderEvent } from 'themis-milter';
import type { DnsResolver } from 'themis-milter/dns';
import { DkimVerifier, type MailauthDkimVerifier, type MailauthResult, type MailauthSignatureHeader } from './mailauth.ts';
import { headerBlock, signaturesOf } from './message.ts';

/** A DKIM result of one signature, or of the message (RFC 8601 §2.7.1 names, `policy` reported as `permerror`). */
export type DkimResultName = 'pass' | 'fail' | 'neutral' | 'temperror' | 'permerror' | 'none';

/** The six results, best first: the order in which a message's result is chosen among its signatures'. */
export const DKIM_RESULTS: readonly DkimResultName[] = ['pass', 'temperror', 'fail', 'permerror', 'neutral', 'none'];

/** One signature's outcome, as the note publishes it. */
export interface DkimSignatureResult {
  /** The result of this signature. */
  result: DkimResultName;
  /** The signing domain (`d=`), lower-cased. */
  domain: string;
  /** The selector (`s=`). */
  selector: string;
  /** The algorithm (`a=`): `rsa-sha256`, `ed25519-sha256`, … as written. */
  algorithm: string;
  /** The domain of the `From:` header, when there is one. */
  headerFrom?: string;
  /** Whether `d=` is aligned with the `From:` domain (relaxed: same organisational domain); set when there is a `From:`. */
  aligned?: boolean;
  /** Why, for anything but a plain `pass` (`body hash did not verify`, `no key`, `not checked`, …). */
  reason?: string;
  /** The first 8 characters of `b=` (RFC 8601 `header.b`), telling apart two signatures of one domain. */
  b?: string;
}

/** What a whole verification yields. */
export interface DkimVerification {
  /** One entry per DKIM-Signature, in header order; empty for an unsigned message. */
  results: DkimSignatureResult[];
  /** The message's result: `pass` if any signature passes, else the best of the others ({@link DKIM_RESULTS}), `none` when unsigned. */
  result: DkimResultName;
  /** The domains (`d=`) of the passing signatures, lower-cased, each once. */
  domains: string[];
  /** The `From:` domain, when there is one. */
  headerFrom?: string;
}

/** How to verify. */
export interface VerifyOptions {
  /** The DNS resolver (`dns.promises.resolve` shape). */
  resolver: DnsResolver;
  /** Verify at most this many signatures; the others are `neutral`, `not checked`. */
  maxSignatures: number;
  /** The time to check `x=` against (default: now). */
  now?: Date;
}

/** The reason given to the signatures past {@link VerifyOptions.maxSignatures}. */
export const NOT_CHECKED = 'not checked';

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const clean = (s: string, max = 200) => {
  const v = s.replace(CONTROL, ' ').trim();
  return v.length > max ? `${v.slice(0, max)}...` : v;
};

/** The message's result from its signatures' (best first, {@link DKIM_RESULTS}). */
export function bestResult(results: readonly { result: DkimResultName }[]): DkimResultName {
  let best: DkimResultName = 'none';
  for (const r of results) if (DKIM_RESULTS.indexOf(r.result) < DKIM_RESULTS.indexOf(best)) best = r.result;
  return best;
}

/** mailauth's status → one of the six results, with the reason. */
function mapResult(r: MailauthResult): { result: DkimResultName; reason?: string } {
  const comment = r.status.comment ? clean(r.status.comment) : undefined;
  switch (r.status.result) {
    case 'pass':
      // An l= past the end of the body: the signer claimed bytes that are not there (RFC 6376 §6.1.3).
      if (r.canonBodyLengthLimited && typeof r.canonBodyLengthLimit === 'number' && typeof r.canonBodyLengthTotal === 'number' && r.canonBodyLengthLimit > r.canonBodyLengthTotal) return { result: 'permerror', reason: 'l= is longer than the body' };
      // An l= that leaves part of the body unsigned still verifies (RFC 6376 §3.5); say so.
      return r.status.underSized ? { result: 'pass', reason: `l= leaves ${r.status.underSized} body bytes unsigned` } : { result: 'pass' };
    case 'fail':
      return { result: 'fail', reason: comment ?? 'bad signature' };
    case 'temperror':
      return { result: 'temperror', reason: comment ?? 'DNS failure' };
    case 'none':
      return { result: 'none' };
    case 'neutral':
      // Not checked (maxSignatures) and expired are the only "signed, no verdict" cases; everything
      // else mailauth calls neutral is a broken signature or key record: RFC 6376 PERMFAIL.
      if (comment === NOT_CHECKED || comment === 'expired') return { result: 'neutral', reason: comment };
      return { result: 'permerror', reason: comment ?? 'signature could not be processed' };
    default:
      // `policy` (RFC 8301: rsa-sha1, an RSA key under 1,024 bits) and anything unforeseen.
      return { result: 'permerror', reason: comment ?? r.status.result };
  }
}

/**
 * One message's verification, fed as the message arrives: {@link write} the body chunks (the header
 * block goes first, from the headers given), then {@link finish}. Never throws: a failure of the
 * verifier itself makes every signature `temperror`.
 */
export class VerifyStream {
  private readonly verifier: MailauthDkimVerifier;
  private readonly headers: readonly HeaderEvent[];
  private failure: Error | undefined;
  private ended = false;
  /** Body bytes written so far. */
  bodyBytes = 0;
  /** The most bytes mailauth ever had queued and not yet hashed (bounded by one chunk). */
  maxQueued = 0;

  constructor(headers: readonly HeaderEvent[], options: VerifyOptions) {
    this.headers = headers;
    this.verifier = new DkimVerifier({ resolver: options.resolver, strict: true, ...(options.now ? { curTime: options.now } : {}) });
    this.verifier.on('error', (err: Error) => {
      this.failure ??= err;
    });
    // Verify at most maxSignatures DKIM-Signatures (mailauth reports the others as skipped, which
    // the strict mode makes a neutral result with our reason); ARC is not this plugin's business.
    const prepare = this.verifier.prepareSignature.bind(this.verifier);
    let seen = 0;
    this.verifier.prepareSignature = (sig: MailauthSignatureHeader) => {
      if (sig.type !== 'DKIM') {
        sig.skip = 'ARC is not checked';
        return;
      }
      if (++seen > options.maxSignatures) {
        // What the result reports of a signature mailauth did not prepare.
        sig.signingDomain = String(sig.parsed?.d?.value ?? '');
        sig.selector = String(sig.parsed?.s?.value ?? '');
        sig.skip = NOT_CHECKED;
        return;
      }
      prepare(sig);
    };
    this.ready = this.push(headerBlock(headers));
  }

  /** The header block's write: the body waits for it, so that mailauth never queues more than one write. */
  private ready: Promise<void>;

  private push(chunk: Buffer): Promise<void> {
    if (this.failure || this.ended) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.verifier.write(chunk, (err) => {
        if (err) this.failure ??= err;
        resolve();
      });
      this.maxQueued = Math.max(this.maxQueued, this.verifier.writableLength);
    });
  }

  /** Hashes one body chunk; resolves once it is hashed (the chunk is not kept). */
  async write(chunk: Buffer): Promise<void> {
    this.bodyBytes += chunk.length;
    await this.ready;
    return this.push(chunk);
  }

  /** Ends the message and checks the signatures; past `deadlineMs`, the unfinished ones are `temperror`. */
  async finish(deadlineMs: number): Promise<DkimVerification> {
    const signatures = signaturesOf(this.headers);
    const fallback = (reason: string): DkimVerification => {
      const results = signatures.map((s) => ({ result: 'temperror' as const, domain: s.domain, selector: s.selector, algorithm: s.algorithm, reason }));
      return { results, result: results.length ? 'temperror' : 'none', domains: [] };
    };
    if (this.failure) return fallback(`verifier failed: ${clean(this.failure.message)}`);
    this.ended = true;
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<'done'>((resolve) => {
      this.verifier.once('finish', () => resolve('done'));
      this.verifier.once('error', () => resolve('done'));
      this.verifier.end();
    });
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), deadlineMs);
      timer.unref?.();
    });
    const how = await Promise.race([done, late]);
    clearTimeout(timer);
    if (how === 'late') return fallback('deadline exceeded');
    // Set by the stream's error event while we waited.
    const failure = this.failure as Error | undefined;
    if (failure) return fallback(`verifier failed: ${clean(failure.message)}`);

    const headerFrom = this.verifier.headerFrom[0]?.split('@').pop()?.toLowerCase() || undefined;
    const results: DkimSignatureResult[] = [];
    for (const r of this.verifier.results) {
      if (r.status.result === 'none' && !r.signingDomain) continue;
      const { result, reason } = mapResult(r);
      const out: DkimSignatureResult = { result, domain: clean(r.signingDomain ?? '').toLowerCase(), selector: clean(r.selector ?? ''), algorithm: clean(String(r.algo ?? '')) };
      if (headerFrom) {
        out.headerFrom = headerFrom;
        out.aligned = typeof r.status.aligned === 'string' && r.status.aligned !== '';
      }
      if (reason) out.reason = reason;
      const b = typeof r.signature === 'string' ? r.signature.replace(/\s+/g, '').slice(0, 8) : '';
      if (b) out.b = b;
      results.push(out);
    }
    const domains = [...new Set(results.filter((r) => r.result === 'pass').map((r) => r.domain))];
    return { results, result: bestResult(results), domains, ...(headerFrom ? { headerFrom } : {}) };
  }
}
