/**
 * `themis stats`: what the dashboard shows, as a table in the terminal — read from the running
 * daemon's `/api/stats` and `/api/top`, so the numbers are the pool-wide ones the dashboard shows.
 * @module
 */
import { parseArgs } from 'node:util';
import type { PluginCommand } from 'themis-milter';
import type { StatsAnswer, TopAnswer } from './api.ts';

const USAGE = `Usage: themis stats [--minutes N] [--top N] [--json] [--watch [SECONDS]] [--http SPEC] [--http-token TOKEN] [--config PATH]

What the mail system did over the last N minutes (default 60), pool-wide: messages, recipients and
connections, outcomes, per policy and per server, verdicts, subjects blocked now with the time left,
and the top senders, senders using many client IPs, repeated subjects and most-blocked subjects.
Read from the running daemon's status endpoint (as \`themis status\`); --json prints the API's JSON;
--watch redraws every SECONDS (default 5) until interrupted.
`;

/** Renders rows as an aligned table. */
function table(headers: string[], rows: (string | number)[][]): string {
  if (rows.length === 0) return '  (none)\n';
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells: (string | number)[]) => '  ' + cells.map((c, i) => (typeof c === 'number' ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n';
}

const OUTCOMES = ['accepted', 'rejected', 'tempfailed', 'discarded', 'quarantined', 'aborted'];

/** Seconds as `1h 2m`, `4m 59s`, `12s`. */
export function formatRemaining(seconds: number | null): string {
  if (seconds === null) return 'until lifted';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s}s` : `${s}s`;
}

/** The text `themis stats` prints. */
export function renderStats(stats: StatsAnswer, top: TopAnswer): string {
  const o = stats.totals.outcomes;
  let out = `Themis — last ${stats.minutes} min, at ${stats.generatedAt}\n\n`;
  out += table(['messages', 'recipients', 'connections', ...OUTCOMES, 'last min', 'per min'], [[stats.totals.messages, stats.totals.recipients, stats.totals.connections, ...OUTCOMES.map((k) => o[k] ?? 0), stats.rate.lastMinute, stats.rate.perMinute]]);
  out += '\nPolicies\n' + table(['policy', 'messages', ...OUTCOMES], stats.policies.map((p) => [p.name, p.messages, ...OUTCOMES.map((k) => p.outcomes[k] ?? 0)]));
  out += '\nServers\n' + table(['server', 'messages', ...OUTCOMES], stats.servers.map((s) => [s.name, s.messages, ...OUTCOMES.map((k) => s.outcomes[k] ?? 0)]));
  out += '\nVerdicts\n' + table(['plugin', 'action', 'count'], stats.verdicts.map((v) => [v.plugin, v.action, v.count]));
  if (stats.authentication?.length) {
    out += '\nAuthentication\n' + table(['method', 'checked', 'pass', 'fail', 'other'], stats.authentication.map((a) => {
      const pass = a.results.pass ?? 0;
      const fail = a.results.fail ?? 0;
      const other = Object.entries(a.results).filter(([r]) => r !== 'pass' && r !== 'fail').map(([r, n]) => `${r} ${n}`).join(', ');
      return [a.method, a.checked, pass, fail, other || '—'];
    }));
  }
  out += '\nBlocked now\n' + table(['policy', 'subject', 'remaining', 'reason'], stats.blocked.map((b) => [b.policy, b.subject, formatRemaining(b.remainingSeconds), b.reason]));
  out += '\nTop senders\n' + table(['sender', 'messages'], top.senders.map((e) => [e.key, e.count]));
  out += '\nSenders using many client IPs\n' + table(['sender', 'IPs'], top.senderIps.map((e) => [e.key, e.count]));
  out += '\nRepeated subjects\n' + table(['subject', 'messages'], top.subjects.map((e) => [e.key, e.count]));
  out += '\nMost blocked\n' + table(['policy subject', 'refusals'], top.blocked.map((e) => [e.key, e.count]));
  return out;
}

/** The `themis stats` command. */
export const statsCommand: PluginCommand<unknown, unknown> = {
  summary: 'what the mail system did: counts, outcomes, policies, servers, blocked subjects, top lists (--json, --watch)',
  async run(args, ctx) {
    let values;
    try {
      ({ values } = parseArgs({ args, options: { minutes: { type: 'string' }, top: { type: 'string' }, json: { type: 'boolean' }, watch: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true }));
    } catch (err) {
      ctx.err(`themis stats: ${(err as Error).message}\n${USAGE}`);
      return 2;
    }
    if (values.help) {
      ctx.out(USAGE);
      return 0;
    }
    const minutes = Number(values.minutes ?? '60');
    const limit = Number(values.top ?? '10');
    const interval = Number(args.find((a, i) => args[i - 1] === '--watch' && /^\d+$/.test(a)) ?? '5');
    if (!Number.isInteger(minutes) || minutes < 1 || !Number.isInteger(limit) || limit < 1) {
      ctx.err(`themis stats: --minutes and --top take whole numbers from 1\n${USAGE}`);
      return 2;
    }
    const once = async (): Promise<number> => {
      let stats: StatsAnswer;
      let top: TopAnswer;
      try {
        [stats, top] = (await Promise.all([ctx.readStatus(`/api/stats?minutes=${minutes}`), ctx.readStatus(`/api/top?minutes=${minutes}&limit=${limit}`)])) as [StatsAnswer, TopAnswer];
      } catch (err) {
        ctx.err(`themis stats: no answer from the daemon: ${(err as Error).message}\n`);
        return 1;
      }
      if (values.json) ctx.out(`${JSON.stringify({ stats, top }, null, 2)}\n`);
      else ctx.out((values.watch ? '\u001b[2J\u001b[H' : '') + renderStats(stats, top));
      return 0;
    };
    if (!values.watch) return once();
    for (;;) {
      const code = await once();
      if (code !== 0) return code;
      await new Promise((r) => setTimeout(r, interval * 1000));
    }
  },
};
