// Streaming DKIM verification on top of mailauth's verifier (strict mode: RFC 6376, 8301, 8463 as
// written). The header block is written first, then every body chunk as it arrives — each write
// waits until mailauth has hashed it, so nothing of the body is held — and the signatures are
// checked (their keys looked up) when the message ends.
import { resolve as resolveDns } from 'node:dns/promises';
import type { HeaderEvent } from 'themis-milter';
import type { DnsResolver } from 'themis-milter/dns';
import { DkimVerifier, arcValidate, getPublicKey, toALabel, type MailauthArcHeader, type MailauthDkimVerifier, type MailauthKeyCache, type MailauthKeyOptions, type MailauthResult, type MailauthSignatureHeader } from './mailauth.ts';
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

/** The ARC chain validation status (RFC 8617 §4.4 `cv`, the `arc=` result): `none` without ARC headers. */
export type ArcResultName = 'none' | 'pass' | 'fail';

/** The ARC (RFC 8617) result of a message, as the dkim note publishes it. */
export interface ArcResult {
  /** `pass` (every seal and the newest ARC-Message-Signature verify), `fail` (anything else about a chain), `none` (no ARC headers). */
  result: ArcResultName;
  /** The ARC sets (instances) found: the highest `i=`, or the number of ARC-Seals when the chain cannot be parsed. */
  instances: number;
  /** For `pass`: the sealing domains (`ARC-Seal` `d=`, lower-cased), one per instance, `i=1` first (the newest sealer last); else empty. */
  sealers: string[];
  /** For `pass`: the newest set's ARC-Authentication-Results (what the newest sealer recorded: `authserv-id; dkim=…; spf=…; dmarc=…`, `i=` left out, unfolded). */
  lastAuthResults?: string;
  /** For `pass`: the oldest set's (`i=1`) ARC-Authentication-Results, the same way. */
  firstAuthResults?: string;
  /** Why, for a `fail` (`i=2 seal signature validation failed`, `i=1 no valid signature`, `deadline exceeded`, …). */
  reason?: string;
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
  /** The ARC result, when ARC was checked ({@link VerifyOptions.arc}). */
  arc?: ArcResult;
}

/** How to verify. */
export interface VerifyOptions {
  /** The DNS resolver (`dns.promises.resolve` shape). */
  resolver: DnsResolver;
  /** Verify at most this many signatures; the others are `neutral`, `not checked`. */
  maxSignatures: number;
  /** The time to check `x=` against (default: now). */
  now?: Date;
  /** Validate the ARC chain too (RFC 8617), in the same pass (default false). */
  arc?: boolean;
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

/** Parsed key records kept across messages, at most (least recently used out first). */
export const PARSED_KEYS_MAX = 1_000;
const parsedKeys = new Map<string, Promise<unknown>>();

/** How many parsed key records are kept now (at most {@link PARSED_KEYS_MAX}). */
export function parsedKeysHeld(): number {
  return parsedKeys.size;
}

/**
 * mailauth's per-message key cache (`createKeyCache`), with the parsing shared across messages: the
 * record is still fetched for every message (through the resolver, whose cache honours the TTL, so a
 * changed or revoked key is seen as soon as DNS says so), but a record already parsed — same text,
 * same question — is not parsed again. Parsing (the record's tags, `createPublicKey`, the PEM export,
 * the modulus length) was about a sixth of the CPU of verifying a message with two signatures.
 */
export function sharedKeyCache(resolver: DnsResolver | undefined): MailauthKeyCache {
  const perMessage = new Map<string, Promise<unknown>>();
  const lookup = async (type: string, name: string, minBitLength: number | undefined, options: MailauthKeyOptions): Promise<unknown> => {
    // Without a resolver, mailauth's own default: the system's.
    const ask = resolver ?? ((n: string, t: string) => resolveDns(n, t));
    const list = (await ask(toALabel(name), 'TXT')) as unknown[];
    const rr = ([] as unknown[]).concat(list?.[0] ?? []).join('').replace(/\s+/g, '');
    const key = `${type}\0${minBitLength ?? ''}\0${options.strict ? 1 : 0}\0${options.hashAlgo ?? ''}\0${rr}`;
    let parsed = parsedKeys.get(key);
    if (parsed) {
      parsedKeys.delete(key);
      parsedKeys.set(key, parsed);
      return parsed;
    }
    // The same answer, handed to mailauth's own parsing: its results and errors are unchanged.
    parsed = getPublicKey(type, name, minBitLength, (async () => list) as unknown as DnsResolver, options);
    parsed.catch(() => false);
    parsedKeys.set(key, parsed);
    if (parsedKeys.size > PARSED_KEYS_MAX) parsedKeys.delete(parsedKeys.keys().next().value!);
    return parsed;
  };
  return {
    resolver,
    get(type, name, minBitLength, options = {}) {
      const q = `${options.strict ? 1 : 0}:${minBitLength ?? ''}:${options.hashAlgo ?? ''}:${name}`;
      let p = perMessage.get(q);
      if (!p) {
        p = lookup(type, name, minBitLength, options);
        // A prefetched lookup can fail before anything waits for it (as in mailauth's cache).
        p.catch(() => false);
        perMessage.set(q, p);
      }
      return p;
    },
  };
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
  private readonly arc: boolean;
  private readonly resolver: VerifyOptions['resolver'];
  /** Body bytes written so far. */
  bodyBytes = 0;
  /** The most bytes mailauth ever had queued and not yet hashed (bounded by one chunk). */
  maxQueued = 0;

  constructor(headers: readonly HeaderEvent[], options: VerifyOptions) {
    this.headers = headers;
    this.verifier = new DkimVerifier({ resolver: options.resolver, strict: true, ...(options.now ? { curTime: options.now } : {}) });
    // Key records parsed once across messages (the ARC validation shares the verifier's cache).
    const keyCache = sharedKeyCache(options.resolver);
    const withCache = this.verifier as unknown as { keyCache: MailauthKeyCache; arc: object };
    withCache.keyCache = keyCache;
    Object.defineProperty(withCache.arc, 'keyCache', { value: keyCache, enumerable: false, configurable: true, writable: true });
    this.verifier.on('error', (err: Error) => {
      this.failure ??= err;
    });
    // Verify at most maxSignatures DKIM-Signatures (mailauth reports the others as skipped, which
    // the strict mode makes a neutral result with our reason). The newest ARC-Message-Signature
    // is verified like a DKIM signature (its body hash in the same pass) when ARC is checked, and
    // does not count against maxSignatures; its result goes to the ARC data, not the DKIM results.
    const prepare = this.verifier.prepareSignature.bind(this.verifier);
    this.arc = options.arc === true;
    this.resolver = options.resolver;
    let seen = 0;
    this.verifier.prepareSignature = (sig: MailauthSignatureHeader) => {
      if (sig.type !== 'DKIM') {
        if (this.arc) prepare(sig);
        else sig.skip = 'ARC is not checked';
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

  /** Ends the message and checks the signatures (and the ARC chain); past `deadlineMs`, the unfinished ones are `temperror` (the chain `fail`). */
  async finish(deadlineMs: number): Promise<DkimVerification> {
    const signatures = signaturesOf(this.headers);
    const seals = this.arc ? this.headers.filter((h) => h.name.toLowerCase() === 'arc-seal').length : 0;
    const fallback = (reason: string): DkimVerification => {
      const results = signatures.map((s) => ({ result: 'temperror' as const, domain: s.domain, selector: s.selector, algorithm: s.algorithm, reason }));
      const arc: ArcResult | undefined = this.arc ? (seals > 0 ? { result: 'fail', instances: seals, sealers: [], reason } : { result: 'none', instances: 0, sealers: [] }) : undefined;
      return { results, result: results.length ? 'temperror' : 'none', domains: [], ...(arc ? { arc } : {}) };
    };
    if (this.failure) return fallback(`verifier failed: ${clean(this.failure.message)}`);
    this.ended = true;
    let timer: NodeJS.Timeout | undefined;
    let arc: ArcResult | undefined;
    const done = new Promise<'done'>((resolve) => {
      this.verifier.once('finish', () => resolve('done'));
      this.verifier.once('error', () => resolve('done'));
      this.verifier.end();
    }).then(async () => {
      // The seals' keys are looked up within the same deadline.
      if (this.arc && !this.failure) arc = await this.checkArc(seals);
      return 'done' as const;
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
    return { results, result: bestResult(results), domains, ...(headerFrom ? { headerFrom } : {}), ...(arc ? { arc } : {}) };
  }

  /** RFC 8617 §5.2 on what the verifier collected: the structure, every seal, the newest ARC-Message-Signature. Never throws. */
  private async checkArc(seals: number): Promise<ArcResult> {
    const data = this.verifier.arc;
    const chain = data.chain || [];
    const instances = chain.length ? chain[chain.length - 1].i : seals;
    if (!chain.length && !data.error) return seals > 0 ? { result: 'fail', instances, sealers: [], reason: 'ARC-Seal without a usable chain' } : { result: 'none', instances: 0, sealers: [] };
    let verdict;
    try {
      verdict = await arcValidate(data, { resolver: this.resolver, strict: true });
    } catch (err) {
      return { result: 'fail', instances, sealers: [], reason: `validation failed: ${clean((err as Error).message)}` };
    }
    const result = verdict.status.result;
    if (result === 'pass' && chain.length) {
      const sealers = chain.map((set) => clean(String(set['arc-seal']?.parsed?.d?.value ?? '')).toLowerCase());
      const last = aarText(chain[chain.length - 1]['arc-authentication-results']);
      const first = aarText(chain[0]['arc-authentication-results']);
      return { result: 'pass', instances, sealers, ...(last ? { lastAuthResults: last } : {}), ...(first ? { firstAuthResults: first } : {}) };
    }
    if (result === 'none') return seals > 0 ? { result: 'fail', instances, sealers: [], reason: 'ARC-Seal without a usable chain' } : { result: 'none', instances: 0, sealers: [] };
    const reason = verdict.status.comment ? clean(verdict.status.comment) : data.error?.message ? clean(data.error.message) : 'chain did not validate';
    return { result: 'fail', instances, sealers: [], reason };
  }
}

/** An ARC-Authentication-Results as text: the value without the `i=N;` prefix, unfolded, control characters out, at most 1,000 characters. */
function aarText(header: MailauthArcHeader | undefined): string | undefined {
  if (!header?.original) return undefined;
  const line = Buffer.isBuffer(header.original) ? header.original.toString('utf8') : String(header.original);
  const value = line.slice(line.indexOf(':') + 1).replace(/\r?\n[ \t]+/g, ' ');
  const payload = value.replace(/^\s*i\s*=\s*[0-9]+\s*;/, '');
  const text = clean(payload.replace(/\s+/g, ' '), 1000);
  return text || undefined;
}
