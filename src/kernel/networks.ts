/**
 * IP addresses and CIDRs as policies, header rules and skip lists write them (`192.0.2.1`,
 * `10.0.0.0/8`, `2001:db8::/32`): one parser and one membership test for every place that lists
 * networks, so that they all accept and match the same things.
 * @module
 */
import { BlockList, isIP } from 'node:net';

/** A parsed network. */
export interface Network {
  /** The address part. */
  address: string;
  /** The prefix length (32 or 128 when none was written). */
  prefix: number;
  /** The address family. */
  family: 'ipv4' | 'ipv6';
}

/**
 * Parses `IP` or `IP/prefix`. Undefined when the text is not an IP address at all; an Error when it
 * is one with a bad prefix length.
 */
export function parseNetwork(text: string): Network | Error | undefined {
  const [address, bits] = text.split('/');
  const family = isIP(address);
  if (family === 0) return undefined;
  const max = family === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : Number(bits);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return new Error(`${JSON.stringify(text)}: bad prefix length (0 to ${max})`);
  return { address, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}

/** A set of networks. */
export class NetworkList {
  private readonly list = new BlockList();
  /** How many networks were added. */
  size = 0;

  /** Adds a parsed network. */
  add(n: Network): void {
    this.list.addSubnet(n.address, n.prefix, n.family);
    this.size++;
  }

  /** Whether `ip` is in one of the networks (false for anything that is not an IP address). */
  has(ip: string): boolean {
    const family = isIP(ip);
    return this.size > 0 && family !== 0 && this.list.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  }
}
