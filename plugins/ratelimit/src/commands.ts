/**
 * `themis limits`: what administrators do with rate limits on a live pool — see a subject's usage,
 * list who is blocked, reset, unblock, block and exempt — against the shared store, so every daemon
 * of the pool sees the change on its next message.
 * @module
 */
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import type { AppliedPolicy, PluginCommand, PluginCommandContext } from 'themis-milter';
import { rateAdmin, rateInspect, type RateInspection } from './store/index.ts';
import { formatDuration, parseDuration, type RatelimitPolicy } from './schema.ts';
import { networkOf, subjectKey } from './subjects.ts';

/** Usage text of `themis limits`. */
export const LIMITS_USAGE = `Usage: themis limits <command> [options]

  show SUBJECT [--policy P] [--json]     usage per window, remaining, reset time, penalty block, flags
  list [--blocked] [--policy P] [--json] subjects with counters (--blocked: only jailed or blocked ones)
  reset SUBJECT [--policy P]             forget the usage and the penalty block
  unblock SUBJECT [--policy P]           end the penalty block and an administrator's block
  block SUBJECT on|off [--policy P]      refuse every message of the subject until turned off
  bypass SUBJECT on|off [--policy P]     exempt the subject from the limits until turned off
  limit SUBJECT WINDOW=LIMIT…|off [--policy P]
                                         per-subject limits for the policy's windows (1h=5000 1m=200)

SUBJECT is the value as Themis counts it: an address (alice@example.com), a domain (example.com), a
SASL login, a client IP (the policy's prefix is applied: 192.0.2.7 → 192.0.2.0/24), '<>' for the null
sender, and a composite as its parts joined by | (alice|192.0.2.7). Without --policy, every policy with
a ratelimit field is concerned. Changes go to the shared store: every daemon applies them at once.
Every command also takes --config PATH, --redis-url URL, --redis-password PW.
`;

type Ctx = PluginCommandContext<RatelimitPolicy, unknown>;

function valueFor(policy: AppliedPolicy<RatelimitPolicy>, input: string): string {
  const parts = policy.config.by.parts;
  const pieces = input.split('|');
  return parts
    .map((part, i) => {
      const piece = (pieces[i] ?? '').trim();
      if (part.kind === 'clientIp' && isIP(piece)) return networkOf(piece, part.v4Prefix ?? 32, part.v6Prefix ?? 64);
      return piece.toLowerCase();
    })
    .join('|');
}

function describe(policy: AppliedPolicy<RatelimitPolicy>, value: string, i: RateInspection): Record<string, unknown> {
  return {
    policy: policy.name,
    subject: policy.config.by.name,
    value,
    exists: i.exists,
    blocked: i.blocked,
    bypass: i.bypass,
    jailedForSeconds: Math.ceil(i.jailedForMs / 1000),
    limits: i.limits ?? null,
    windows: i.windows.map((w, k) => ({ window: formatDuration(policy.config.windows[k].windowMs), used: w.used, limit: w.limit, remaining: w.remaining, resetSeconds: Math.ceil(w.resetMs / 1000) })),
  };
}

function printable(d: Record<string, any>): string {
  const flags = [d.blocked ? 'BLOCKED by an administrator' : '', d.bypass ? 'BYPASS (exempt)' : '', d.jailedForSeconds > 0 ? `penalty block: ${d.jailedForSeconds} s left` : ''].filter(Boolean);
  const windows = d.windows.map((w: any) => `  ${w.window.padEnd(6)} ${String(w.used).padStart(6)} / ${String(w.limit).padEnd(6)} remaining ${w.remaining}, resets in ${w.resetSeconds} s`);
  return [`${d.policy} (${d.subject}) ${d.value}${d.exists ? '' : ' — no usage recorded'}`, ...flags.map((f) => `  ${f}`), ...windows].join('\n');
}

/** The `themis limits` command. */
export const limitsCommand: PluginCommand<RatelimitPolicy, unknown> = {
  summary: 'rate limits on the live store: show, list --blocked, reset, unblock, block, bypass',
  async run(args: string[], raw) {
    const ctx = raw as Ctx;
    let values: Record<string, string | boolean | undefined>;
    let positionals: string[];
    try {
      ({ values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { policy: { type: 'string' }, json: { type: 'boolean' }, blocked: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }) as { values: Record<string, string | boolean | undefined>; positionals: string[] });
    } catch (err) {
      ctx.err(`themis limits: ${(err as Error).message}\n\n${LIMITS_USAGE}`);
      return 2;
    }
    const [command, subject, onOff] = positionals;
    if (values.help || command === 'help') {
      ctx.out(LIMITS_USAGE);
      return 0;
    }
    const usage = (why: string) => {
      ctx.err(`themis limits: ${why}\n\n${LIMITS_USAGE}`);
      return 2;
    };
    if (!command) return usage('which command?');
    if (!['show', 'list', 'reset', 'unblock', 'block', 'bypass', 'limit'].includes(command)) return usage(`unknown command ${JSON.stringify(command)}`);
    let limitsChange: Record<number, number> | null | undefined;
    if (command === 'limit') {
      const specs = positionals.slice(2);
      if (specs.length === 0) return usage('limit needs WINDOW=LIMIT pairs (1h=5000) or off');
      if (specs.length === 1 && specs[0] === 'off') limitsChange = null;
      else {
        limitsChange = {};
        for (const spec of specs) {
          const m = /^([^=]+)=(\d+)$/.exec(spec);
          const ms = m ? parseDuration(m[1]) : undefined;
          if (!m || ms === undefined) return usage(`expected WINDOW=LIMIT such as 1h=5000, got ${JSON.stringify(spec)}`);
          limitsChange[ms] = Number(m[2]);
        }
      }
    }
    if (command !== 'list' && !subject) return usage(`${command} needs a SUBJECT`);
    if ((command === 'block' || command === 'bypass') && onOff !== 'on' && onOff !== 'off') return usage(`${command} needs on or off`);
    if (ctx.storeType === 'memory') {
      ctx.err('themis limits: the configuration uses the in-memory store, whose counters live inside the daemon process; configure the Redis store (or give --redis-url) to manage limits from the command line\n');
      return 1;
    }
    const policies = ctx.policies.filter((p) => values.policy === undefined || p.name === values.policy);
    if (policies.length === 0) {
      ctx.err(values.policy ? `themis limits: no policy ${JSON.stringify(values.policy)} with a ratelimit field (policies with one: ${ctx.policies.map((p) => p.name).join(', ') || 'none'})\n` : 'themis limits: no policy has a ratelimit field\n');
      return 1;
    }

    if (command === 'list') {
      const found: Record<string, unknown>[] = [];
      for await (const key of ctx.store.scanKeys('rl:')) {
        const policyName = decodeURIComponent(key.split(':')[1] ?? '');
        const policy = policies.find((p) => p.name === policyName && key.startsWith(`rl:${encodeURIComponent(p.name)}:${p.config.by.name}:`));
        if (!policy) continue;
        const i = await rateInspect(ctx.store, key, policy.config.windows);
        if (!i.exists) continue;
        if (values.blocked && !i.blocked && i.jailedForMs <= 0) continue;
        const label = i.label ?? '';
        const prefix = `${policy.name} ${policy.config.by.name} `;
        found.push(describe(policy, label.startsWith(prefix) ? label.slice(prefix.length) : '(unknown)', i));
      }
      if (values.json) ctx.out(`${JSON.stringify(found, null, 2)}\n`);
      else ctx.out(found.length === 0 ? `no ${values.blocked ? 'blocked ' : ''}subject\n` : `${found.map(printable).join('\n')}\n`);
      return 0;
    }

    const out: Record<string, unknown>[] = [];
    for (const policy of policies) {
      const value = valueFor(policy, subject!);
      const key = subjectKey(policy.name, policy.config.by, value);
      const label = `${policy.name} ${policy.config.by.name} ${value}`;
      if (command === 'reset') await rateAdmin(ctx.store, key, { reset: true });
      if (command === 'unblock') await rateAdmin(ctx.store, key, { unjail: true, block: false });
      if (command === 'block') await rateAdmin(ctx.store, key, { block: onOff === 'on', label });
      if (command === 'bypass') await rateAdmin(ctx.store, key, { bypass: onOff === 'on', label });
      if (command === 'limit') {
        const unknown = limitsChange ? Object.keys(limitsChange).map(Number).filter((ms) => !policy.config.windows.some((w) => w.windowMs === ms)) : [];
        if (unknown.length > 0) {
          ctx.err(`themis limits: policy ${policy.name} has no window of ${unknown.map(formatDuration).join(', ')} (its windows: ${policy.config.windows.map((w) => formatDuration(w.windowMs)).join(', ')})\n`);
          return 1;
        }
        await rateAdmin(ctx.store, key, { limits: limitsChange, label });
      }
      out.push(describe(policy, value, await rateInspect(ctx.store, key, policy.config.windows)));
    }
    if (values.json) ctx.out(`${JSON.stringify(out, null, 2)}\n`);
    else ctx.out(`${out.map(printable).join('\n')}\n`);
    return 0;
  },
};
