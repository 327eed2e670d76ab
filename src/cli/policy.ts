/**
 * `themis policy list` and `themis policy test`: what the configured policies are, in evaluation
 * order, and which of them apply to a given message — and why the others do not — without
 * starting the daemon or asking any plugin.
 * @module
 */
import { isIP } from 'node:net';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { PolicyInput } from '../kernel/kernel.ts';
import { PolicyMatcher, type MatchFacts, type PolicyExplanation, type PolicySettings } from '../kernel/policy.ts';
import { envConfigPath } from './env.ts';
import { commandStoreConfig } from './store-flags.ts';
import { stdio, type CommandIO } from './io.ts';

/** Usage text of `themis policy`. */
export const POLICY_USAGE = `Usage: themis policy <command> [options]

Commands:
  list      every policy (the file's and the live ones), in evaluation order (themis policy list --help)
  test      which policies apply to a message, and why the others do not (themis policy test --help)
  add, set, get, delete, history
            live policies in the store the daemons share (themis policy add --help)
`;

/** Usage text of `themis policy list`. */
export const POLICY_LIST_USAGE = `Usage: themis policy list [--config PATH] [--json]

Prints every policy of the configuration in evaluation order (ascending priority, ties by name):
priority, name, type, whether it is enabled, what it matches (source, destination, direction,
pool), stopHere, and the plugin fields it carries.

Options:
  --config PATH   configuration file (default: found in the working directory; environment THEMIS_CONFIG)
  --json          print a JSON array instead of a table
`;

/** Usage text of `themis policy test`. */
export const POLICY_TEST_USAGE = `Usage: themis policy test --from ADDR [options]

Matches the configured policies against a message, as the daemon would once every recipient is
known, and prints the policies that apply, in order, and why each other policy does not. No plugin
is asked and no daemon is needed.

Options:
  --from ADDR        envelope sender (required; '' for the null sender)
  --to ADDR          recipient; repeat for several (none: as at MAIL, before any recipient)
  --client-ip IP     client IPv4 or IPv6 address (none: a local submission)
  --auth LOGIN       the client authenticated with SASL as LOGIN
  --mta HOST         the MTA's host name, Postfix's {j} (for pools)
  --config PATH      configuration file (default: found in the working directory; environment THEMIS_CONFIG)
  --json             print the result as JSON

Exit status: 0 when it ran (whatever applies), 1 on a configuration error, 2 on bad usage.
`;

/** Where the command writes; tests pass their own to capture the output. */
export type PolicyCommandIO = CommandIO;

/** One policy as `themis policy list --json` prints it. */
export interface PolicyListEntry {
  /** Effective priority (default 5). */
  priority: number;
  /** The policy's name. */
  name: string;
  /** `regular` or `bypass`. */
  type: 'regular' | 'bypass';
  /** False when `enabled: false`. */
  enabled: boolean;
  /** Its criteria, defaults filled in: selector lists, direction, pool (null for none). */
  match: { source: string[]; destination: string[]; direction: 'inbound' | 'outbound' | 'any'; pool: string | null };
  /** True when later policies are not evaluated once this one matched. */
  stopHere: boolean;
  /** The plugin fields it carries (every key but name, priority, enabled, match, type, stopHere, description). */
  fields: Record<string, unknown>;
  /** Its description, or null. */
  description: string | null;
  /** `file`, or `live` for a policy kept in the store (`themis policy add`); set by `policy list`. */
  source?: 'file' | 'live';
}

/** What `themis policy test --json` prints. */
export interface PolicyTestResult {
  /** The configuration file, or null when none was found. */
  config: string | null;
  /** The facts the policies were matched against. */
  facts: MatchFacts;
  /** Every policy, in evaluation order, with its outcome and reasons (`pool` null for none). */
  policies: (Omit<PolicyExplanation, 'pool'> & { pool: string | null })[];
  /** The names of the policies that apply, in order. */
  applies: string[];
  /** The bypass policy that accepts the message, or null. */
  bypass: string | null;
  /** The one-line summary. */
  summary: string;
}

// Keys of a policy that are not plugin fields (the kernel's reserved policy fields).
const RESERVED_POLICY_KEYS: ReadonlySet<string> = new Set(['name', 'priority', 'enabled', 'match', 'type', 'stopHere', 'description']);

/**
 * Runs `themis policy <list|test> [options]`; returns the exit code (0 ran, 1 configuration error,
 * 2 bad usage). Output goes to `io` (the process's stdout and stderr by default).
 */
export async function policyCommand(args: string[], io: PolicyCommandIO = stdio): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    io.out(POLICY_USAGE);
    return 0;
  }
  if (sub === 'list') return list(rest, io);
  if (sub === 'test') return test(rest, io);
  if (sub === 'add' || sub === 'set' || sub === 'get' || sub === 'delete' || sub === 'history') return (await import('./live-cmd.ts')).livePolicyCommand(sub, rest, io);
  io.err(`${sub === undefined ? 'themis policy: a command is required' : `themis policy: unknown command ${JSON.stringify(sub)}`}\n\n${POLICY_USAGE}`);
  return 2;
}

/** The policies of a configuration as `policy list` describes them, in evaluation order. */
export function describePolicies(policies: readonly PolicyInput[], settings: PolicySettings = {}): PolicyListEntry[] {
  const matcher = new PolicyMatcher(policies, settings); // validates selectors, groups and pools
  return matcher.all.map((c) => {
    const p = c.definition as PolicyInput;
    const m = p.match ?? {};
    const selectors = (s: string | string[] | undefined): string[] => (s === undefined ? ['any'] : Array.isArray(s) ? [...s] : [s]);
    const fields: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(p)) if (!RESERVED_POLICY_KEYS.has(key)) fields[key] = value;
    return {
      priority: c.priority,
      name: c.name,
      type: p.type === 'bypass' ? 'bypass' : 'regular',
      enabled: p.enabled !== false,
      match: { source: selectors(m.source), destination: selectors(m.destination), direction: m.direction ?? 'any', pool: m.pool ?? null },
      stopHere: p.stopHere === true,
      fields,
      description: typeof p.description === 'string' ? p.description : null,
    };
  });
}

interface Loaded {
  file: string | undefined;
  policies: readonly PolicyInput[];
  settings: PolicySettings;
  /** Names of the policies that come from the store (live). */
  live: ReadonlySet<string>;
}

/** Finds and loads the configuration; undefined after printing a coded error. */
async function load(command: string, path: string | undefined, io: PolicyCommandIO): Promise<Loaded | undefined> {
  try {
    const { findConfig, loadConfig } = await import('../config.ts');
    const file = findConfig(path ?? envConfigPath());
    if (file === undefined) return { file: undefined, policies: [], settings: {}, live: new Set() };
    const config = await loadConfig(file);
    const loaded: Loaded = { file: config.file, policies: config.policies, settings: config.policySettings, live: new Set() };
    // With a shared store, the live policies apply too: shown as the daemons apply them.
    const { createStore } = await import('../store/index.ts');
    const storeConfig = commandStoreConfig(config.store);
    if (storeConfig.type === 'memory') return loaded;
    const { readLive, mergeLive, hasLive } = await import('../live/index.ts');
    const store = createStore(storeConfig);
    try {
      const live = await readLive(store);
      if (!hasLive(live)) return loaded;
      const merged = mergeLive(config, live);
      return { file: config.file, policies: merged.policies, settings: merged.policySettings, live: new Set(Object.keys(live.policies)) };
    } catch (err) {
      io.err(`${command}: the store did not answer (${(err as Error).message}); showing the file's policies only\n`);
      return loaded;
    } finally {
      await store.close();
    }
  } catch (err) {
    io.err(`${command}: ${errorText(err)}\n`);
    return undefined;
  }
}

function errorText(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return `${typeof code === 'string' && code.startsWith('THEMIS_') ? `${code}: ` : ''}${(err as Error).message}`;
}

const NO_CONFIG = 'no configuration file found (looked in the working directory; use --config PATH or THEMIS_CONFIG)';

function parse(command: string, usage: string, args: string[], options: NonNullable<ParseArgsConfig['options']>, io: PolicyCommandIO): Record<string, string | boolean | string[] | undefined> | number {
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  try {
    ({ values } = parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }));
  } catch (err) {
    io.err(`${command}: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help) {
    io.out(usage);
    return 0;
  }
  return values as Record<string, string | boolean | string[] | undefined>;
}

async function list(args: string[], io: PolicyCommandIO): Promise<number> {
  const command = 'themis policy list';
  const values = parse(command, POLICY_LIST_USAGE, args, { config: { type: 'string' }, json: { type: 'boolean' } }, io);
  if (typeof values === 'number') return values;
  const loaded = await load(command, values.config as string | undefined, io);
  if (loaded === undefined) return 1;
  let entries: PolicyListEntry[];
  try {
    entries = describePolicies(loaded.policies, loaded.settings);
  } catch (err) {
    io.err(`${command}: ${errorText(err)}\n`);
    return 1;
  }
  if (values.json) {
    io.out(`${JSON.stringify(entries.map((e) => ({ ...e, source: loaded.live.has(e.name) ? 'live' : 'file' })), null, 2)}\n`);
    return 0;
  }
  if (loaded.file === undefined) {
    io.out(`${NO_CONFIG}: no policies\n`);
    return 0;
  }
  io.out(`configuration: ${loaded.file}\n`);
  if (entries.length === 0) {
    io.out('no policies\n');
    return 0;
  }
  const rows = entries.map((e) => [String(e.priority), loaded.live.has(e.name) ? `${e.name} (live)` : e.name, e.type, e.enabled ? 'yes' : 'no', matchText(e.match), e.stopHere ? 'yes' : '-', Object.keys(e.fields).join(', ') || '-']);
  io.out(table(['PRIORITY', 'NAME', 'TYPE', 'ENABLED', 'MATCH', 'STOPHERE', 'FIELDS'], rows));
  return 0;
}

function matchText(m: PolicyListEntry['match']): string {
  const parts: string[] = [];
  const sel = (s: string[]) => (s.length === 1 ? s[0] : `[${s.join(', ')}]`);
  if (!(m.source.length === 1 && m.source[0] === 'any')) parts.push(`source ${sel(m.source)}`);
  if (!(m.destination.length === 1 && m.destination[0] === 'any')) parts.push(`destination ${sel(m.destination)}`);
  if (m.direction !== 'any') parts.push(`direction ${m.direction}`);
  if (m.pool !== null) parts.push(`pool ${m.pool}`);
  return parts.join('; ') || 'any';
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ')}\n`;
  return [head, ...rows].map(line).join('');
}

/** An address as given, without angle brackets (`<>` is the null sender). */
function bare(address: string): string {
  const a = address.trim();
  return a.startsWith('<') && a.endsWith('>') ? a.slice(1, -1).trim() : a;
}

async function test(args: string[], io: PolicyCommandIO): Promise<number> {
  const command = 'themis policy test';
  const values = parse(
    command,
    POLICY_TEST_USAGE,
    args,
    { config: { type: 'string' }, from: { type: 'string' }, to: { type: 'string', multiple: true }, 'client-ip': { type: 'string' }, auth: { type: 'string' }, mta: { type: 'string' }, json: { type: 'boolean' } },
    io,
  );
  if (typeof values === 'number') return values;
  const usage = (message: string): number => {
    io.err(`${command}: ${message}\n\n${POLICY_TEST_USAGE}`);
    return 2;
  };
  if (values.from === undefined) return usage("--from is required ('' for the null sender)");
  const sender = bare(values.from as string);
  if (sender !== '' && /\s/.test(sender)) return usage(`--from expects an address, got ${JSON.stringify(values.from)}`);
  const recipients = ((values.to as string[] | undefined) ?? []).map(bare);
  const badTo = recipients.find((r) => r === '' || /\s/.test(r));
  if (badTo !== undefined) return usage(`--to expects an address, got ${JSON.stringify(badTo)}`);
  const clientIp = values['client-ip'] as string | undefined;
  if (clientIp !== undefined && isIP(clientIp) === 0) return usage(`--client-ip expects an IPv4 or IPv6 address, got ${JSON.stringify(clientIp)}`);
  const auth = values.auth as string | undefined;
  if (auth !== undefined && auth.trim() === '') return usage('--auth expects a login');
  const mta = values.mta as string | undefined;
  if (mta !== undefined && mta.trim() === '') return usage('--mta expects a host name');

  const loaded = await load(command, values.config as string | undefined, io);
  if (loaded === undefined) return 1;
  let matcher: PolicyMatcher;
  try {
    matcher = new PolicyMatcher(loaded.policies, loaded.settings);
  } catch (err) {
    io.err(`${command}: ${errorText(err)}\n`);
    return 1;
  }
  const facts: MatchFacts = { sender, recipients };
  if (clientIp !== undefined) facts.clientIp = clientIp;
  if (auth !== undefined) facts.auth = auth;
  if (mta !== undefined) facts.mta = mta;
  const explained = matcher.explain(facts);
  const applies = explained.filter((e) => e.outcome === 'matched').map((e) => e.name);
  const bypass = explained.find((e) => e.outcome === 'bypass')?.name;
  const summary =
    bypass !== undefined ? `bypass: ${bypass} (the message is accepted without asking any plugin)` : applies.length > 0 ? `applies: ${applies.join(', ')}` : 'no policy applies';

  if (values.json) {
    const result: PolicyTestResult = { config: loaded.file ?? null, facts, policies: explained.map((e) => ({ ...e, pool: e.pool ?? null })), applies, bypass: bypass ?? null, summary };
    io.out(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  }
  io.out(loaded.file === undefined ? `${NO_CONFIG}\n` : `configuration: ${loaded.file}\n`);
  io.out(
    `message: from ${sender === '' ? '<> (null sender)' : sender}, to ${recipients.join(', ') || '(no recipients yet)'}, client ${clientIp ?? '(none: local submission)'}, ` +
      `login ${auth ?? '(not authenticated)'}, MTA ${mta ?? '(not given)'}\n`,
  );
  const label = (e: PolicyExplanation) => `${e.name} (priority ${e.priority}${e.type === 'bypass' ? ', bypass' : ''}${e.pool !== undefined ? `, pool ${e.pool}` : ''})`;
  const block = (e: PolicyExplanation) => `  ${label(e)}\n${e.reasons.map((r) => `    - ${r}\n`).join('')}`;
  const applying = explained.filter((e) => e.outcome !== 'skipped');
  const others = explained.filter((e) => e.outcome === 'skipped');
  if (applying.length > 0) io.out(`\nApplies, in order:\n${applying.map(block).join('')}`);
  if (others.length > 0) io.out(`\nDoes not apply:\n${others.map(block).join('')}`);
  io.out(`\n${summary}\n`);
  return 0;
}
