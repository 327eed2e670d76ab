/**
 * Subjects: what a rate limit counts. A subject is a kind (`sender`, `saslUser`, `clientIp/24`, …)
 * or a composite (`saslUser+clientIp`), and a message yields one value per subject (several for
 * `recipient` and `recipientDomain`). Values are normalized (lower case, IP networks) so that one
 * sender is one counter however it is written; keys carry a hash of the value, never the value.
 * @module
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';

/** A subject kind. */
export type SubjectKind = 'sender' | 'sender+' | 'senderDomain' | 'senderDomain+' | 'saslUser' | 'clientIp' | 'recipient' | 'recipientDomain' | 'policy';

/** One part of a subject. */
export interface SubjectPart {
  /** The kind. */
  kind: SubjectKind;
  /** For `clientIp`: the IPv4 prefix length counted together (32 = the address). */
  v4Prefix?: number;
  /** For `clientIp`: the IPv6 prefix length counted together (default 64: one IPv6 site is one client). */
  v6Prefix?: number;
}

/** A parsed subject. */
export interface SubjectSpec {
  /** Its parts (one, or several for a composite). */
  parts: SubjectPart[];
  /** Canonical text (`saslUser+clientIp/24/64`), part of the counter's key. */
  name: string;
}

const KINDS: SubjectKind[] = ['senderDomain+', 'senderDomain', 'sender+', 'sender', 'saslUser', 'clientIp', 'recipientDomain', 'recipient', 'policy'];

/** The value used for the null sender (`MAIL FROM:<>`, bounces): one shared subject, documented. */
export const NULL_SENDER = '<>';

/**
 * Parses `sender+`, `clientIp/24`, `saslUser+clientIp`, or a list of kinds (a composite). Throws with
 * the accepted forms when the text is not one of them.
 */
export function parseSubject(input: string | string[]): SubjectSpec {
  const texts = Array.isArray(input) ? input : [input];
  const parts: SubjectPart[] = [];
  for (const text of texts) {
    let rest = text.trim();
    while (rest.length > 0) {
      const kind = KINDS.find((k) => rest.startsWith(k) && !/^[A-Za-z]/.test(rest.slice(k.length)));
      if (!kind) throw new Error(`unknown subject ${JSON.stringify(text)}: expected ${KINDS.slice().reverse().join(', ')}, clientIp/V4PREFIX[/V6PREFIX], or several joined with + (saslUser+clientIp)`);
      rest = rest.slice(kind.length);
      const part: SubjectPart = { kind };
      if (kind === 'clientIp') {
        const m = /^\/(\d{1,2})(?:\/(\d{1,3}))?/.exec(rest);
        part.v4Prefix = 32;
        part.v6Prefix = 64;
        if (m) {
          part.v4Prefix = Number(m[1]);
          if (m[2] !== undefined) part.v6Prefix = Number(m[2]);
          rest = rest.slice(m[0].length);
        }
        if (part.v4Prefix > 32 || part.v4Prefix < 1 || part.v6Prefix! > 128 || part.v6Prefix! < 1) throw new Error(`subject ${JSON.stringify(text)}: prefixes are 1–32 for IPv4 and 1–128 for IPv6`);
      }
      parts.push(part);
      if (rest.startsWith('+')) rest = rest.slice(1);
      else if (rest.length > 0) throw new Error(`unknown subject ${JSON.stringify(text)}: expected + between kinds`);
    }
  }
  if (parts.length === 0) throw new Error('expected a subject such as sender+ or saslUser');
  if (parts.length > 1 && parts.some((p) => p.kind === 'recipient' || p.kind === 'recipientDomain' || p.kind === 'policy')) throw new Error(`subject ${JSON.stringify(texts.join('+'))}: recipient, recipientDomain and policy cannot be combined with other kinds`);
  const name = parts.map((p) => (p.kind === 'clientIp' ? `clientIp/${p.v4Prefix}/${p.v6Prefix}` : p.kind)).join('+');
  return { parts, name };
}

/** What a message offers to subjects. */
export interface SubjectFacts {
  /** Envelope sender (`''` for the null sender), undefined before MAIL. */
  sender: string | undefined;
  /** SASL login. */
  auth: string | undefined;
  /** Client IP (none for local submissions). */
  clientIp: string | undefined;
  /** Accepted recipients. */
  recipients: readonly string[];
}

/** One value of a subject for a message, and what it costs. */
export interface SubjectValue {
  /** The normalized value (`alice@example.com`, `192.0.2.0/24`, `alice|192.0.2.7`). */
  value: string;
  /** Units to count for it. */
  cost: number;
}

const domainOf = (address: string) => {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : address.slice(at + 1);
};

/** `192.0.2.77` with prefix 24 → `192.0.2.0/24`; a full-length prefix gives the address alone. */
export function networkOf(ip: string, v4Prefix: number, v6Prefix: number): string {
  const family = isIP(ip);
  if (family === 4) {
    if (v4Prefix === 32) return ip;
    const n = ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const net = Math.floor(n / 2 ** (32 - v4Prefix)) * 2 ** (32 - v4Prefix);
    return `${[24, 16, 8, 0].map((s) => Math.floor(net / 2 ** s) % 256).join('.')}/${v4Prefix}`;
  }
  if (family === 6) {
    const groups = expandIPv6(ip);
    if (v6Prefix === 128) return groups.map((g) => g.toString(16)).join(':');
    const out = groups.map((g, i) => {
      const bits = Math.min(16, Math.max(0, v6Prefix - i * 16));
      return bits === 16 ? g : bits === 0 ? 0 : g & (0xffff << (16 - bits)) & 0xffff;
    });
    return `${out.map((g) => g.toString(16)).join(':')}/${v6Prefix}`;
  }
  return ip;
}

function expandIPv6(ip: string): number[] {
  let text = ip.toLowerCase();
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = v4[1].split('.').map(Number);
    text = text.slice(0, -v4[1].length) + `${((o[0] << 8) | o[1]).toString(16)}:${((o[2] << 8) | o[3]).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined ? (tail ? tail.split(':') : []) : [];
  const zeros = tail !== undefined ? 8 - h.length - t.length : 0;
  return [...h, ...Array(zeros).fill('0'), ...t].map((g) => parseInt(g, 16));
}

/**
 * The subject's values for a message; empty when the subject does not apply (`saslUser` without
 * SMTP AUTH, `clientIp` for a local submission, a recipient subject with no recipient).
 */
export function subjectValues(spec: SubjectSpec, facts: SubjectFacts, cost: 'message' | 'recipient'): SubjectValue[] {
  const unique = [...new Set(facts.recipients.map((r) => r.toLowerCase()))];
  const messageCost = cost === 'recipient' ? unique.length : 1;
  const part0 = spec.parts[0];
  if (part0.kind === 'recipient') return unique.map((r) => ({ value: r, cost: 1 }));
  if (part0.kind === 'recipientDomain') {
    const byDomain = new Map<string, number>();
    for (const r of unique) byDomain.set(domainOf(r), (byDomain.get(domainOf(r)) ?? 0) + 1);
    return [...byDomain].map(([value, n]) => ({ value, cost: cost === 'recipient' ? n : 1 }));
  }
  if (part0.kind === 'policy') return [{ value: '', cost: messageCost }];
  const values: string[] = [];
  for (const part of spec.parts) {
    const v = partValue(part, facts);
    if (v === undefined) return [];
    values.push(v);
  }
  return [{ value: values.join('|'), cost: messageCost }];
}

function partValue(part: SubjectPart, facts: SubjectFacts): string | undefined {
  const sender = facts.sender === undefined ? undefined : facts.sender === '' ? NULL_SENDER : facts.sender.toLowerCase();
  const login = facts.auth ? facts.auth.toLowerCase() : undefined;
  switch (part.kind) {
    case 'sender':
      return sender;
    case 'sender+':
      return login ?? sender;
    case 'senderDomain':
      return sender === undefined || sender === NULL_SENDER ? sender : domainOf(sender);
    case 'senderDomain+':
      // A login without a domain (`alice`) counts as itself: there is no domain to share.
      if (login) return domainOf(login);
      return sender === undefined || sender === NULL_SENDER ? sender : domainOf(sender);
    case 'saslUser':
      return login;
    case 'clientIp':
      return facts.clientIp ? networkOf(facts.clientIp, part.v4Prefix ?? 32, part.v6Prefix ?? 64) : undefined;
    default:
      return undefined;
  }
}

/** The store key of a policy's counter for one subject value: no address appears in it. */
export function subjectKey(policy: string, spec: SubjectSpec, value: string): string {
  const digest = createHash('sha256').update(value).digest();
  return `rl:${encodeURIComponent(policy)}:${spec.name}:${base32(digest).slice(0, 26)}`;
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';

function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}
