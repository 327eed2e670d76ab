/**
 * The dkim plugin: DKIM (RFC 6376) verification of every signature of a message — RSA-SHA256 and
 * Ed25519-SHA256 (RFC 8463), relaxed and simple canonicalisation, through mailauth in strict mode —
 * streamed as the message arrives, with a per-policy matrix from result to action, an optional
 * `Authentication-Results:` header and a note for other plugins (DMARC), with the ARC (RFC 8617) chain
 * validated in the same pass; and DKIM signing with RSA and
 * Ed25519 keys (dual signing when a domain has both), over-signing, never twice with the same `d=`
 * and `s=`. `themis dkim keygen|test` make and check keys.
 * @module
 */
import { z } from 'zod';
import { NetworkList, definePlugin, fillTemplate, parseNetwork, replyConfigSchema, resolveReply, type FinalMessage, type HeaderEvent, type HookContext, type Verdict } from 'themis-milter';
import { createResolver } from 'themis-milter/dns';
import { dkimCommand } from './commands.ts';
import { KeyProblem, loadKey, type SigningKey } from './keys.ts';
import { fromAddress, fromDomain, signaturesOf } from './message.ts';
import { TableProblem, keysForAuthor, readKeyTable, readSigningTable, type SigningRule } from './tables.ts';
import { BodyHashes, signHeaders, type BodyCanon, type Canonicalization } from './sign.ts';
import { DEFAULT_ARC_SIGNED_HEADERS, arcSeal } from './arc-seal.ts';
import { DKIM_RESULTS, VerifyStream, type ArcResult, type DkimResultName, type DkimSignatureResult, type DkimVerification } from './verify.ts';

export { DKIM_RESULTS, NOT_CHECKED, VerifyStream, bestResult, type ArcResult, type ArcResultName, type DkimResultName, type DkimSignatureResult, type DkimVerification, type VerifyOptions } from './verify.ts';
export { BodyHashes, signHeaders, signedHeaders, type BodyCanon, type Canonicalization, type SignOptions } from './sign.ts';
export { keyRecord, loadKey, publicKeyTags, txtStrings, zoneLine, KeyProblem, type DkimAlgorithm, type DkimKeyConfig, type SigningKey } from './keys.ts';
export { headerBlock, headerLine } from './message.ts';
export { arcSeal, DEFAULT_ARC_SIGNED_HEADERS, MAX_ARC_INSTANCE, type ArcSealInput, type ArcSealResult, type ArcSealHeader, type ArcSealErrorCode } from './arc-seal.ts';
export { dkimCommand } from './commands.ts';

/**
 * What a result leads to: `ignore` (the note and headers only), `tag` (also the tag header), `hold`
 * (Postfix's hold queue), `tempfail` or `reject` (refused at end of message with the reply).
 */
export type DkimAction = 'ignore' | 'tag' | 'hold' | 'tempfail' | 'reject';

const action = z.enum(['ignore', 'tag', 'hold', 'tempfail', 'reject']);
const matrix = z.strictObject(Object.fromEntries(DKIM_RESULTS.map((r) => [r, action.optional()])) as Record<DkimResultName, z.ZodOptional<typeof action>>);
const headerName = z.string().regex(/^[\x21-\x39\x3b-\x7e]+$/, 'expected a header name');

/**
 * Defaults: only `fail` acts, and it tags. A DKIM failure alone says little (mailing lists and
 * forwarders break signatures of good mail): DMARC decides on it together with SPF and the author.
 */
export const DEFAULT_MATRIX: Readonly<Record<DkimResultName, DkimAction>> = { pass: 'ignore', fail: 'tag', neutral: 'ignore', temperror: 'ignore', permerror: 'ignore', none: 'ignore' };

/**
 * Headers signed by default: RFC 6376 §5.4.1's list, as OpenDKIM signs it, with the MIME headers
 * and Message-ID (as rspamd does). Each occurrence present is signed; `From` always is.
 */
export const DEFAULT_SIGNED_HEADERS: readonly string[] = [
  'From', 'Sender', 'Reply-To', 'Subject', 'Date', 'Message-ID', 'To', 'Cc', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding',
  'Content-ID', 'Content-Description', 'Resent-Date', 'Resent-From', 'Resent-Sender', 'Resent-To', 'Resent-Cc', 'Resent-Message-ID',
  'In-Reply-To', 'References', 'List-Id', 'List-Help', 'List-Unsubscribe', 'List-Unsubscribe-Post', 'List-Subscribe', 'List-Post', 'List-Owner', 'List-Archive',
];

/**
 * Headers over-signed by default (listed once more than they occur, so that none can be added
 * without breaking the signature): what a replayed or relayed message is most often changed in —
 * the author and the headers a reader sees (rspamd's over-signed set, less the list headers).
 */
export const DEFAULT_OVERSIGNED_HEADERS: readonly string[] = ['From', 'Sender', 'Reply-To', 'Subject', 'Date', 'To', 'Cc', 'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding'];

const DEFAULT_SKIP = { authenticated: true, clients: [] as string[], senders: [] as string[] };
const DEFAULT_TAG = { name: 'X-Themis-DKIM', value: '{result}' };
const DEFAULT_HEADERS = { authenticationResults: false };

/** The `dkim.verify` part of the policy field. */
export const dkimVerifyField = z.strictObject({
  /** Verify the message's signatures (default true). */
  enabled: z.boolean().default(true),
  /** Result → action (merged over {@link DEFAULT_MATRIX}): `pass`, `fail`, `neutral`, `temperror`, `permerror`, `none`. */
  actions: matrix.default({}),
  /** Refusal for `reject` (default `550 5.7.20 DKIM {result} for {domain}`; 5.7.21 when a `pass` is refused); placeholders `{result}`, `{domain}`, `{selector}`, `{reason}`. */
  reply: replyConfigSchema.default({}),
  /** Refusal for `tempfail` (default `451 4.7.5 DKIM check of {domain} failed temporarily`). */
  tempReply: replyConfigSchema.default({}),
  /** Who is not checked: authenticated clients (default true), relay networks and addresses, senders (`@domain`, `user@domain`). */
  skip: z.strictObject({ authenticated: z.boolean().default(true), clients: z.array(z.string()).default([]), senders: z.array(z.string()).default([]) }).default(DEFAULT_SKIP),
  /** The tag header for `tag` (default `X-Themis-DKIM: {result}`). */
  tag: z.strictObject({ name: headerName.default('X-Themis-DKIM'), value: z.string().default('{result}') }).default(DEFAULT_TAG),
  /** Which headers to add (default none): `authenticationResults` adds one `Authentication-Results:` with the `dkim=` results (and `arc=`). */
  headers: z.strictObject({ authenticationResults: z.boolean().default(false) }).default(DEFAULT_HEADERS),
  /** Validate the message's ARC chain (RFC 8617) in the same pass, for the note's `arc` (default true). */
  arc: z.boolean().default(true),
});

/** The `dkim.sign` part of the policy field: present, the policy's messages are signed. */
export const dkimSignField = z.strictObject({
  /** Sign with the keys of this domain, whatever the `From:` (default: the `From:` domain's keys, else its nearest parent domain's). */
  signingDomain: z.string().min(1).optional(),
  /** Headers to sign, each occurrence (default {@link DEFAULT_SIGNED_HEADERS}); `From` is always signed. */
  headers: z.array(headerName).default([...DEFAULT_SIGNED_HEADERS]),
  /** Headers to over-sign (default {@link DEFAULT_OVERSIGNED_HEADERS}); `[]` for none. */
  oversign: z.array(headerName).default([...DEFAULT_OVERSIGNED_HEADERS]),
  /** `header/body` canonicalisation (default `relaxed/relaxed`; `simple` headers are fragile behind a milter, see the README). */
  canonicalization: z.enum(['relaxed/relaxed', 'relaxed/simple', 'simple/relaxed', 'simple/simple']).default('relaxed/relaxed'),
  /** Signature lifetime in seconds (`x=`); default: none. */
  expire: z.number().int().positive().optional(),
});

/**
 * The `dkim.seal` part of the policy field: present, the policy's accepted messages get an ARC set
 * (RFC 8617 §5.1) — for a server that forwards mail (a mailing list, an alias to another provider), so
 * that the next hop can trust the authentication results it saw here once SPF and DKIM break.
 */
export const dkimSealField = z.strictObject({
  /** The sealing domain (`d=`): a key of this domain in `keys` (or the KeyTable) seals. */
  domain: z.string().min(1),
  /** The selector of that domain's key (default: its first RSA key, else its first key). RSA is what every validator accepts for ARC. */
  selector: z.string().min(1).optional(),
  /** Headers the ARC-Message-Signature covers, each occurrence (default {@link DEFAULT_ARC_SIGNED_HEADERS}); ARC headers and Authentication-Results never. */
  headers: z.array(headerName).default([...DEFAULT_ARC_SIGNED_HEADERS]),
});

const DEFAULT_VERIFY = { enabled: true, actions: {}, reply: {}, tempReply: {}, skip: DEFAULT_SKIP, tag: DEFAULT_TAG, headers: DEFAULT_HEADERS, arc: true };

/** The `dkim` policy field. */
export const dkimField = z.strictObject({
  /** Verification of the message's signatures: on by default. */
  verify: dkimVerifyField.default(DEFAULT_VERIFY),
  /** Signing: the policy's messages are signed when set (`sign: {}` for the defaults). */
  sign: dkimSignField.optional(),
  /** ARC sealing: the policy's accepted messages get an ARC set when set (`seal: { domain: 'forwarder.example' }`). */
  seal: dkimSealField.optional(),
});

/** The `dkim` field after validation. */
export type DkimPolicy = z.infer<typeof dkimField>;
/** `dkim.verify` after validation. */
export type DkimVerifyPolicy = DkimPolicy['verify'];
/** `dkim.sign` after validation. */
export type DkimSignPolicy = NonNullable<DkimPolicy['sign']>;
/** `dkim.seal` after validation. */
export type DkimSealPolicy = NonNullable<DkimPolicy['seal']>;

/** One signing key of the plugin options. */
export const dkimKeyOption = z.strictObject({
  /** The signing domain (`d=`). */
  domain: z.string().min(1),
  /** The selector (`s=`): the key is published at `<selector>._domainkey.<domain>`. */
  selector: z.string().min(1),
  /** The private key, PEM (PKCS#8 or PKCS#1, unencrypted): RSA of at least 1,024 bits (2,048 recommended) or Ed25519. */
  keyFile: z.string().min(1),
  /** `rsa-sha256` or `ed25519-sha256`; checked against the key's type (default: from the key). */
  algorithm: z.enum(['rsa-sha256', 'ed25519-sha256']).optional(),
});

/** Plugin-level options. */
export const dkimOptions = z.strictObject({
  /** Signing keys, read at setup (and at reload). Several domains; two keys of one domain (RSA and Ed25519) sign twice. */
  keys: z.array(dkimKeyOption).default([]),
  /**
   * OpenDKIM's KeyTable file (`NAME DOMAIN:SELECTOR:KEYFILE` per line), read at setup with every key it
   * names; with {@link signingTable}. Its keys sign as the SigningTable says (before `keys`' domain match).
   */
  keyTable: z.string().min(1).optional(),
  /**
   * OpenDKIM's SigningTable file (`PATTERN NAME [NAME…]` per line, `refile:` wildcards: `*@example.com`,
   * `*@*.example.com`, `alice@example.com`, `*`; a bare domain covers its addresses): the first line matching
   * the author (From:) address names the KeyTable keys that sign. With {@link keyTable}.
   */
  signingTable: z.string().min(1).optional(),
  /** DNS servers (`'192.0.2.53'`, `'127.0.0.1:5353'`, `'[2001:db8::53]:53'`); default: the system's. */
  dnsServers: z.array(z.string().min(1)).optional(),
  /** Per-query DNS timeout, ms (default 2,000). */
  dnsTimeout: z.number().int().positive().default(2_000),
  /** Deadline of the key lookups and checks at end of message, ms (default 5,000): past it, the unfinished signatures are `temperror`. */
  deadline: z.number().int().positive().default(5_000),
  /** Cached DNS answers (honouring their TTLs), at most this many (default 10,000; 0 disables the cache). */
  cacheEntries: z.number().int().min(0).default(10_000),
  /** The authserv-id of `Authentication-Results` (default: the MTA's `{j}`, else `localhost`). */
  authservId: z.string().min(1).optional(),
  /** Verify at most this many signatures of a message (default 10); the others are `neutral`, "not checked". */
  maxSignatures: z.number().int().positive().default(10),
});

/** Plugin-level options, validated. */
export type DkimOptions = z.infer<typeof dkimOptions>;

/** The plugin's error codes. */
export const DKIM_ERRORS = {
  THEMIS_DKIM_KEY: 'DKIM key {file} ({selector}._domainkey.{domain}): {reason}',
  THEMIS_DKIM_KEY_DUPLICATE: 'DKIM keys {file} and {other} are both configured for {selector}._domainkey.{domain}',
  THEMIS_DKIM_SIGN: 'DKIM signing as {selector}._domainkey.{domain} failed: {reason}',
  THEMIS_DKIM_TABLE: 'DKIM table {file}, line {line}: {reason}',
  THEMIS_DKIM_ARC_SEAL: 'ARC sealing as {selector}._domainkey.{domain} failed: {reason}',
  THEMIS_DKIM_ARC_SEAL_KEY: 'ARC sealing key {file} ({selector}._domainkey.{domain}) cannot seal: {reason}',
  THEMIS_DKIM_ARC_SEAL_REFUSED: 'ARC set not added as {selector}._domainkey.{domain}: {reason}',
} as const;

/** A code of the dkim plugin. */
export type DkimErrorCode = keyof typeof DKIM_ERRORS;

/**
 * The message note (`ctx.message.notes.of('dkim')`), set at end of message once the signatures are
 * checked (and when the message is signed). A DMARC plugin reads `results` (each with `domain`,
 * `result` and `aligned`) or `domains`; the headers plugin `{dkim.result}`.
 */
export interface DkimNote {
  /** One entry per DKIM-Signature of the message as received, in header order (empty when unsigned or not verified). */
  results: DkimSignatureResult[];
  /** The message's result: `pass` if any signature passes, else `temperror`, `fail`, `permerror`, `neutral`, `none` — the first found. */
  result: DkimResultName;
  /** The `d=` domains of the passing signatures, lower-cased, each once. */
  domains: string[];
  /** The `From:` domain. */
  headerFrom?: string;
  /** Whether the signatures were checked (false: every applying policy skips or disables verification). */
  verified: boolean;
  /** The signatures this plugin added, when it signed (set once the message is accepted: finalize). */
  signed?: { domain: string; selector: string; algorithm: string }[];
  /** The ARC set this plugin added, when a policy seals (set once the message is accepted: finalize). */
  sealed?: { instance: number; cv: 'none' | 'pass' | 'fail'; domain: string; selector: string; algorithm: string };
  /** Body bytes streamed through the plugin (hashed, never kept). */
  bodyBytes: number;
  /** The ARC (RFC 8617) result, when a policy that verifies the message has `verify.arc` on (the default). */
  arc?: ArcResult;
}

/**
 * RFC 7372: 5.7.20 "no passing DKIM signature found" — every result but pass; 5.7.21 "no acceptable DKIM
 * signature found" — signatures pass, and the policy refuses them anyway. (5.7.22, no valid author-matched
 * signature, is DMARC's to give.) RFC 3463: X.7.5 cryptographic failure, for the temporary refusal.
 */
const REJECT_REPLY = { code: 550, enhanced: '5.7.20', text: 'DKIM {result} for {domain}' };
const REJECT_PASS_REPLY = { code: 550, enhanced: '5.7.21', text: 'DKIM {result} for {domain}' };
const TEMP_REPLY = { code: 451, enhanced: '4.7.5', text: 'DKIM check of {domain} failed temporarily' };

const SEVERITY: Record<DkimAction, number> = { ignore: 0, tag: 1, hold: 2, tempfail: 3, reject: 4 };

/** Compiled skip lists of one policy, built once per configuration. */
function skipper(config: DkimVerifyPolicy) {
  const nets = new NetworkList();
  for (const c of config.skip.clients) {
    const network = parseNetwork(c);
    if (network !== undefined && !(network instanceof Error)) nets.add(network);
  }
  const senders = config.skip.senders.map((s) => s.toLowerCase());
  return (ip: string | undefined, sender: string, authenticated: boolean) => {
    if (authenticated && config.skip.authenticated) return 'authenticated';
    if (ip && nets.has(ip)) return 'listed client';
    const s = sender.toLowerCase();
    if (senders.some((x) => (x.startsWith('@') ? s.endsWith(x) : s === x))) return 'listed sender';
    return undefined;
  };
}

// RFC 8601 §2.2 pvalue: a domain-name may stand as is; anything else is a quoted-string.
const PVALUE_PLAIN = /^[A-Za-z0-9_+/=.-]+$/;
const pvalue = (v: string) => (PVALUE_PLAIN.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`);
// eslint-disable-next-line no-control-regex
const comment = (v: string) => v.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, ' ').replace(/[()\\]/g, '\\$&').slice(0, 120);

/** The `dkim=` resinfo of one signature (RFC 8601 §2.7.1), e.g. `dkim=pass header.d=example.com header.s=sel header.a=rsa-sha256 header.b=abcdefgh`. */
export function authResult(r: DkimSignatureResult): string {
  const parts = [`dkim=${r.result}`];
  if (r.reason && r.result !== 'pass') parts.push(`(${comment(r.reason)})`);
  if (r.domain) parts.push(`header.d=${pvalue(r.domain)}`);
  if (r.selector) parts.push(`header.s=${pvalue(r.selector)}`);
  if (r.algorithm) parts.push(`header.a=${pvalue(r.algorithm)}`);
  if (r.b) parts.push(`header.b=${pvalue(r.b)}`);
  return parts.join(' ');
}

/**
 * The `arc=` resinfo (RFC 8617 §4.2, RFC 8601), e.g. `arc=pass (i=2 as=lists.example.org,forwarder.example) smtp.remote-ip=192.0.2.1`
 * — `smtp.remote-ip` (RFC 8617 §10.1) when the client address is known.
 */
export function arcAuthResult(a: ArcResult, remoteIp?: string): string {
  const parts = [`arc=${a.result}`];
  if (a.result === 'pass') parts.push(`(${comment(`i=${a.instances} as=${a.sealers.join(',')}`)})`);
  else if (a.reason) parts.push(`(${comment(a.reason)})`);
  if (remoteIp && /^[0-9A-Fa-f:.]+$/.test(remoteIp)) parts.push(`smtp.remote-ip=${remoteIp}`);
  return parts.join(' ');
}

/** Per message: the streams in flight. Keyed by the message's header list, which lives as long as the message. */
interface InFlight {
  verify?: VerifyStream;
  hashes?: BodyHashes;
  bodyBytes: number;
  /** The incoming ARC chain's status, for the seal's `cv=` (when a policy seals). */
  arc?: ArcResult;
}

export default definePlugin({
  name: 'dkim',
  version: '0.1.0',
  kernel: '^1',
  claims: { field: 'dkim', schema: dkimField },
  options: dkimOptions,
  priority: 35,
  modifies: ['headers'],
  // Its Authentication-Results go into the kernel's one header per message (with spf's, dmarc's…).
  authenticates: true,
  // `simple` header canonicalisation needs `Name:value` and `Name: value` told apart (HeaderEvent.raw).
  exactHeaders: true,
  errors: DKIM_ERRORS,
  // The headers are recorded (no answer needed); the body is only hashed, never decided on.
  observes: ['header'],
  listens: ['body'],
  commands: { dkim: dkimCommand },
  setup({ options, metrics, log, error }) {
    // Keys first: a key that cannot sign is a configuration error, named with its file.
    const keys: SigningKey[] = [];
    for (const entry of options.keys) {
      let key: SigningKey;
      try {
        key = loadKey(entry);
      } catch (err) {
        throw error('THEMIS_DKIM_KEY', { file: entry.keyFile, selector: entry.selector, domain: entry.domain, reason: err instanceof KeyProblem ? err.message : String(err) }, { cause: err });
      }
      const twin = keys.find((k) => k.domain === key.domain && k.selector.toLowerCase() === key.selector.toLowerCase());
      if (twin) throw error('THEMIS_DKIM_KEY_DUPLICATE', { file: key.file, other: twin.file, selector: key.selector, domain: key.domain });
      keys.push(key);
    }

    // OpenDKIM's tables: both or neither; every key they name loaded now, like `keys`.
    if ((options.keyTable === undefined) !== (options.signingTable === undefined)) {
      const [given, missing] = options.keyTable ? ['keyTable', 'signingTable'] : ['signingTable', 'keyTable'];
      throw error('THEMIS_DKIM_TABLE', { file: (options.keyTable ?? options.signingTable)!, line: 0, reason: `${given} needs ${missing} as well (OpenDKIM's pair)` });
    }
    const tableKeys = new Map<string, SigningKey>();
    let signingRules: SigningRule[] = [];
    if (options.keyTable && options.signingTable) {
      try {
        const table = readKeyTable(options.keyTable);
        for (const [name, entry] of table) {
          let key: SigningKey;
          try {
            key = loadKey(entry);
          } catch (err) {
            throw error('THEMIS_DKIM_KEY', { file: entry.keyFile, selector: entry.selector, domain: entry.domain, reason: `${err instanceof KeyProblem ? err.message : String(err)} (${options.keyTable}, line ${entry.line})` }, { cause: err });
          }
          tableKeys.set(name, key);
        }
        signingRules = readSigningTable(options.signingTable, new Set(table.keys()));
      } catch (err) {
        if (err instanceof TableProblem) throw error('THEMIS_DKIM_TABLE', { file: err.file, line: err.line, reason: err.message }, { cause: err });
        throw err;
      }
    }

    const resolver = createResolver({ servers: options.dnsServers, timeoutMs: options.dnsTimeout, cache: options.cacheEntries > 0 ? { maxEntries: options.cacheEntries } : false });
    const results = metrics.counter({ name: 'results_total', help: 'DKIM results, one per signature checked (none: an unsigned message)', labelNames: ['result'] });
    const actions = metrics.counter({ name: 'actions_total', help: 'Actions taken on DKIM results, by policy and action', labelNames: ['policy', 'action'] });
    const signed = metrics.counter({ name: 'signatures_total', help: 'DKIM signatures added, by algorithm', labelNames: ['algorithm'] });
    const skips = new WeakMap<DkimVerifyPolicy, ReturnType<typeof skipper>>();
    const skipOf = (p: DkimVerifyPolicy) => {
      let s = skips.get(p);
      if (!s) skips.set(p, (s = skipper(p)));
      return s;
    };
    const inflight = new WeakMap<readonly HeaderEvent[], InFlight>();

    /** The policies that verify this message (enabled, skip lists applied). */
    const verifying = (ctx: HookContext<DkimPolicy>) => {
      const ip = ctx.session.client?.address;
      const sender = ctx.message?.sender?.address ?? '';
      return ctx.policies.filter((p) => p.config.verify.enabled && skipOf(p.config.verify)(ip, sender, ctx.session.auth !== undefined) === undefined);
    };
    /** The first policy that signs this message, if any. */
    const signing = (ctx: HookContext<DkimPolicy>) => ctx.policies.find((p) => p.config.sign !== undefined);
    /** The first policy that seals this message, if any. */
    const sealing = (ctx: HookContext<DkimPolicy>) => ctx.policies.find((p) => p.config.seal !== undefined);
    const sealKeys = new Map<DkimSealPolicy, SigningKey | null>();
    /** The key a seal policy names (its domain's, its selector's; RSA first), or null, said once per policy. */
    const sealKeyOf = (policy: string, config: DkimSealPolicy): SigningKey | null => {
      let key = sealKeys.get(config);
      if (key !== undefined) return key;
      const domain = config.domain.toLowerCase().replace(/\.$/, '');
      const all = [...keys, ...tableKeys.values()].filter((k) => k.domain === domain && (config.selector === undefined || k.selector.toLowerCase() === config.selector.toLowerCase()));
      key = all.find((k) => k.algorithm === 'rsa-sha256') ?? all[0] ?? null;
      sealKeys.set(config, key);
      if (!key) {
        const e = error('THEMIS_DKIM_ARC_SEAL_KEY', { file: '(none)', selector: config.selector ?? '*', domain, reason: `policy ${policy}: no key of this domain${config.selector ? ' and selector' : ''} in keys or the KeyTable; its messages are not sealed` });
        log.error({ code: e.code, ...e.details }, e.message);
      } else if (key.algorithm === 'ed25519-sha256') {
        log.warn({ policy, domain, selector: key.selector }, 'ARC sealing with an Ed25519 key: some validators (dkimpy) accept only rsa-sha256 for ARC');
      }
      return key;
    };
    const sealCounter = metrics.counter({ name: 'arc_seals_total', help: 'ARC sets added, by the cv= they carry; not sealed: refused (chain ended, 50 sets) or failed', labelNames: ['cv'] });

    /** The keys to sign with: the forced domain's, or the From: domain's (else its nearest parent's). */
    const keysFor = (config: DkimSignPolicy, headers: readonly HeaderEvent[]): SigningKey[] => {
      if (config.signingDomain) {
        const d = config.signingDomain.toLowerCase().replace(/\.$/, '');
        return keys.filter((k) => k.domain === d);
      }
      if (signingRules.length > 0) {
        const author = fromAddress(headers);
        const rule = author ? keysForAuthor(signingRules, author) : undefined;
        if (rule) return rule.keys.map((name) => tableKeys.get(name)!);
      }
      let d = fromDomain(headers);
      while (d) {
        const found = keys.filter((k) => k.domain === d);
        if (found.length) return found;
        const dot = d.indexOf('.');
        d = dot < 0 ? undefined : d.slice(dot + 1);
        if (d && !d.includes('.')) break; // never a top-level domain
      }
      return [];
    };

    /** Starts the streams this message needs, once (at the first body chunk, or at end of message). */
    const start = (ctx: HookContext<DkimPolicy>): InFlight => {
      const headers = ctx.message!.headers;
      let f = inflight.get(headers);
      if (f) return f;
      f = { bodyBytes: 0 };
      inflight.set(headers, f);
      const policies = verifying(ctx);
      // A seal needs the incoming chain validated (its cv=), whether or not the policy verifies DKIM.
      const seal = sealing(ctx);
      if (policies.length > 0 || seal) f.verify = new VerifyStream(headers, { resolver, maxSignatures: options.maxSignatures, arc: seal !== undefined || policies.some((p) => p.config.verify.arc) });
      const sign = signing(ctx)?.config.sign;
      const canons: BodyCanon[] = [];
      if (sign && (keys.length > 0 || tableKeys.size > 0)) canons.push(sign.canonicalization.split('/')[1] as BodyCanon);
      if (seal) canons.push('relaxed');
      if (canons.length > 0) f.hashes = new BodyHashes(canons);
      return f;
    };

    /** Signs the accepted message, over its headers as they will be delivered (`final`). */
    const sign = (ctx: HookContext<DkimPolicy>, f: InFlight, final: FinalMessage): DkimNote['signed'] => {
      const policy = signing(ctx);
      if (!policy || !f.hashes || !f.hashes.has(policy.config.sign!.canonicalization.split('/')[1] as BodyCanon)) return undefined;
      const config = policy.config.sign!;
      const message = ctx.message!;
      const headers = final.headers;
      if (!headers.some((h) => h.name.toLowerCase() === 'from')) {
        log.info({ policy: policy.name }, 'DKIM: not signed, the message has no From header');
        return undefined;
      }
      const present = signaturesOf(headers);
      const time = Math.floor(Date.now() / 1000);
      const canon = config.canonicalization as Canonicalization;
      const done: NonNullable<DkimNote['signed']> = [];
      for (const key of keysFor(config, headers)) {
        // Never a second signature of the same d= and s=: the message was signed already (a loop, a resubmission).
        if (present.some((s) => s.domain === key.domain && s.selector.toLowerCase() === key.selector.toLowerCase())) continue;
        try {
          const value = signHeaders(headers, key, { canonicalization: canon, headers: config.headers, oversign: config.oversign, bodyHash: f.hashes.digest(canon.split('/')[1] as BodyCanon), time, expire: config.expire });
          message.insertHeader(0, 'DKIM-Signature', value);
          // Two table names for one d= and s= still sign once.
          present.push({ domain: key.domain, selector: key.selector, algorithm: key.algorithm, b: '' });
          signed.inc({ algorithm: key.algorithm });
          done.push({ domain: key.domain, selector: key.selector, algorithm: key.algorithm });
        } catch (err) {
          const e = error('THEMIS_DKIM_SIGN', { selector: key.selector, domain: key.domain, reason: (err as Error).message }, { cause: err });
          log.error({ code: e.code, ...e.details }, e.message);
        }
      }
      return done;
    };

    /**
     * Adds the ARC set of a sealing policy, over the headers as they will be delivered (this plugin's
     * DKIM-Signature included) with this server's authentication results. Never refuses the message:
     * a set that cannot be made is logged, and the message goes on unsealed.
     */
    const seal = async (ctx: HookContext<DkimPolicy>, f: InFlight, final: FinalMessage): Promise<DkimNote['sealed']> => {
      const policy = sealing(ctx);
      if (!policy || !f.hashes?.has('relaxed')) return undefined;
      const config = policy.config.seal!;
      const key = sealKeyOf(policy.name, config);
      if (!key) return undefined;
      const headers = final.headers;
      const hasArc = headers.some((h) => h.name.toLowerCase() === 'arc-seal');
      const cv = !hasArc ? 'none' : f.arc?.result === 'pass' ? 'pass' : 'fail';
      // The seal records this server's results, arc= included (RFC 8617 §4.1.1), whether or not a policy writes it in Authentication-Results.
      const results = [...final.authenticationResults];
      if (!results.some((r) => /^arc=/i.test(r))) results.push(arcAuthResult(f.arc ?? { result: cv, instances: 0, sealers: [] }, ctx.session.client?.address));
      const r = await arcSeal({ headers, bodyHash: f.hashes.digest('relaxed'), cv, authservId: final.authservId, authResults: results, key, headerList: config.headers, time: Math.floor(Date.now() / 1000) });
      if (!r.ok) {
        const e = error(r.code, { file: key.file, selector: key.selector, domain: key.domain, reason: r.reason });
        // A chain that cannot take another set (ended by cv=fail, 50 sets) is a fact about the message, not a fault.
        if (r.code === 'THEMIS_DKIM_ARC_SEAL_REFUSED') log.info({ code: e.code, queueId: ctx.message?.queueId, ...e.details }, e.message);
        else log.error({ code: e.code, queueId: ctx.message?.queueId, ...e.details }, e.message);
        sealCounter.inc({ cv: r.code === 'THEMIS_DKIM_ARC_SEAL_REFUSED' ? 'refused' : 'failed' });
        return undefined;
      }
      // Inserted bottom-up at the top: ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results.
      for (let i = r.headers.length - 1; i >= 0; i--) ctx.message!.insertHeader(0, r.headers[i].name, r.headers[i].value);
      sealCounter.inc({ cv });
      return { instance: r.instance, cv, domain: key.domain, selector: key.selector, algorithm: key.algorithm };
    };

    return {
      async body(ctx, chunk) {
        const f = start(ctx);
        f.bodyBytes += chunk.length;
        f.hashes?.update(chunk);
        if (f.verify) await f.verify.write(chunk);
        return undefined;
      },

      async endOfMessage(ctx) {
        const message = ctx.message!;
        const f = start(ctx);
        // A message that signs keeps its body hashes until finalize (or abort, if it is refused).
        if (!f.hashes) inflight.delete(message.headers);
        const policies = verifying(ctx);

        let outcome: DkimVerification | undefined;
        if (f.verify) {
          const checked = await f.verify.finish(options.deadline);
          f.arc = checked.arc;
          // Checked only for a seal's cv=: no DKIM result of this message is reported.
          if (policies.length > 0) {
            outcome = checked;
            if (outcome.results.length === 0) results.inc({ result: 'none' });
            for (const r of outcome.results) results.inc({ result: r.result });
          }
        }
        const note: DkimNote = {
          results: outcome?.results ?? [],
          result: outcome?.result ?? 'none',
          domains: outcome?.domains ?? [],
          ...(outcome?.headerFrom ? { headerFrom: outcome.headerFrom } : {}),
          verified: outcome !== undefined,
          bodyBytes: f.bodyBytes,
          ...(outcome?.arc ? { arc: outcome.arc } : {}),
        };
        message.notes.set(note);
        if (!outcome) return undefined;

        // One Authentication-Results per message, whatever the number of policies.
        // (The kernel writes them with the other plugins' results, in one header.)
        if (policies.some((p) => p.config.verify.headers.authenticationResults)) {
          const rows = outcome.results.length ? outcome.results.map(authResult) : ['dkim=none'];
          for (const row of rows) message.addAuthenticationResult(row, { authservId: options.authservId });
          // arc= only for a message with ARC headers (an arc=none on every message says nothing).
          if (outcome.arc && outcome.arc.result !== 'none' && policies.some((p) => p.config.verify.headers.authenticationResults && p.config.verify.arc)) {
            message.addAuthenticationResult(arcAuthResult(outcome.arc, ctx.session.client?.address), { authservId: options.authservId });
          }
        }

        // The signature the result comes from: the first with the message's result.
        const deciding = outcome.results.find((r) => r.result === outcome.result);
        let worst: { action: DkimAction; policy: string } = { action: 'ignore', policy: '' };
        for (const p of policies) {
          const a = { ...DEFAULT_MATRIX, ...p.config.verify.actions }[outcome.result] ?? 'ignore';
          if (SEVERITY[a] > SEVERITY[worst.action]) worst = { action: a, policy: p.name };
        }
        if (worst.action === 'ignore') return undefined;
        actions.inc({ policy: worst.policy, action: worst.action });
        const policy = policies.find((p) => p.name === worst.policy)!.config.verify;
        const domain = deciding?.domain || outcome.headerFrom || '';
        const values = { result: outcome.result, domain, selector: deciding?.selector ?? '', reason: deciding?.reason ?? '' };
        const reason = `${worst.policy}: DKIM ${outcome.result}${domain ? ` for ${domain}` : ''}`;
        const detail = outcome.results.map((r) => `${r.result} d=${r.domain} s=${r.selector}${r.reason ? ` (${r.reason})` : ''}`).join('; ') || 'no signature';
        if (worst.action === 'tag') {
          message.addHeader(policy.tag.name, fillTemplate(policy.tag.value, values));
          return undefined;
        }
        if (worst.action === 'hold') return { action: 'quarantine', reason, detail } satisfies Verdict;
        if (worst.action === 'tempfail') return { action: 'tempfail', reason, detail, reply: resolveReply(policy.tempReply, TEMP_REPLY, values) };
        return { action: 'reject', reason, detail, reply: resolveReply(policy.reply, outcome.result === 'pass' ? REJECT_PASS_REPLY : REJECT_REPLY, values) };
      },

      // Signing waits for the message to be accepted: the signature must cover the headers as they
      // will be delivered, with what the plugins after this one (and the kernel) add or change.
      async finalize(ctx, final) {
        const message = ctx.message!;
        const f = inflight.get(message.headers);
        inflight.delete(message.headers);
        if (!f) return undefined;
        const note = message.notes.get<DkimNote>();
        const signedNow = sign(ctx, f, final);
        if (signedNow && note) note.signed = signedNow;
        const sealed = await seal(ctx, f, final);
        if (sealed && note) note.sealed = sealed;
        return undefined;
      },

      abort(ctx) {
        // The message was abandoned: its streams go with it (nothing else holds them).
        if (ctx.message) inflight.delete(ctx.message.headers);
      },
    };
  },
});
