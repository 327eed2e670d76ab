/**
 * Policy matching: which policies apply to a message, in which order. Policies are evaluated in
 * ascending priority (ties by name, so the order never depends on how they were written); each one
 * matches on source, destination, direction and pool. Fixes the original's bugs: a group named
 * `company` is not `any`, CIDRs use any-of semantics, domains compare case-insensitively, hyphens
 * and `+` are valid in addresses, `bypass` with destination `any` still bypasses.
 * @module
 */
import { BlockList, isIP } from 'node:net';
import { ThemisError } from './errors.ts';

/** A policy as written in the configuration (plugin fields aside). */
export interface PolicyDefinition {
  /** Unique name. */
  name: string;
  /** Evaluation order: lower first (default 5, as in the original). Ties are ordered by name. */
  priority?: number;
  /** A disabled policy is skipped (default true). */
  enabled?: boolean;
  /** `regular` (default) hands the policy to its plugins; `bypass` accepts the message at once when it matches. */
  type?: 'regular' | 'bypass';
  /** After this policy matched, later policies are not evaluated. */
  stopHere?: boolean;
  /** What the policy applies to; everything when absent. */
  match?: PolicyMatch;
}

/** Matching criteria. Every given criterion must hold. */
export interface PolicyMatch {
  /**
   * Senders: selectors of which any may match (see {@link Selector}). Matches when the sender, its
   * domain, the SASL login or the client IP is selected. Default `any`.
   */
  source?: Selector | Selector[];
  /** Recipients: matches when at least one recipient (or its domain) is selected. Default `any`. */
  destination?: Selector | Selector[];
  /** `inbound`: not outbound. `outbound`: the client authenticated, or its IP is in `outboundNetworks`. */
  direction?: 'inbound' | 'outbound' | 'any';
  /** The policy applies only on the MTAs of this pool (by their `{j}` host name). */
  pool?: string;
}

/**
 * A selector: `any`; a group name; `!selector` (negation: none of it); `@domain`; `user@domain`;
 * an IPv4/IPv6 address or CIDR; `sasl:login` (a SASL login, `sasl:*` for any authenticated client).
 */
export type Selector = string;

/** A pool of MTAs. */
export interface PoolDefinition {
  /** MTA host names as Postfix reports them in `{j}` (`myhostname`). */
  servers: string[];
  /** Also apply the policies that name no pool (default false: pool members run only their pool's policies). */
  fallbackToGlobal?: boolean;
}

/** Everything policy matching reads. */
export interface PolicySettings {
  /** Named sets of selectors (members: `@domain`, `user@domain`, IPs, CIDRs, `sasl:login`, other group names). */
  groups?: Record<string, Selector[]>;
  /** Named pools. */
  pools?: Record<string, PoolDefinition>;
  /** Client networks whose mail is outbound even without SMTP AUTH (selectors, typically CIDRs). */
  outboundNetworks?: Selector[];
}

/** What is known about a message when policies are matched. */
export interface MatchFacts {
  /** Client IP, if the connection has one (local submissions have none). */
  clientIp?: string;
  /** Envelope sender (`''` for the null sender), once MAIL was seen. */
  sender?: string;
  /** SASL login, if the client authenticated. */
  auth?: string;
  /** Recipients seen so far (for destination matching). */
  recipients?: readonly string[];
  /** The MTA's host name (`{j}`), for pools. */
  mta?: string;
}

/** One selector, compiled. */
interface CompiledSelector {
  negated: boolean;
  any: boolean;
  domains: Set<string>;
  addresses: Set<string>;
  logins: Set<string>;
  anyLogin: boolean;
  networks: BlockList | undefined;
}

/** A compiled policy. */
export interface CompiledPolicy {
  /** The definition. */
  readonly definition: PolicyDefinition;
  /** Its name. */
  readonly name: string;
  /** Effective priority. */
  readonly priority: number;
  /** Its pool, if any. */
  readonly pool: string | undefined;
}

interface Compiled extends CompiledPolicy {
  source: CompiledSelector[];
  destination: CompiledSelector[];
  direction: 'inbound' | 'outbound' | 'any';
}

/** The outcome of matching: the policies that apply, in order, and whether a bypass policy decided. */
export interface MatchResult {
  /** Matching regular policies, in evaluation order (stops after a `stopHere` policy). */
  policies: CompiledPolicy[];
  /** The bypass policy that matched, if any (the message is accepted at once). */
  bypass: CompiledPolicy | undefined;
}

const GROUP_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** Policies, groups and pools compiled once per configuration; {@link PolicyMatcher.match} is cheap. */
export class PolicyMatcher {
  private readonly policies: Compiled[];
  private readonly pools: Map<string, { servers: Set<string>; fallbackToGlobal: boolean }>;
  private readonly outbound: CompiledSelector[];

  /** Compiles; throws `THEMIS_ERR_POLICY_FIELD` naming the policy and the bad selector or reference. */
  constructor(policies: readonly PolicyDefinition[], settings: PolicySettings = {}) {
    const groups = settings.groups ?? {};
    this.pools = new Map(Object.entries(settings.pools ?? {}).map(([name, p]) => [name, { servers: new Set(p.servers.map((s) => s.toLowerCase())), fallbackToGlobal: p.fallbackToGlobal ?? false }]));
    this.outbound = (settings.outboundNetworks ?? []).map((s, i) => compileSelector(s, groups, `outboundNetworks[${i}]`));
    const seen = new Set<string>();
    this.policies = policies
      .map((p, index) => {
        const fail = (path: string, reason: string): never => {
          throw new ThemisError('THEMIS_ERR_POLICY_FIELD', { index, policy: p.name, path, reason });
        };
        if (seen.has(p.name)) fail('name', `another policy is already called ${JSON.stringify(p.name)}`);
        seen.add(p.name);
        const m = p.match ?? {};
        if (m.pool !== undefined && !this.pools.has(m.pool)) fail('match.pool', `no pool named ${JSON.stringify(m.pool)} (pools: ${[...this.pools.keys()].join(', ') || 'none'})`);
        const compile = (field: 'source' | 'destination') => {
          const list = m[field] === undefined ? ['any'] : Array.isArray(m[field]) ? (m[field] as string[]) : [m[field] as string];
          return list.map((s, i) => {
            try {
              return compileSelector(s, groups, `match.${field}[${i}]`);
            } catch (err) {
              return fail(`match.${field}${list.length > 1 ? `[${i}]` : ''}`, (err as Error).message);
            }
          });
        };
        return { definition: p, name: p.name, priority: p.priority ?? 5, pool: m.pool, source: compile('source'), destination: compile('destination'), direction: m.direction ?? 'any', index };
      })
      .filter((p) => p.definition.enabled !== false)
      .sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * True when some policy matches on the client, the sender or the recipients: the kernel then
   * needs CONNECT, MAIL and RCPT from the MTA even if no plugin taps them (asked as no-reply).
   */
  get needsEnvelope(): boolean {
    return this.policies.some((p) => p.direction !== 'any' || p.source.some((x) => !x.any || x.negated) || p.destination.some((x) => !x.any || x.negated));
  }

  /** True when some enabled policy is a bypass: the kernel then answers MAIL and RCPT itself, to accept early. */
  get hasBypass(): boolean {
    return this.policies.some((p) => p.definition.type === 'bypass');
  }

  /** Every enabled policy in evaluation order. */
  get ordered(): readonly CompiledPolicy[] {
    return this.policies;
  }

  /** The policies that apply to what is known of a message. */
  match(facts: MatchFacts): MatchResult {
    const result: MatchResult = { policies: [], bypass: undefined };
    const mta = facts.mta?.toLowerCase();
    const hostPools = mta === undefined ? [] : [...this.pools].filter(([, p]) => p.servers.has(mta));
    // A host in no pool runs the global policies; a host in pools runs theirs, plus the global ones
    // when any of its pools says fallbackToGlobal. A host in several pools runs all of theirs.
    const inPool = new Set(hostPools.map(([name]) => name));
    const global = hostPools.length === 0 || hostPools.some(([, p]) => p.fallbackToGlobal);
    const outbound = facts.auth !== undefined || (facts.clientIp !== undefined && this.outbound.some((s) => selectsIp(s, facts.clientIp!)));
    for (const p of this.policies) {
      if (p.pool === undefined ? !global : !inPool.has(p.pool)) continue;
      if (p.direction === 'outbound' && !outbound) continue;
      if (p.direction === 'inbound' && outbound) continue;
      if (!p.source.some((s) => matchesSource(s, facts))) continue;
      if (!p.destination.some((s) => matchesDestination(s, facts.recipients ?? []))) continue;
      if (p.definition.type === 'bypass') {
        result.bypass = p;
        break;
      }
      result.policies.push(p);
      if (p.definition.stopHere) break;
    }
    return result;
  }
}

function compileSelector(raw: string, groups: Record<string, Selector[]>, where: string, depth = 0): CompiledSelector {
  if (depth > 8) throw new Error(`groups nest too deep (a cycle?) at ${where}`);
  const s = raw.trim();
  const negated = s.startsWith('!');
  const body = negated ? s.slice(1).trim() : s;
  const out: CompiledSelector = { negated, any: false, domains: new Set(), addresses: new Set(), logins: new Set(), anyLogin: false, networks: undefined };
  const add = (member: string, path: string, d: number): void => {
    const m = member.trim();
    if (m === 'any') {
      out.any = true;
      return;
    }
    if (m.startsWith('sasl:')) {
      const login = m.slice(5).toLowerCase();
      if (login === '*') out.anyLogin = true;
      else if (login === '') throw new Error(`${JSON.stringify(member)}: empty SASL login`);
      else out.logins.add(login);
      return;
    }
    if (m.startsWith('@')) {
      if (!/^@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/.test(m)) throw new Error(`${JSON.stringify(member)} is not a valid @domain`);
      out.domains.add(m.toLowerCase().replace(/\.$/, ''));
      return;
    }
    if (m.includes('@')) {
      if (!/^[^\s@]+@[A-Za-z0-9.-]+$/.test(m)) throw new Error(`${JSON.stringify(member)} is not a valid user@domain`);
      out.addresses.add(m.toLowerCase());
      return;
    }
    const [addr, prefix] = m.split('/');
    const family = isIP(addr);
    if (family !== 0) {
      const bits = prefix === undefined ? (family === 4 ? 32 : 128) : Number(prefix);
      if (!Number.isInteger(bits) || bits < 0 || bits > (family === 4 ? 32 : 128)) throw new Error(`${JSON.stringify(member)}: bad prefix length`);
      (out.networks ??= new BlockList()).addSubnet(addr, bits, family === 4 ? 'ipv4' : 'ipv6');
      return;
    }
    if (GROUP_NAME.test(m)) {
      const members = groups[m];
      if (members === undefined) throw new Error(`${JSON.stringify(m)} is neither a group (groups: ${Object.keys(groups).join(', ') || 'none'}) nor an address, domain, IP or CIDR`);
      for (const [i, g] of members.entries()) {
        if (g.trim().startsWith('!')) throw new Error(`group ${m}: member ${JSON.stringify(g)}: negation is only allowed in policies`);
        add(g, `groups.${m}[${i}]`, d + 1);
      }
      if (d > 8) throw new Error(`groups nest too deep (a cycle?) at ${path}`);
      return;
    }
    throw new Error(`${JSON.stringify(member)} is not any, a group name, @domain, user@domain, an IP, a CIDR or sasl:login`);
  };
  add(body, where, depth);
  return out;
}

function selectsIp(s: CompiledSelector, ip: string): boolean {
  const family = isIP(ip);
  return s.networks !== undefined && family !== 0 && s.networks.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}

function selectsAddress(s: CompiledSelector, address: string): boolean {
  const a = address.toLowerCase();
  if (s.addresses.has(a)) return true;
  const at = a.lastIndexOf('@');
  return at >= 0 && s.domains.has(a.slice(at));
}

function matchesSource(s: CompiledSelector, f: MatchFacts): boolean {
  if (s.any) return !s.negated;
  const hit =
    (f.sender !== undefined && f.sender !== '' && selectsAddress(s, f.sender)) ||
    (f.auth !== undefined && (s.anyLogin || s.logins.has(f.auth.toLowerCase()) || selectsAddress(s, f.auth))) ||
    (f.clientIp !== undefined && selectsIp(s, f.clientIp));
  return s.negated ? !hit : hit;
}

function matchesDestination(s: CompiledSelector, recipients: readonly string[]): boolean {
  if (s.any) return !s.negated;
  // At least one recipient selected (or, negated, at least one not selected).
  return recipients.some((r) => selectsAddress(s, r) !== s.negated);
}
