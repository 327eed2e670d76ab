// Test helpers: signing keys on disk with their DNS records, messages split the way the MTA hands
// them to a milter, and messages put back together the way Postfix writes them after the milter's
// modifications.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { definePlugin, type Modification } from 'themis-milter';
import type { TestResult } from 'themis-milter/testing';
import { keyRecord } from '../../src/keys.ts';
import type { DkimNote } from '../../src/index.ts';

/** A key on disk and its record. */
export interface TestKey {
  domain: string;
  selector: string;
  keyFile: string;
  privateKey: KeyObject;
  /** `v=DKIM1; k=…; p=…` */
  record: string;
}

let dir: string | undefined;
/** A temporary directory for this test process. */
export function tempDir(): string {
  if (dir === undefined) {
    const made = mkdtempSync(join(tmpdir(), 'themis-dkim-'));
    process.once('exit', () => rmSync(made, { recursive: true, force: true }));
    dir = made;
  }
  return dir;
}

/** Makes a key (RSA-2048 or Ed25519), writes its PEM and returns it with its record. */
export function makeKey(domain: string, selector: string, type: 'rsa' | 'ed25519' = 'rsa', bits = 2048): TestKey {
  const { privateKey } = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: bits }) : generateKeyPairSync('ed25519');
  const keyFile = join(tempDir(), `${selector}.${domain}.${type}.pem`);
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return { domain, selector, keyFile, privateKey, record: keyRecord(privateKey) };
}

/** Headers as written after the colon (leading space kept, CRLF folds), and the body. */
export interface SplitMessage {
  headers: [string, string][];
  body: Buffer;
}

/** Splits a raw message (CRLF or LF) into its headers, as written after the colon, and its body. */
export function splitMessage(raw: string | Buffer): SplitMessage {
  const buf = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
  const text = buf.toString('latin1');
  const m = /\r?\n\r?\n/.exec(text);
  const headText = m ? text.slice(0, m.index) : text;
  const bodyStart = m ? m.index + m[0].length : buf.length;
  const headers: [string, string][] = [];
  for (const line of headText.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && headers.length) headers[headers.length - 1][1] += `\r\n${line}`;
    else if (line) {
      const colon = line.indexOf(':');
      headers.push([line.slice(0, colon), line.slice(colon + 1)]);
    }
  }
  // Header text back to UTF-8 strings (the MTA hands the milter the bytes; the kernel reads UTF-8).
  const utf8 = headers.map(([n, v]) => [n, Buffer.from(v, 'latin1').toString('utf8')] as [string, string]);
  return { headers: utf8, body: buf.subarray(bodyStart) };
}

/** The added/inserted headers of a result, by name. */
export function added(r: TestResult, name: string): string[] {
  return r.modifications.filter((m) => (m.type === 'insertHeader' || m.type === 'addHeader') && m.name.toLowerCase() === name.toLowerCase()).map((m) => (m as { value: string }).value);
}

/**
 * The message as Postfix writes it after the milter: inserted headers at their index (0 = top),
 * added ones at the end, changed and deleted ones in place, `Name: value` with LF folds turned into CRLF; the body with CRLF line ends.
 */
export function assemble(headers: readonly [string, string][], modifications: readonly Modification[], body: Buffer | string): Buffer {
  const lines = headers.map(([n, v]) => `${n}:${v}`);
  const line = (name: string, value: string) => `${name}: ${value.replace(/\r?\n/g, '\r\n')}`;
  for (const m of modifications) {
    if (m.type === 'insertHeader') lines.splice(m.index, 0, line(m.name, m.value));
    else if (m.type === 'addHeader') lines.push(line(m.name, m.value));
    else if (m.type === 'changeHeader') {
      // The index-th header of that name (1-based); '' deletes it; past the count it is added.
      const lower = m.name.toLowerCase();
      let seen = 0;
      const at = lines.findIndex((l) => l.slice(0, l.indexOf(':')).toLowerCase() === lower && ++seen === m.index);
      if (m.value === '') {
        if (at >= 0) lines.splice(at, 1);
      } else if (at >= 0) lines[at] = line(m.name, m.value);
      else lines.push(line(m.name, m.value));
    }
  }
  const b = typeof body === 'string' ? Buffer.from(body.replace(/\r?\n/g, '\r\n')) : body;
  return Buffer.concat([Buffer.from(lines.map((l) => `${l}\r\n`).join('') + '\r\n', 'utf8'), b]);
}

/** Signs a raw message with mailauth's own signer (not the plugin's): the signed message. */
export async function mailauthSign(raw: string | Buffer, key: TestKey, options: { canonicalization?: string; headerList?: string; maxBodyLength?: number } = {}): Promise<Buffer> {
  const { dkimSign } = await import('mailauth');
  const input = typeof raw === 'string' ? Buffer.from(raw) : raw;
  const r = await dkimSign(input, {
    signatureData: [{ signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, canonicalization: options.canonicalization ?? 'relaxed/relaxed', ...(options.maxBodyLength !== undefined ? { maxBodyLength: options.maxBodyLength } : {}) }],
    ...(options.headerList ? { headerList: options.headerList } : {}),
  } as Parameters<typeof dkimSign>[1]);
  if (r.errors.length) throw new Error(`mailauth could not sign: ${JSON.stringify(r.errors)}`);
  return Buffer.concat([Buffer.from(r.signatures), input]);
}

/** A plain test message (CRLF). */
export function sampleMessage(from = 'Alice <alice@example.com>', body = 'Hello Bob,\r\n\r\nthe report is attached.\r\n\r\nAlice\r\n'): string {
  return `From: ${from}\r\nTo: Bob <bob@example.net>\r\nSubject: The quarterly report\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${body}`;
}

/** A plugin that runs after dkim at end of message and keeps what dkim's note said, as a DMARC plugin would read it. */
export function noteSpy() {
  const notes: (DkimNote | undefined)[] = [];
  const plugin = definePlugin({
    name: 'dkimspy',
    version: '1.0.0',
    kernel: '^1',
    priority: 0,
    setup: () => ({
      endOfMessage(ctx) {
        notes.push(ctx.message!.notes.of<DkimNote>('dkim'));
      },
    }),
  });
  return { plugin, notes, last: () => notes.at(-1) };
}

/**
 * Signs with an `l=` of our choosing — one no signer would write (a length past the body): built
 * from mailauth's canonicalisation directly, so the signature itself is valid.
 */
export async function signWithLength(raw: string, key: TestKey, length: number): Promise<Buffer> {
  const { dkimBody, generateCanonicalizedHeader, formatSignatureHeaderLine } = await import('../../src/mailauth.ts');
  const { sign } = await import('node:crypto');
  const { headers, body } = splitMessage(raw);
  const hash = dkimBody('relaxed', 'sha256', false);
  hash.update(body);
  const lines = { keys: 'From: Subject', headers: headers.filter(([n]) => /^(from|subject)$/i.test(n)).map(([n, v]) => ({ key: n.toLowerCase(), casedKey: n, line: Buffer.from(`${n}:${v}`) })) };
  const { canonicalizedHeader, dkimHeaderOpts } = generateCanonicalizedHeader('DKIM', lines, { signingDomain: key.domain, selector: key.selector, algorithm: 'rsa-sha256', canonicalization: 'relaxed/relaxed', bodyHash: hash.digest('base64'), bodyHashedBytes: length, timestamp: Math.floor(Date.now() / 1000) });
  const b = sign('rsa-sha256', canonicalizedHeader, key.privateKey).toString('base64');
  return Buffer.concat([Buffer.from(`${formatSignatureHeaderLine('DKIM', { ...dkimHeaderOpts, b }, true)}\r\n`), Buffer.from(raw)]);
}

/**
 * Adds the next ARC set (RFC 8617) with mailauth's own sealer: the sealed message. `authResults` is
 * what the sealer records (`authserv-id; dkim=…; spf=…; dmarc=…`); `cv` `none` for the first set,
 * `pass` (or `fail`) for the next ones.
 */
export async function mailauthSeal(raw: string | Buffer, key: TestKey, options: { authResults: string; cv?: 'none' | 'pass' | 'fail'; i?: number }): Promise<Buffer> {
  const { sealMessage } = await import('mailauth');
  const input = typeof raw === 'string' ? Buffer.from(raw) : raw;
  const headers = await sealMessage(input, {
    signingDomain: key.domain,
    selector: key.selector,
    privateKey: key.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    authResults: options.authResults,
    ...(options.cv ? { cv: options.cv } : {}),
    ...(options.i !== undefined ? { i: options.i } : {}),
  });
  if (!headers.length) throw new Error('mailauth could not seal');
  return Buffer.concat([headers, input]);
}
