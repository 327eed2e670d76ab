/**
 * The client part of a triplet: the client's network rather than its address, because a large
 * sender retries from another machine of the same farm. An IPv4 client is cut to its /24 (an
 * IPv4-mapped IPv6 address such as `::ffff:192.0.2.7` counts as the IPv4 address it carries), an IPv6
 * client to its /64; both lengths are the policy's.
 * @module
 */
import { isIPv4, isIPv6 } from 'node:net';

/** A client address as a family and its bytes. */
interface ParsedAddress {
  family: 4 | 6;
  bytes: number[];
}

/** The 16 bytes of an IPv6 address (validated by `isIPv6`), an embedded IPv4 tail included. */
function ipv6Bytes(text: string): number[] {
  let s = text;
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const [a, b, c, d] = tail.split('.').map(Number);
    s = `${s.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const groups = (part: string | undefined) => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const front = groups(head);
  const back = groups(rest);
  const all = rest === undefined ? front : [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

/**
 * The client's address parsed, an IPv4-mapped IPv6 address as IPv4; undefined when it is not an IP
 * address (a local submission, `unknown`). A zone (`fe80::1%eth0`) and an `IPv6:` tag are dropped.
 */
export function parseClientAddress(address: string): ParsedAddress | undefined {
  const text = address.trim().replace(/^ipv6:/i, '').replace(/%.*$/, '');
  if (isIPv4(text)) return { family: 4, bytes: text.split('.').map(Number) };
  if (!isIPv6(text)) return undefined;
  const bytes = ipv6Bytes(text);
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
  return mapped ? { family: 4, bytes: bytes.slice(12) } : { family: 6, bytes };
}

/** The plain address as text: IPv4 dotted, IPv6 as eight uncompressed groups. */
function formatAddress(p: ParsedAddress): string {
  if (p.family === 4) return p.bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((p.bytes[i] << 8) | p.bytes[i + 1]).toString(16));
  return groups.join(':');
}

/**
 * The client's address as one text an exemption list can match: an IPv4-mapped IPv6 address as
 * the IPv4 address it carries; undefined when it is not an IP address.
 */
export function normalizeClientAddress(address: string): string | undefined {
  const parsed = parseClientAddress(address);
  return parsed && formatAddress(parsed);
}

/**
 * The client's network, `192.0.2.0/24` or `2001:db8:0:1:0:0:0:0/64`: the address with every bit past
 * the prefix cleared, and the prefix length (so that two policies cutting differently never share a
 * triplet). Undefined when the address is not an IP address.
 */
export function clientNetwork(address: string, ipv4Prefix = 24, ipv6Prefix = 64): string | undefined {
  const parsed = parseClientAddress(address);
  if (!parsed) return undefined;
  const prefix = parsed.family === 4 ? ipv4Prefix : ipv6Prefix;
  const bytes = parsed.bytes.map((b, i) => {
    const keep = Math.min(8, Math.max(0, prefix - i * 8));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
  return `${formatAddress({ family: parsed.family, bytes })}/${prefix}`;
}
