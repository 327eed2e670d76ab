/**
 * Live policy management: `themis policy add|set|get|delete|history`, `themis group …`, `themis pool …`
 * and `themis export`. Changes go to the store that the daemons share; each is validated first exactly
 * as a daemon would load it (the file's policies, the live ones and the change together, every plugin
 * field checked by its plugin), recorded in the audit log, and applied at once by every daemon through
 * the store's resync message (a daemon that missed it catches up by polling the version key).
 * @module
 */
import { createInterface } from 'node:readline/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { LoadedConfig } from '../config.ts';
import type { PolicyInput } from '../kernel/kernel.ts';
import { ThemisError } from '../kernel/errors.ts';
import type { PolicyFlag } from '../kernel/plugin.ts';
import type { PoolDefinition } from '../kernel/policy.ts';
import { LIVE_FIELD, announceResync, liveOrigin, mergeLive, readAudit, readLive, writeLive, type LiveItems, type LiveKind } from '../live/index.ts';
import type { Store } from '../store/store.ts';
import { envConfigPath } from './env.ts';
import { commandStoreConfig } from './store-flags.ts';
import { stdio, type CommandIO } from './io.ts';

const STORE_FLAGS = `  --config PATH          configuration file (default: found in the working directory; THEMIS_CONFIG)
  --redis-url URL        the store the daemons share (default: the configuration's; THEMIS_REDIS_URL)
  --redis-password PW    its password (THEMIS_REDIS_PASSWORD)
  --json                 print JSON`;

/** Usage of the live policy commands. */
export const LIVE_POLICY_USAGE = `Usage: themis policy add NAME [policy flags] [--yes]
       themis policy set NAME [policy flags] [--unset FIELD]...
       themis policy get NAME [--json]
       themis policy delete NAME [--yes]
       themis policy history [NAME] [--limit N] [--json]

Policies kept in the store, beside the configuration file: every daemon sharing the store applies a
change within a second. A live policy replaces the file's policy of the same name. Every change is
checked as a daemon would load it (refused with the reason, nothing written) and recorded in the
audit log (history).

Policy flags:
  --priority N           evaluation order, lower first (default 5)
  --source SEL           sender selector: any, a group, !group, @domain, user@domain, IP, CIDR, sasl:LOGIN (repeat for several)
  --destination SEL      recipient selector (repeat for several)
  --direction D          inbound, outbound or any
  --pool NAME            only on the MTAs of this pool
  --type T               regular or bypass
  --stop-here            later policies are not evaluated once this one matched
  --disabled / --enabled
  --description TEXT
  --field NAME=JSON      any plugin field as JSON (repeat), e.g. --field 'spf={"mailFrom":{"fail":"reject"}}'
  --yes                  replace a live policy of that name without asking (add), delete without asking
${STORE_FLAGS}
`;

/** Usage of `themis group` and `themis pool`. */
export const LIVE_GROUP_USAGE = `Usage: themis group add NAME MEMBER...      (creates the group, or adds members)
       themis group remove NAME MEMBER...
       themis group get NAME | list
       themis group delete NAME [--yes]
       themis pool add NAME SERVER... [--fallback-to-global]
       themis pool remove NAME SERVER...
       themis pool get NAME | list
       themis pool delete NAME [--yes]

Members: @domain, user@domain, IP, CIDR, sasl:LOGIN or another group's name. Servers: MTA host names
as Postfix reports them ({j}). A group or pool that a policy still uses cannot be deleted.
${STORE_FLAGS}
`;

/** Usage of `themis export`. */
export const EXPORT_USAGE = `Usage: themis export [--config PATH] [--redis-url URL] [--redis-password PW]

Prints the live policies, groups and pools as a themis.config.ts fragment (groups, pools, policies),
so that what was changed live can be committed to the configuration file.
`;

const COMMON: NonNullable<ParseArgsConfig['options']> = {
  config: { type: 'string' },
  'redis-url': { type: 'string' },
  'redis-password': { type: 'string' },
  json: { type: 'boolean' },
  yes: { type: 'boolean', short: 'y' },
  help: { type: 'boolean', short: 'h' },
};

const POLICY_FLAGS: NonNullable<ParseArgsConfig['options']> = {
  priority: { type: 'string' },
  source: { type: 'string', multiple: true },
  destination: { type: 'string', multiple: true },
  direction: { type: 'string' },
  pool: { type: 'string' },
  type: { type: 'string' },
  'stop-here': { type: 'boolean' },
  disabled: { type: 'boolean' },
  enabled: { type: 'boolean' },
  description: { type: 'string' },
  field: { type: 'string', multiple: true },
  unset: { type: 'string', multiple: true },
  limit: { type: 'string' },
  'fallback-to-global': { type: 'boolean' },
};

/** The command line as the audit log keeps it: without the store's password, given as a flag or in a URL. */
export function redact(args: readonly string[]): string[] {
  return args.map((a, i) => (args[i - 1] === '--redis-password' ? '***' : a.replace(/^(--redis-password=).*/, '$1***').replace(/^((?:--redis-url=)?rediss?:\/\/)[^@/]*@/, '$1***@')));
}

/** A usage error: exit 2. */
class UsageError extends Error {}

/** What every live command works on: the configuration, and the store it names. */
interface Context {
  config: LoadedConfig;
  /** The flags the configuration's plugins add (PluginDefinition.policyFlags). */
  pluginFlags: PluginFlags;
  store: Store;
  values: Record<string, unknown>;
  positionals: string[];
  io: CommandIO;
  command: string;
}

async function open(name: string, usage: string, args: string[], io: CommandIO): Promise<Context | number> {
  // First pass, loose: only --config and --help matter before the configuration names the plugins,
  // whose flags the second, strict pass then knows.
  const loose = parseArgs({ args, options: { ...COMMON, ...POLICY_FLAGS }, allowPositionals: true, strict: false });
  const { findConfig, loadConfig } = await import('../config.ts');
  const { createStore } = await import('../store/index.ts');
  const file = findConfig((typeof loose.values.config === 'string' ? loose.values.config : undefined) ?? envConfigPath());
  let config: LoadedConfig | undefined;
  let loadError: unknown;
  if (file) {
    try {
      config = await loadConfig(file);
    } catch (err) {
      loadError = err;
    }
  }
  let pluginFlags: PluginFlags;
  try {
    pluginFlags = pluginFlagsOf(config);
  } catch (err) {
    io.err(`themis ${name}: ${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}\n`);
    return 1;
  }
  const fullUsage = usage + pluginFlagsUsage(pluginFlags);
  if (loose.values.help) {
    io.out(fullUsage);
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...COMMON, ...POLICY_FLAGS, ...Object.fromEntries([...pluginFlags].map(([flag, f]) => [flag, { type: f.flag.type }])) }, allowPositionals: true, strict: true });
  } catch (err) {
    io.err(`themis ${name}: ${(err as Error).message}\n\n${fullUsage}`);
    return 2;
  }
  if (!file) {
    io.err(`themis ${name}: no configuration file found; give one with --config (it names the store the daemons share)\n`);
    return 1;
  }
  if (!config) {
    io.err(`themis ${name}: ${(loadError as { code?: string }).code ?? 'error'}: ${(loadError as Error).message}\n`);
    return 1;
  }
  const storeConfig = commandStoreConfig(config.store, { url: parsed.values['redis-url'] as string | undefined, password: parsed.values['redis-password'] as string | undefined });
  if (storeConfig.type === 'memory') {
    io.err(`themis ${name}: the configuration uses the in-memory store, which no daemon shares with this command: live policies need Redis (store: { type: 'redis', url: … }, or --redis-url); edit ${file} instead\n`);
    return 1;
  }
  return { config, pluginFlags, store: createStore(storeConfig), values: parsed.values, positionals: parsed.positionals, io, command: `themis ${name} ${redact(args).join(' ')}`.trim() };
}

/** Runs a live command with its store, closing it afterwards; coded errors exit 1, usage errors 2. */
async function run(name: string, usage: string, args: string[], io: CommandIO, body: (c: Context) => Promise<number>): Promise<number> {
  const c = await open(name, usage, args, io);
  if (typeof c === 'number') return c;
  try {
    return await body(c);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`themis ${name}: ${err.message}\n\n${usage}`);
      return 2;
    }
    const code = (err as { code?: string }).code;
    io.err(`themis ${name}: ${code ? `${code}: ` : ''}${(err as Error).message}\n`);
    return 1;
  } finally {
    await c.store.close();
  }
}

/** Asks yes/no on a terminal; without one, the answer is no (scripts pass --yes). */
async function confirm(c: Context, question: string): Promise<boolean> {
  if (c.values.yes) return true;
  if (!process.stdin.isTTY) {
    c.io.err(`${question} — not confirmed: run again with --yes\n`);
    return false;
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

/**
 * Checks the whole set as a daemon would load it — the file's policies, the live ones and the change
 * — by building a kernel (plugins set up, every field validated by its plugin) on an in-memory store.
 */
async function validate(c: Context, live: LiveItems): Promise<void> {
  const { kernelOptionsOf } = await import('../config.ts');
  const { Kernel } = await import('../kernel/kernel.ts');
  const kernel = await Kernel.create(mergeLive(kernelOptionsOf(c.config), live));
  await kernel.shutdown();
}

/** Validates, writes, records and announces one change to `live` (the live items as just read). */
async function change(c: Context, live: LiveItems, kind: LiveKind, name: string, value: unknown): Promise<number> {
  const key = LIVE_FIELD[kind];
  const next: LiveItems = { ...live, [key]: { ...live[key] } };
  if (value === null) delete (next[key] as Record<string, unknown>)[name];
  else (next[key] as Record<string, unknown>)[name] = value;
  await validate(c, next);
  const entry = await writeLive(c.store, kind, name, value, c.command);
  const version = await announceResync(c.store);
  if (c.values.json) c.io.out(`${JSON.stringify({ ...entry, version }, null, 2)}\n`);
  else c.io.out(`${kind} ${name} ${value === null ? 'deleted' : entry.before === null ? 'added' : 'changed'} (change ${entry.seq}); every daemon sharing the store applies it now (resync ${version})\n`);
  return 0;
}

const PLUGIN_FIELD = /^([A-Za-z_][\w-]*)=([\s\S]*)$/;

/** The flags plugins add to `themis policy add|set`: flag name → the flag, its plugin and the field it edits. */
type PluginFlags = Map<string, { flag: PolicyFlag; plugin: string; field: string }>;

/** The configuration's plugins' policy flags; a clash with a core flag or another plugin's is a coded error. */
function pluginFlagsOf(config: LoadedConfig | undefined): PluginFlags {
  const out: PluginFlags = new Map();
  for (const entry of config?.plugins ?? []) {
    const def = entry.plugin;
    for (const [flag, f] of Object.entries(def.policyFlags ?? {})) {
      const taken = Object.hasOwn(POLICY_FLAGS, flag) || Object.hasOwn(COMMON, flag) ? 'a core flag' : out.has(flag) ? `plugin ${out.get(flag)!.plugin}'s` : undefined;
      if (taken) throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: def.name, reason: `policy flag --${flag} is already ${taken}` });
      if (!def.claims) throw new ThemisError('THEMIS_ERR_PLUGIN_INVALID', { plugin: def.name, reason: 'policyFlags edit the policy field the plugin claims, but it claims none' });
      out.set(flag, { flag: f, plugin: def.name, field: def.claims.field });
    }
  }
  return out;
}

/** The plugins' flags, for the usage text. */
function pluginFlagsUsage(flags: PluginFlags): string {
  if (flags.size === 0) return '';
  let text = '\nPolicy flags of the configuration\'s plugins:\n';
  for (const [flag, f] of flags) {
    const left = `  --${flag}${f.flag.type === 'string' ? ` ${f.flag.valueName ?? 'VALUE'}` : ''}`;
    text += `${left.padEnd(25)}${f.flag.help} (${f.plugin})\n`;
  }
  return text;
}

/** Applies the policy flags to a policy (a new one, or a copy of the current one). */
function applyFlags(policy: PolicyInput, v: Record<string, unknown>, pluginFlags: PluginFlags): PolicyInput {
  const p: PolicyInput = structuredClone(policy);
  const match = { ...(p.match ?? {}) };
  if (v.priority !== undefined) {
    const n = Number(v.priority);
    if (!Number.isFinite(n)) throw new UsageError(`--priority expects a number, not ${JSON.stringify(v.priority)}`);
    p.priority = n;
  }
  if (v.source !== undefined) match.source = (v.source as string[]).length === 1 ? (v.source as string[])[0] : (v.source as string[]);
  if (v.destination !== undefined) match.destination = (v.destination as string[]).length === 1 ? (v.destination as string[])[0] : (v.destination as string[]);
  if (v.direction !== undefined) match.direction = v.direction as 'inbound' | 'outbound' | 'any';
  if (v.pool !== undefined) match.pool = v.pool as string;
  if (Object.keys(match).length > 0) p.match = match;
  if (v.type !== undefined) p.type = v.type as 'regular' | 'bypass';
  if (v['stop-here']) p.stopHere = true;
  if (v.disabled) p.enabled = false;
  if (v.enabled) p.enabled = true;
  if (v.description !== undefined) p.description = v.description;
  for (const [flag, f] of pluginFlags) {
    const value = v[flag];
    if (value === undefined || value === false) continue;
    const current = p[f.field];
    const field = current !== null && typeof current === 'object' && !Array.isArray(current) ? { ...(current as Record<string, unknown>) } : {};
    try {
      f.flag.apply(field, value as string | true);
    } catch (err) {
      throw new UsageError(`--${flag}: ${(err as Error).message}`);
    }
    p[f.field] = field;
  }
  for (const f of (v.field as string[] | undefined) ?? []) {
    const m = PLUGIN_FIELD.exec(f);
    if (!m) throw new UsageError(`--field expects NAME=JSON, not ${JSON.stringify(f)}`);
    try {
      p[m[1]] = JSON.parse(m[2]);
    } catch (err) {
      throw new UsageError(`--field ${m[1]}: ${(err as Error).message}`);
    }
  }
  for (const f of (v.unset as string[] | undefined) ?? []) {
    if (f === 'name') throw new UsageError('--unset name: a policy keeps its name');
    delete p[f];
    if (f === 'source' || f === 'destination' || f === 'direction' || f === 'pool') delete (p.match as Record<string, unknown> | undefined)?.[f];
  }
  return p;
}

function needName(c: Context, what: string): string {
  const name = c.positionals[1];
  if (!name) throw new UsageError(`${what} needs a NAME`);
  return name;
}

/** `themis policy add|set|get|delete|history`. */
export async function livePolicyCommand(sub: string, args: string[], io: CommandIO = stdio): Promise<number> {
  return run('policy', LIVE_POLICY_USAGE, [sub, ...args], io, async (c) => {
    const live = await readLive(c.store);
    if (sub === 'history') {
      const limit = Number(c.values.limit ?? '20');
      if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit expects a whole number from 1');
      const entries = await readAudit(c.store, limit, c.positionals[1]);
      if (c.values.json) c.io.out(`${JSON.stringify(entries, null, 2)}\n`);
      else if (entries.length === 0) c.io.out('no live change recorded\n');
      else for (const e of entries) c.io.out(`#${e.seq} ${e.at} ${e.who} ${e.kind} ${e.name}: ${e.before === null ? 'added' : e.after === null ? 'deleted' : 'changed'}\n  ${e.command}\n  before: ${JSON.stringify(e.before)}\n  after:  ${JSON.stringify(e.after)}\n`);
      return 0;
    }
    const name = needName(c, `policy ${sub}`);
    const inFile = c.config.policies.find((p) => p.name === name);
    const current = live.policies[name];
    if (sub === 'get') {
      const found = current ?? inFile;
      if (!found) {
        c.io.err(`themis policy get: no policy ${name} (neither live nor in ${c.config.file})\n`);
        return 1;
      }
      const doc = { source: current ? 'live' : 'file', ...(current && inFile ? { overrides: 'the file’s policy of that name' } : {}), policy: found };
      c.io.out(c.values.json ? `${JSON.stringify(doc, null, 2)}\n` : `${name} (${doc.source}${current && inFile ? ', replacing the file’s policy of that name' : ''}):\n${JSON.stringify(found, null, 2)}\n`);
      return 0;
    }
    if (sub === 'delete') {
      if (!current) {
        c.io.err(`themis policy delete: ${name} is not a live policy${inFile ? ` (it is in ${c.config.file}: edit the file)` : ''}\n`);
        return 1;
      }
      if (!(await confirm(c, `delete live policy ${name}${inFile ? ` (the file’s policy of that name applies again)` : ''}?`))) return 1;
      return change(c, live, 'policy', name, null);
    }
    if (sub === 'add') {
      if (current && !(await confirm(c, `live policy ${name} exists: replace it?`))) return 1;
      return change(c, live, 'policy', name, applyFlags({ name }, c.values, c.pluginFlags));
    }
    // set: change the given fields of the live policy, or of a copy of the file's.
    const base = current ?? inFile;
    if (!base) {
      c.io.err(`themis policy set: no policy ${name}; create it with themis policy add\n`);
      return 1;
    }
    return change(c, live, 'policy', name, applyFlags(base, c.values, c.pluginFlags));
  });
}

/** Policies that name a group (in any selector) or a pool. */
function usersOf(kind: 'group' | 'pool', name: string, config: LoadedConfig, live: LiveItems): string[] {
  const merged = mergeLive(config, live);
  const policies = merged.policies;
  const selectors = (v: unknown) => (Array.isArray(v) ? v : v === undefined ? [] : [v]).map((s) => String(s).replace(/^!/, ''));
  const users = policies.filter((p) => (kind === 'pool' ? p.match?.pool === name : [...selectors(p.match?.source), ...selectors(p.match?.destination)].includes(name))).map((p) => `policy ${p.name}`);
  if (kind === 'group') {
    for (const [g, members] of Object.entries(merged.policySettings.groups ?? {})) if (g !== name && members.map((m) => m.replace(/^!/, '')).includes(name)) users.push(`group ${g}`);
  }
  return users;
}

/** `themis group …` and `themis pool …`. */
export async function liveSetCommand(kind: 'group' | 'pool', sub: string | undefined, args: string[], io: CommandIO = stdio): Promise<number> {
  if (sub === undefined || sub === '--help' || sub === '-h') {
    (sub === undefined ? io.err : io.out)(LIVE_GROUP_USAGE);
    return sub === undefined ? 2 : 0;
  }
  return run(kind, LIVE_GROUP_USAGE, [sub, ...args], io, async (c) => {
    const live = await readLive(c.store);
    const field = LIVE_FIELD[kind];
    const fromFile = kind === 'group' ? c.config.policySettings.groups ?? {} : c.config.policySettings.pools ?? {};
    const liveSet = live[field] as Record<string, unknown>;
    const merged = mergeLive(c.config, live).policySettings;
    const all = ((kind === 'group' ? merged.groups : merged.pools) ?? {}) as Record<string, unknown>;
    const source = (n: string) => liveOrigin(live, field, n);
    if (sub === 'list') {
      const rows = Object.keys(all).sort().map((n) => ({ name: n, source: source(n), value: all[n] }));
      if (c.values.json) c.io.out(`${JSON.stringify(rows, null, 2)}\n`);
      else if (rows.length === 0) c.io.out(`no ${kind}s\n`);
      else for (const r of rows) c.io.out(`${r.name} (${r.source}): ${kind === 'group' ? (r.value as string[]).join(' ') : `${(r.value as PoolDefinition).servers.join(' ')}${(r.value as PoolDefinition).fallbackToGlobal ? ' (fallback to global)' : ''}`}\n`);
      return 0;
    }
    const name = needName(c, `${kind} ${sub}`);
    const items = c.positionals.slice(2);
    const current = Object.hasOwn(all, name) ? all[name] : undefined;
    if (sub === 'get') {
      if (current === undefined) {
        c.io.err(`themis ${kind} get: no ${kind} ${name}\n`);
        return 1;
      }
      c.io.out(c.values.json ? `${JSON.stringify({ name, source: source(name), [kind === 'group' ? 'members' : 'pool']: current }, null, 2)}\n` : `${name} (${source(name)}): ${JSON.stringify(current)}\n`);
      return 0;
    }
    if (sub === 'delete') {
      if (source(name) !== 'live') {
        c.io.err(`themis ${kind} delete: ${name} is not a live ${kind}${name in fromFile ? ` (it is in ${c.config.file}: edit the file)` : ''}\n`);
        return 1;
      }
      const rest: LiveItems = { ...live, [field]: Object.fromEntries(Object.entries(liveSet).filter(([n]) => n !== name)) };
      const users = name in fromFile ? [] : usersOf(kind, name, c.config, rest);
      if (users.length > 0) {
        c.io.err(`themis ${kind} delete: ${name} is still used by ${users.join(', ')}: change those first\n`);
        return 1;
      }
      if (!(await confirm(c, `delete live ${kind} ${name}?`))) return 1;
      return change(c, live, kind, name, null);
    }
    if (sub !== 'add' && sub !== 'remove') throw new UsageError(`unknown command ${kind} ${sub}`);
    if (items.length === 0) throw new UsageError(`${kind} ${sub} needs at least one ${kind === 'group' ? 'MEMBER' : 'SERVER'}`);
    if (kind === 'group') {
      const members = [...((current as string[] | undefined) ?? [])];
      for (const m of items) {
        if (sub === 'add' && !members.includes(m)) members.push(m);
        if (sub === 'remove' && members.includes(m)) members.splice(members.indexOf(m), 1);
      }
      return change(c, live, 'group', name, members);
    }
    const pool: PoolDefinition = structuredClone((current as PoolDefinition | undefined) ?? { servers: [] });
    for (const s of items) {
      if (sub === 'add' && !pool.servers.includes(s)) pool.servers.push(s);
      if (sub === 'remove') pool.servers = pool.servers.filter((x) => x !== s);
    }
    if (c.values['fallback-to-global']) pool.fallbackToGlobal = true;
    return change(c, live, 'pool', name, pool);
  });
}

/** `themis export`. */
export async function exportCommand(args: string[], io: CommandIO = stdio): Promise<number> {
  return run('export', EXPORT_USAGE, args, io, async (c) => {
    const live = await readLive(c.store);
    const js = (v: unknown) => JSON.stringify(v, null, 2).replace(/\n/g, '\n  ');
    io.out(`// Live policies exported from the store on ${new Date().toISOString()} (themis export).
// Merge these keys into themis.config.ts; once the file has them, delete the live copies
// (themis policy delete NAME, themis group delete NAME, themis pool delete NAME).
export const live = {
  groups: ${js(live.groups)},
  pools: ${js(live.pools)},
  policies: ${js(Object.values(live.policies))},
};
`);
    return 0;
  });
}
