// Signing keys: read from PEM files at setup, checked (type, size, algorithm), and the DNS record
// that publishes each one (RFC 6376 §3.6.1; RFC 8463 for Ed25519: the bare 32-byte key).
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** A DKIM signing algorithm. */
export type DkimAlgorithm = 'rsa-sha256' | 'ed25519-sha256';

/** A key as configured. */
export interface DkimKeyConfig {
  domain: string;
  selector: string;
  keyFile: string;
  algorithm?: DkimAlgorithm | undefined;
}

/** A key ready to sign with. */
export interface SigningKey {
  /** The signing domain (`d=`), lower-cased. */
  domain: string;
  /** The selector (`s=`). */
  selector: string;
  /** The PEM file it was read from. */
  file: string;
  /** `rsa-sha256` or `ed25519-sha256`, from the key's type. */
  algorithm: DkimAlgorithm;
  /** The private key. */
  privateKey: KeyObject;
}

/** Why a key cannot be used: `reason` is for the coded error naming the file. */
export class KeyProblem extends Error {}

/** RFC 8301 §3.2: signers MUST use RSA keys of at least 1,024 bits (2,048 recommended). */
export const MIN_RSA_BITS = 1024;

const DOMAIN = /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
const SELECTOR = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/i;

/** Checks a domain name for `d=` (ASCII, A-labels). */
export function validDomain(domain: string): boolean {
  return DOMAIN.test(domain);
}

/** Checks a selector for `s=`. */
export function validSelector(selector: string): boolean {
  return SELECTOR.test(selector);
}

/** The algorithm a private or public key signs with, or undefined for a type DKIM has none for. */
export function algorithmOf(key: KeyObject): DkimAlgorithm | undefined {
  return key.asymmetricKeyType === 'rsa' ? 'rsa-sha256' : key.asymmetricKeyType === 'ed25519' ? 'ed25519-sha256' : undefined;
}

/** Reads and checks one configured key; throws {@link KeyProblem} saying what is wrong with it. */
export function loadKey(entry: DkimKeyConfig): SigningKey {
  if (!validDomain(entry.domain)) throw new KeyProblem(`"${entry.domain}" is not a domain name (d=)`);
  if (!validSelector(entry.selector)) throw new KeyProblem(`"${entry.selector}" is not a selector (s=)`);
  let pem: Buffer;
  try {
    pem = readFileSync(entry.keyFile);
  } catch (err) {
    throw new KeyProblem(`cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new KeyProblem('not a PEM private key (PKCS#8 or PKCS#1, unencrypted)');
  }
  const algorithm = algorithmOf(privateKey);
  if (!algorithm) throw new KeyProblem(`a ${privateKey.asymmetricKeyType} key: DKIM signs with RSA or Ed25519`);
  if (entry.algorithm && entry.algorithm !== algorithm) throw new KeyProblem(`algorithm ${entry.algorithm} configured, but the file holds ${algorithm === 'rsa-sha256' ? 'an RSA' : 'an Ed25519'} key`);
  const bits = privateKey.asymmetricKeyDetails?.modulusLength;
  if (algorithm === 'rsa-sha256' && bits !== undefined && bits < MIN_RSA_BITS) throw new KeyProblem(`an RSA key of ${bits} bits: at least ${MIN_RSA_BITS} (RFC 8301), 2,048 recommended`);
  return { domain: entry.domain.toLowerCase().replace(/\.$/, ''), selector: entry.selector, file: entry.keyFile, algorithm, privateKey };
}

/** The `k=` and `p=` values publishing a (private or public) key. */
export function publicKeyTags(key: KeyObject): { k: 'rsa' | 'ed25519'; p: string } {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ type: 'spki', format: 'der' });
  // Ed25519: the bare key, the last 32 bytes of its SubjectPublicKeyInfo (RFC 8463 §4).
  if (pub.asymmetricKeyType === 'ed25519') return { k: 'ed25519', p: der.subarray(der.length - 32).toString('base64') };
  return { k: 'rsa', p: der.toString('base64') };
}

/** The TXT record's text for a key: `v=DKIM1; k=rsa; p=…`. */
export function keyRecord(key: KeyObject): string {
  const { k, p } = publicKeyTags(key);
  return `v=DKIM1; k=${k}; p=${p}`;
}

/** A TXT record's text as character-strings of at most 255 bytes each (RFC 1035 §3.3.14). */
export function txtStrings(text: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < text.length; i += 255) out.push(text.slice(i, i + 255));
  return out.length ? out : [''];
}

/** The zone-file line publishing a key: `sel._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=…" "…"`. */
export function zoneLine(domain: string, selector: string, key: KeyObject): string {
  return `${selector}._domainkey.${domain}. IN TXT ${txtStrings(keyRecord(key)).map((s) => `"${s}"`).join(' ')}`;
}
