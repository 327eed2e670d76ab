/**
 * Policy matching: which policies apply to a message, in which order. Policies are evaluated in
 * ascending priority (ties by name, so the order never depends on how they were written); each one
 * matches on source, destination, direction and pool. Fixes the original's bugs: a group named
 * `company` is not `any`, CIDRs use any-of semantics, domains compare case-insensitively, hyphens
 * and `+` are valid in addresses, `bypass` with destination `any` still bypasses.
 * @module
 */
import { NetworkList, parseNetwork, type Network } from './networks.ts';
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
  /** As written (trimmed), for explanations. */
  text: string;
  /** The group it names (without `!`), if it names one; for explanations. */
  group: string | undefined;
  /** Every network member as written, for explanations (which CIDR selected an IP). */
  networkTexts: string[];
  negated: boolean;
  any: boolean;
  domains: Set<string>;
  addresses: Set<string>;
  logins: Set<string>;
  anyLogin: boolean;
  networks: NetworkList | undefined;
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

/**
 * Why one policy applies or not to a message, from {@link PolicyMatcher.explain}. `outcome` agrees
 * with {@link PolicyMatcher.match}: `matched` = in `policies`, `bypass` = the `bypass` policy.
 */
export interface PolicyExplanation {
  /** The policy's name. */
  name: string;
  /** Its effective priority. */
  priority: number;
  /** `regular` or `bypass`. */
  type: 'regular' | 'bypass';
  /** The pool it names, if any. */
  pool: string | undefined;
  /** False when the policy is disabled (`enabled: false`): it is never evaluated. */
  enabled: boolean;
  /** `matched`: it applies; `bypass`: this bypass policy accepts the message; `skipped`: it does not apply. */
  outcome: 'matched' | 'bypass' | 'skipped';
  /**
   * Human-readable reasons: for a policy that applies, why each of its criteria holds; for one that
   * does not, each criterion that fails (or `disabled`, or `not evaluated: …` after a bypass or a
   * `stopHere` policy).
   */
  reasons: string[];
}

/** The outcome of matching: the policies that apply, in order, and whether a bypass policy decided. */
export interface MatchResult {
  /** Matching regular policies, in evaluation order (stops after a `stopHere` policy). */
  policies: CompiledPolicy[];
  /** The bypass policy that matched, if any (the message is accepted at once). */
  bypass: CompiledPolicy | undefined;
}

const GROUP_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/**
 * Names no policy, group or pool may take: they mean something in selectors and commands
 * (`any`, `all`, `list`, …), as in the original Themis.
 */
export const RESERVED_NAMES: ReadonlySet<string> = new Set(['any', 'all', 'list', 'global', 'metadata', 'pool', 'pools', 'policy', 'policies', 'group', 'groups']);

function checkName(kind: 'group' | 'pool' | 'policy', name: string, path: string): void {
  if (RESERVED_NAMES.has(name.toLowerCase())) throw new ThemisError('THEMIS_ERR_POLICY_NAME', { path, kind, name: JSON.stringify(name), reason: `reserved (reserved names: ${[...RESERVED_NAMES].join(', ')})` });
  if (kind !== 'policy' && !GROUP_NAME.test(name)) throw new ThemisError('THEMIS_ERR_POLICY_NAME', { path, kind, name: JSON.stringify(name), reason: 'expected a letter or _ then letters, digits, _ or -' });
}

/** Policies, groups and pools compiled once per configuration; {@link PolicyMatcher.match} is cheap. */
export class PolicyMatcher {
  private readonly policies: Compiled[];
  /** Every policy, disabled ones included, in evaluation order (for {@link PolicyMatcher.explain}). */
  private readonly every: Compiled[];
  private readonly pools: Map<string, { servers: Set<string>; fallbackToGlobal: boolean }>;
  private readonly outbound: CompiledSelector[];

  /** Compiles; throws `THEMIS_ERR_POLICY_FIELD` naming the policy and the bad selector or reference. */
  constructor(policies: readonly PolicyDefinition[], settings: PolicySettings = {}) {
    const groups = settings.groups ?? {};
    for (const name of Object.keys(groups)) checkName('group', name, `groups.${name}`);
    for (const name of Object.keys(settings.pools ?? {})) checkName('pool', name, `pools.${name}`);
    policies.forEach((p, i) => checkName('policy', p.name, `policies[${i}].name`));
    this.pools = new Map(Object.entries(settings.pools ?? {}).map(([name, p]) => [name, { servers: new Set(p.servers.map((s) => s.toLowerCase())), fallbackToGlobal: p.fallbackToGlobal ?? false }]));
    this.outbound = (settings.outboundNetworks ?? []).map((s, i) => compileSelector(s, groups, `outboundNetworks[${i}]`));
    const seen = new Set<string>();
    const all = policies
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
      .sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    // Names are unique, so the order is total: sorting before filtering gives match() the same order.
    this.every = all;
    this.policies = all.filter((p) => p.definition.enabled !== false);
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

  /** Every policy, disabled ones included, in evaluation order (ascending priority, ties by name). */
  get all(): readonly CompiledPolicy[] {
    return this.every;
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

  /**
   * Why each policy (disabled ones included, in evaluation order) applies or not to these facts.
   * Slower than {@link PolicyMatcher.match}, for tooling (`themis policy test`); it decides with the
   * same compiled selectors and predicates, so the `matched` and `bypass` outcomes are exactly
   * `match(facts).policies` and `match(facts).bypass`.
   */
  explain(facts: MatchFacts): PolicyExplanation[] {
    const mta = facts.mta?.toLowerCase();
    const hostPools = mta === undefined ? [] : [...this.pools].filter(([, p]) => p.servers.has(mta));
    const inPool = new Set(hostPools.map(([name]) => name));
    const global = hostPools.length === 0 || hostPools.some(([, p]) => p.fallbackToGlobal);
    const viaAuth = facts.auth !== undefined;
    const viaNetwork = facts.clientIp === undefined ? undefined : this.outbound.find((s) => selectsIp(s, facts.clientIp!));
    const outbound = viaAuth || viaNetwork !== undefined;
    const recipients = facts.recipients ?? [];
    const mtaText = facts.mta ?? '(unknown)';
    const poolList = hostPools.map(([name]) => name).join(', ');
    const directionText = viaAuth
      ? `authenticated as ${facts.auth}`
      : viaNetwork !== undefined
        ? `client ${facts.clientIp} is in outboundNetworks${viaText(viaNetwork, networkVia(viaNetwork, facts.clientIp!))}`
        : `not authenticated, and ${facts.clientIp === undefined ? 'no client IP (local submission)' : `client ${facts.clientIp} is not in outboundNetworks`}`;

    const out: PolicyExplanation[] = [];
    let stopped: string | undefined;
    for (const p of this.every) {
      const type = p.definition.type === 'bypass' ? 'bypass' : 'regular';
      const e: PolicyExplanation = { name: p.name, priority: p.priority, type, pool: p.pool, enabled: p.definition.enabled !== false, outcome: 'skipped', reasons: [] };
      out.push(e);
      if (!e.enabled) {
        e.reasons.push('disabled');
        continue;
      }
      if (stopped !== undefined) {
        e.reasons.push(stopped);
        continue;
      }
      const m = p.definition.match ?? {};
      const pass: string[] = [];
      const fail: string[] = [];
      // The same decisions as match(), in its order; only the wording is extra.
      if (p.pool !== undefined) {
        if (inPool.has(p.pool)) pass.push(`pool ${p.pool}: MTA ${mtaText} is in it`);
        else fail.push(`pool ${p.pool}: MTA ${mtaText} is not in it`);
      } else if (!global) fail.push(`pool: the policy names no pool, and MTA ${mtaText} is in pool ${poolList}, which does not fall back to global policies`);
      else if (hostPools.length > 0) pass.push(`pool: the policy names no pool, and MTA ${mtaText} is in pool ${poolList}, with fallbackToGlobal`);
      if (p.direction === 'outbound') {
        if (outbound) pass.push(`direction: outbound (${directionText})`);
        else fail.push(`direction: outbound required, but the message is inbound (${directionText})`);
      } else if (p.direction === 'inbound') {
        if (!outbound) pass.push(`direction: inbound (${directionText})`);
        else if (viaAuth) fail.push(`direction: inbound required, but client authenticated (as ${facts.auth})`);
        else fail.push(`direction: inbound required, but ${directionText}`);
      } else if (m.direction !== undefined) pass.push('direction: any');
      const source = p.source.find((s) => matchesSource(s, facts));
      if (source !== undefined) {
        if (m.source !== undefined) pass.push(`source: ${explainSourceHit(source, facts)}`);
      } else fail.push(`source: ${explainSourceMiss(p.source, facts)}`);
      const destination = p.destination.find((s) => matchesDestination(s, recipients));
      if (destination !== undefined) {
        if (m.destination !== undefined) pass.push(`destination: ${explainDestinationHit(destination, recipients)}`);
      } else fail.push(`destination: ${explainDestinationMiss(p.destination, recipients)}`);

      if (fail.length > 0) {
        e.reasons = fail;
        continue;
      }
      e.reasons = pass.length > 0 ? pass : ['no criteria: applies to every message'];
      if (type === 'bypass') {
        e.outcome = 'bypass';
        e.reasons.push('bypass: the message is accepted without asking any plugin');
        stopped = `not evaluated: bypass policy ${JSON.stringify(p.name)} accepted the message`;
      } else {
        e.outcome = 'matched';
        if (p.definition.stopHere) {
          e.reasons.push('stopHere: later policies are not evaluated');
          stopped = `not evaluated: policy ${JSON.stringify(p.name)} above has stopHere`;
        }
      }
    }
    return out;
  }
}

function compileSelector(raw: string, groups: Record<string, Selector[]>, where: string, depth = 0): CompiledSelector {
  if (depth > 8) throw new Error(`groups nest too deep (a cycle?) at ${where}`);
  const s = raw.trim();
  const negated = s.startsWith('!');
  const body = negated ? s.slice(1).trim() : s;
  const out: CompiledSelector = { text: s, group: GROUP_NAME.test(body) && body !== 'any' ? body : undefined, networkTexts: [], negated, any: false, domains: new Set(), addresses: new Set(), logins: new Set(), anyLogin: false, networks: undefined };
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
    const network = parseNetwork(m);
    if (network instanceof Error) throw new Error(`${JSON.stringify(member)}: bad prefix length`);
    if (network !== undefined) {
      (out.networks ??= new NetworkList()).add(network);
      out.networkTexts.push(m);
      return;
    }
    if (GROUP_NAME.test(m)) {
      // Checked before descending, so that a cycle of groups is reported instead of overflowing the stack.
      if (d > 8) throw new Error(`groups nest too deep (a cycle?) at ${path}`);
      const members = groups[m];
      if (members === undefined) throw new Error(`${JSON.stringify(m)} is neither a group (groups: ${Object.keys(groups).join(', ') || 'none'}) nor an address, domain, IP or CIDR`);
      for (const [i, g] of members.entries()) {
        if (g.trim().startsWith('!')) throw new Error(`group ${m}: member ${JSON.stringify(g)}: negation is only allowed in policies`);
        add(g, `groups.${m}[${i}]`, d + 1);
      }
      return;
    }
    throw new Error(`${JSON.stringify(member)} is not any, a group name, @domain, user@domain, an IP, a CIDR or sasl:login`);
  };
  add(body, where, depth);
  return out;
}

function selectsIp(s: CompiledSelector, ip: string): boolean {
  return s.networks !== undefined && s.networks.has(ip);
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

// Explanations: wording only. Decisions stay with the predicates above.

/** ` via 10.0.0.0/8` or ` via group internal (10.0.0.0/8)`: which member of a selector matched. */
function viaText(s: CompiledSelector, member: string): string {
  return s.group !== undefined ? ` via group ${s.group} (${member})` : ` via ${member}`;
}

/** `is in group vip (via @example.com)` or `is selected by @example.com`. */
function hitPhrase(s: CompiledSelector, member: string): string {
  const body = s.negated ? s.text.slice(1).trim() : s.text;
  if (s.group !== undefined) return `is in group ${s.group} (via ${member})`;
  return member === body.toLowerCase() || member === body ? `is selected by ${body}` : `is selected by ${body} (via ${member})`;
}

/** The member of the selector that selects this address (the address itself, or its `@domain`). */
function addressVia(s: CompiledSelector, address: string): string | undefined {
  const a = address.toLowerCase();
  if (s.addresses.has(a)) return a;
  const at = a.lastIndexOf('@');
  return at >= 0 && s.domains.has(a.slice(at)) ? a.slice(at) : undefined;
}

/** The network member (as written) that contains the IP. */
function networkVia(s: CompiledSelector, ip: string): string {
  for (const text of s.networkTexts) {
    const one = new NetworkList();
    one.add(parseNetwork(text) as Network);
    if (one.has(ip)) return text;
  }
  return ip;
}

/** What selects the source, in matchesSource's order, or undefined when nothing does. */
function sourceHit(s: CompiledSelector, f: MatchFacts): string | undefined {
  if (f.sender !== undefined && f.sender !== '' && selectsAddress(s, f.sender)) return `sender ${f.sender} ${hitPhrase(s, addressVia(s, f.sender)!)}`;
  if (f.auth !== undefined) {
    const login = f.auth.toLowerCase();
    if (s.anyLogin) return `login ${f.auth} ${hitPhrase(s, 'sasl:*')}`;
    if (s.logins.has(login)) return `login ${f.auth} ${hitPhrase(s, `sasl:${login}`)}`;
    if (selectsAddress(s, f.auth)) return `login ${f.auth} ${hitPhrase(s, addressVia(s, f.auth)!)}`;
  }
  if (f.clientIp !== undefined && selectsIp(s, f.clientIp)) return `client ${f.clientIp} ${hitPhrase(s, networkVia(s, f.clientIp))}`;
  return undefined;
}

function sourceFacts(f: MatchFacts): string {
  const sender = f.sender === undefined ? 'sender (unknown)' : f.sender === '' ? 'sender <> (null sender)' : `sender ${f.sender}`;
  const at = f.sender?.lastIndexOf('@') ?? -1;
  const domain = f.sender !== undefined && at >= 0 ? `domain ${f.sender.slice(at + 1)}` : 'domain (none)';
  return `${sender}, ${domain}, login ${f.auth ?? '(none)'}, client ${f.clientIp ?? '(none)'}`;
}

function selectorLabel(s: CompiledSelector): string {
  const body = s.negated ? s.text.slice(1).trim() : s.text;
  return s.group !== undefined ? `group ${s.group}` : body;
}

function anyText(s: CompiledSelector): string {
  return s.text === 'any' ? 'any' : `${s.text} (contains any)`;
}

function explainSourceHit(s: CompiledSelector, f: MatchFacts): string {
  if (s.any) return anyText(s);
  if (!s.negated) return sourceHit(s, f)!;
  return `none of ${sourceFacts(f)} is in ${selectorLabel(s)} (${s.text})`;
}

function explainSourceMiss(list: readonly CompiledSelector[], f: MatchFacts): string {
  const parts: string[] = [];
  const plain = list.filter((s) => !s.negated && !s.any).map((s) => s.text);
  if (plain.length > 0) parts.push(`none of ${sourceFacts(f)} is in [${plain.join(', ')}]`);
  for (const s of list) {
    if (!s.negated) continue;
    if (s.any) parts.push(`${s.text} selects nothing`);
    else parts.push(`${sourceHit(s, f)}, so ${s.text} does not match`);
  }
  return parts.join('; ');
}

function explainDestinationHit(s: CompiledSelector, recipients: readonly string[]): string {
  if (s.any) return anyText(s);
  const r = recipients.find((x) => selectsAddress(s, x) !== s.negated)!;
  if (!s.negated) return `recipient ${r} ${hitPhrase(s, addressVia(s, r)!)}`;
  return `recipient ${r} is not in ${selectorLabel(s)} (${s.text})`;
}

function explainDestinationMiss(list: readonly CompiledSelector[], recipients: readonly string[]): string {
  if (recipients.length === 0 && list.some((s) => !(s.any && s.negated))) return 'no recipients yet (a destination criterion matches only once recipients are known)';
  const parts: string[] = [];
  const plain = list.filter((s) => !s.negated && !s.any).map((s) => s.text);
  if (plain.length > 0) parts.push(`none of ${recipients.length === 1 ? 'recipient' : 'recipients'} ${recipients.join(', ')} is in [${plain.join(', ')}]`);
  for (const s of list) {
    if (!s.negated) continue;
    if (s.any) parts.push(`${s.text} selects nothing`);
    else parts.push(`${recipients.length === 1 ? `recipient ${recipients[0]} is` : `every recipient (${recipients.join(', ')}) is`} in ${selectorLabel(s)}, so ${s.text} does not match`);
  }
  return parts.join('; ');
}
