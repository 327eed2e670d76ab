// The parts of mailauth this plugin builds on that mailauth does not export with types: the DKIM
// verifier stream (lib/dkim/dkim-verifier.js), the ARC chain validation (lib/arc), the streaming body hash (lib/dkim/body), the header
// canonicalisation (lib/dkim/header) and a few helpers of lib/tools.js. They are loaded from the
// installed mailauth (^7.1) and typed here with what this plugin uses of them.
import { createRequire } from 'node:module';
import type { Writable } from 'node:stream';
import type { DnsResolver } from 'themis-milter/dns';

const require = createRequire(import.meta.url);

/** One signature's status as mailauth reports it. */
export interface MailauthStatus {
  result: string;
  comment?: string;
  aligned?: string | false;
  underSized?: number;
  header?: { d?: string | false; i?: string | false; s?: string; a?: string; b?: string | false };
}

/** One signature's result as mailauth reports it. */
export interface MailauthResult {
  signingDomain?: string;
  selector?: string;
  algo?: string;
  signature?: string;
  status: MailauthStatus;
  canonBodyLength?: number;
  canonBodyLengthTotal?: number;
  canonBodyLengthLimited?: boolean;
  canonBodyLengthLimit?: number;
}

/** A DKIM-Signature (or ARC-Message-Signature) header as the verifier prepares it. */
export interface MailauthSignatureHeader {
  type: 'DKIM' | 'ARC';
  skip?: string;
  invalid?: string;
  signingDomain?: string;
  selector?: string;
  parsed?: Record<string, { value: unknown } | undefined>;
}

/** One header of an ARC set as mailauth's chain parser keeps it. */
export interface MailauthArcHeader {
  parsed?: Record<string, { value: unknown } | undefined>;
  /** The header line as received (`Name: value`, folds kept). */
  original?: Buffer | string;
}

/** One ARC set (instance) of the chain. */
export interface MailauthArcSet {
  i: number;
  'arc-seal'?: MailauthArcHeader;
  'arc-message-signature'?: MailauthArcHeader;
  'arc-authentication-results'?: MailauthArcHeader;
  /** The newest set's ARC-Message-Signature result, set by the verifier. */
  messageSignature?: MailauthResult;
}

/** The ARC data the verifier collects from the header block (RFC 8617 §5.2 steps 1–3). */
export interface MailauthArcData {
  /** The sets ordered by instance; false without ARC headers (or when the structure is broken: see `error`). */
  chain: MailauthArcSet[] | false;
  /** The newest set. */
  lastEntry?: MailauthArcSet;
  /** Why the chain's structure is invalid (duplicate, missing or out-of-range instances, bad cv=, …). */
  error?: Error & { code?: string };
  warnings: string[];
}

/** What mailauth's `arc()` answers. */
export interface MailauthArcResult {
  status: { result: string; comment?: string; shouldSeal?: boolean };
  /** The highest instance (0 or false when none). */
  i?: number | false;
}

/** The verifier: a Writable taking the whole message (headers, empty line, body). */
export interface MailauthDkimVerifier extends Writable {
  results: MailauthResult[];
  headerFrom: string[];
  arc: MailauthArcData;
  prepareSignature(signatureHeader: MailauthSignatureHeader): void;
}

/** Options of the verifier. */
export interface MailauthVerifierOptions {
  resolver?: DnsResolver;
  strict?: boolean;
  minBitLength?: number;
  curTime?: Date;
}

type VerifierClass = new (options: MailauthVerifierOptions) => MailauthDkimVerifier;

/** A streaming canonicalised body hash. */
export interface MailauthBodyHash {
  update(chunk: Buffer): void;
  digest(encoding: 'base64'): string;
  bodyHashedBytes: number;
}

/** One header line for the canonicalisation: `line` is `Name: value` with CRLF folds, no final CRLF. */
export interface MailauthHeaderLine {
  key: string;
  casedKey: string;
  line: Buffer;
}

interface Canonicalised {
  canonicalizedHeader: Buffer;
  dkimHeaderOpts: Record<string, unknown>;
}

const verifierModule = require('mailauth/lib/dkim/dkim-verifier') as { DkimVerifier: VerifierClass };
const bodyModule = require('mailauth/lib/dkim/body') as { dkimBody(canon: string, hashAlgo: string, maxBodyLength: number | false): MailauthBodyHash };
const headerModule = require('mailauth/lib/dkim/header') as {
  generateCanonicalizedHeader(type: 'DKIM', lines: { keys: string; headers: MailauthHeaderLine[] }, options: Record<string, unknown>): Canonicalised;
};
const tools = require('mailauth/lib/tools') as {
  formatSignatureHeaderLine(type: 'DKIM', values: Record<string, unknown>, folded: boolean): string;
  getPublicKey(type: string, name: string, minBitLength: number | undefined, resolver: DnsResolver, options?: MailauthKeyOptions): Promise<{ publicKey: string; rr: string; keyType: string; modulusLength?: number }>;
  toALabel(domain: string): string;
};

const arcModule = require('mailauth/lib/arc') as {
  arc(data: MailauthArcData, options: { resolver?: DnsResolver; minBitLength?: number; strict?: boolean; ip?: string }): Promise<MailauthArcResult>;
};

/** ARC chain validation (RFC 8617 §5.2) of the data a verifier collected, once its newest ARC-Message-Signature is checked. */
export const arcValidate = arcModule.arc;
/** mailauth's DKIM verifier stream class. */
export const DkimVerifier: VerifierClass = verifierModule.DkimVerifier;
/** A streaming body hash: canonicalisation `relaxed`/`simple`, hash `sha256`, no length limit. */
export const dkimBody = bodyModule.dkimBody;
/** The canonicalised header block to sign, and the tags of the signature. */
export const generateCanonicalizedHeader = headerModule.generateCanonicalizedHeader;
/** `DKIM-Signature: …` from its tags, folded. */
export const formatSignatureHeaderLine = tools.formatSignatureHeaderLine;
/** Looks up and parses a DKIM key record. */
export const getPublicKey = tools.getPublicKey;
/** A domain name as DNS is asked for it (RFC 8616 §3: U-labels to A-labels), as getPublicKey does. */
export const toALabel = tools.toALabel;

/** What a key lookup depends on besides the record (mailauth's `createKeyCache` key). */
export interface MailauthKeyOptions {
  strict?: boolean;
  hashAlgo?: string;
}

/** The per-message key lookup cache the verifier and the ARC validation share (mailauth's `createKeyCache()`). */
export interface MailauthKeyCache {
  resolver: DnsResolver | undefined;
  get(type: string, name: string, minBitLength: number | undefined, options?: MailauthKeyOptions): Promise<unknown>;
}

/** A header block as mailauth parses it (lib/tools.js `parseHeaders`): one row per header, `line` the bytes `Name: value` with CRLF folds. */
export interface MailauthParsedHeaders {
  parsed: MailauthHeaderLine[];
  original: Buffer;
}

/** What goes into one new ARC set (mailauth's `createSeal` `seal` option). */
export interface MailauthSealOptions {
  signingDomain: string;
  selector: string;
  /** A PEM private key (mailauth also takes the 32 raw bytes of an Ed25519 seed). */
  privateKey: string | Buffer;
  /** `rsa-sha256` or `ed25519-sha256`; follows the key's type when unset. */
  algorithm?: string;
  /** The base64 `relaxed` SHA-256 body hash, for the prepared-input mode. */
  bodyHash?: string;
  /** `none`, `pass` or `fail`; required past `i=1`. */
  cv?: string;
  /** The ARC-Authentication-Results payload after `i=N; ` (`authserv-id; resinfo; …`, folds as CRLF). */
  authResults: string;
  signTime?: Date | number | string;
  /** Colon-separated header names the ARC-Message-Signature covers (ARC headers and Authentication-Results are always left out). */
  headerList?: string;
  /** An explicit instance; the highest existing one + 1 when unset. */
  i?: number;
}

/** One error of mailauth's `createSeal`. */
export interface MailauthSealError {
  type?: string;
  selector?: string;
  signingDomain?: string;
  err: Error & { code?: string };
}

/** What mailauth's `createSeal` answers: the three header lines (`Name: value`, CRLF folds, no final CRLF), ARC-Seal first, or none and the errors saying why. */
export interface MailauthSealResult {
  headers: string[];
  errors: MailauthSealError[];
  warnings: string[];
}

const arcSealModule = require('mailauth/lib/arc') as {
  createSeal(input: false, data: { headers: MailauthParsedHeaders; arc?: { chain: MailauthArcSet[] | false } | undefined; seal: MailauthSealOptions; strict?: boolean }): Promise<MailauthSealResult>;
  getARChain(headers: MailauthParsedHeaders, opts?: { strict?: boolean; warnings?: string[] }): MailauthArcSet[] | false;
};
const headerTools = require('mailauth/lib/tools') as {
  parseHeaders(buf: Buffer): MailauthParsedHeaders;
};

/**
 * mailauth's ARC sealer (RFC 8617 §5.1) in its prepared-input mode (`input` false): the parsed
 * header block and the body hash instead of the message. Answers the new set's three header lines or
 * the errors; throws only on a bug.
 */
export const createSeal = arcSealModule.createSeal;
/** The ARC sets of a parsed header block, by instance (throws on a broken structure; false without ARC headers). */
export const getARChain = arcSealModule.getARChain;
/** A header block (without the body) parsed the way mailauth's signer and verifier parse it. */
export const parseHeaders = headerTools.parseHeaders;
