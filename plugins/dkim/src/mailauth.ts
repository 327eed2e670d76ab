// The parts of mailauth this plugin builds on that mailauth does not export with types: the DKIM
// verifier stream (lib/dkim/dkim-verifier.js), the streaming body hash (lib/dkim/body), the header
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

/** The verifier: a Writable taking the whole message (headers, empty line, body). */
export interface MailauthDkimVerifier extends Writable {
  results: MailauthResult[];
  headerFrom: string[];
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
  getPublicKey(type: 'DKIM', name: string, minBitLength: number | undefined, resolver: DnsResolver, options?: { strict?: boolean }): Promise<{ publicKey: string; rr: string; keyType: string; modulusLength?: number }>;
};

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
