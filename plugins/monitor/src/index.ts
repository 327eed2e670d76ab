/**
 * themis-plugin-monitor: what the mail system does. Prometheus counters with bounded labels (outcome,
 * policy, MTA, plugin, action — never an address); a per-minute history and top-N lists in the shared
 * store, so a pool of daemons has one combined history that survives restarts; a live dashboard and a
 * JSON API on the daemon's status endpoint; `themis stats` reads the same API.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { definePlugin, type HttpResponse } from 'themis-milter';
// The notes of other plugins, typed by their packages (type-only: nothing of them is loaded with this
// plugin; a note is still checked before use, as a plugin may be absent or older).
import type { PredictNote } from 'themis-plugin-predict';
import type { RatelimitNote } from 'themis-plugin-ratelimit';
import { z } from 'zod';
import { BLOCKED_SEPARATOR, MonitorApi, overReasonKey } from './api.ts';
import { Recorder } from './recorder.ts';
import { statsCommand } from './stats-command.ts';

export { MonitorApi, BLOCKED_SEPARATOR, type StatsAnswer, type HistoryAnswer, type TopAnswer, type MinuteEntry, type BlockedEntry, type TopEntry } from './api.ts';
export { Recorder, TOP_KINDS, keys, type RecorderSizes, type TopKind } from './recorder.ts';
export { renderStats, formatRemaining } from './stats-command.ts';

/** The authentication methods counted, from the notes of the plugins of the same names. */
export const AUTH_METHODS = ['spf', 'dkim', 'dmarc'] as const;

/** The results counted per method (RFC 7208, RFC 6376/8601, RFC 7489): anything else in a note is left out. */
export const AUTH_RESULTS: Readonly<Record<(typeof AUTH_METHODS)[number], ReadonlySet<string>>> = {
  spf: new Set(['pass', 'fail', 'softfail', 'neutral', 'none', 'permerror', 'temperror']),
  dkim: new Set(['pass', 'fail', 'neutral', 'none', 'permerror', 'temperror']),
  dmarc: new Set(['pass', 'fail', 'none', 'permerror', 'temperror']),
};

/** The plugin options. */
export const monitorOptions = z.strictObject({
  /** How long the per-minute history and the hourly top lists are kept, hours (default 48). */
  retentionHours: z.number().positive().max(24 * 90).default(48),
  /** Members kept per top-N list and hour (default 1,000): the memory bound, in the store and in the process. */
  topKeep: z.number().int().min(10).max(100_000).default(1_000),
  /** How often counts are written to the store, ms (default 5,000; also on shutdown and before every API read). */
  flushIntervalMs: z.number().int().min(100).default(5_000),
  /** Store key prefix (default `monitor:`). */
  keyPrefix: z.string().min(1).default('monitor:'),
  /** Record Subject headers for the repeated-subjects list (default true). */
  subjects: z.boolean().default(true),
});

/** The plugin options, validated. */
export type MonitorOptions = z.infer<typeof monitorOptions>;

const ASSETS: Readonly<Record<string, string>> = {
  '/dashboard': 'index.html',
  '/dashboard/app.js': 'app.js',
  '/dashboard/style.css': 'style.css',
};
const TYPES: Readonly<Record<string, string>> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

/** A window in minutes from the query (`minutes`, default 60), within the retention. */
function windowOf(query: Readonly<Record<string, string>>, maxMinutes: number): number | string {
  const raw = query.minutes ?? '60';
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > maxMinutes) return `minutes must be a whole number from 1 to ${maxMinutes} (the retention), not ${JSON.stringify(raw)}`;
  return n;
}

const json = (body: unknown, status = 200): HttpResponse => ({ status, type: 'application/json', body: `${JSON.stringify(body)}\n` });

/** The plugin's error codes (its part of the one error registry, and of docs/errors.md). */
export const MONITOR_ERRORS = {
  THEMIS_MONITOR_STORE_WRITE: 'monitor: could not write to the store ({reason}); counts are kept and retried',
} as const;

/** A code of the monitor plugin. */
export type MonitorErrorCode = keyof typeof MONITOR_ERRORS;

export default definePlugin({
  name: 'monitor',
  version: '1.0.0',
  kernel: '^1',
  options: monitorOptions,
  // The envelope and the headers are read from the trace's message, streamed without replies.
  observes: ['connect', 'mailFrom', 'rcptTo', 'header'],
  commands: { stats: statsCommand },
  errors: MONITOR_ERRORS,
  // The start line of the daemon says where it is.
  pages: { dashboard: '/dashboard' },
  setup({ store, metrics, options, http, log, error }) {
    // The counters are read from the recorder's totals when Prometheus scrapes: per message, the
    // monitor only updates two maps (a labelled inc() per field would cost more than the rest).
    const reported = new Map<string, number>();
    const collected = (prefix: string, labels: readonly string[], name: string, help: string) => {
      const counter = metrics.counter({
        name,
        help,
        labelNames: labels as string[],
        collect() {
          for (const [field, total] of recorder.totals) {
            // Connections refused before any message are in the history's outcomes, not in messages_total.
            if (!field.startsWith(prefix) || field.startsWith('o:connection-')) continue;
            const delta = total - (reported.get(field) ?? 0);
            if (delta <= 0) continue;
            reported.set(field, total);
            if (labels.length === 0) counter.inc(delta);
            else {
              // Field `x:a:b`: the last label takes the last part, the first label the rest (policy
              // and server names may contain colons; outcomes and actions do not).
              const rest = field.slice(prefix.length);
              const values = labels.length === 1 ? [rest] : [rest.slice(0, rest.lastIndexOf(':')), rest.slice(rest.lastIndexOf(':') + 1)];
              counter.inc(Object.fromEntries(labels.map((l, i) => [l, values[i]])), delta);
            }
          }
        },
      });
    };
    collected('o:', ['outcome'], 'messages_total', 'Messages by outcome (accepted, rejected, tempfailed, discarded, quarantined, aborted)');
    collected('r:', ['outcome'], 'recipients_total', 'Accepted recipients of messages, by message outcome');
    collected('connections', [], 'connections_total', 'SMTP connections that ended');
    collected('p:', ['policy', 'outcome'], 'policy_messages_total', 'Messages by policy that applied and outcome');
    collected('s:', ['server', 'outcome'], 'server_messages_total', 'Messages by MTA ({j}, a pool member) and outcome');
    collected('v:', ['plugin', 'action'], 'verdicts_total', 'Verdicts other than continue, by plugin and action');
    const authResults = metrics.counter({ name: 'auth_results_total', help: 'Mail-authentication results of decided messages (the spf, dkim and dmarc plugins\' notes), by method and result', labelNames: ['method', 'result'] });
    const refusedConnections = metrics.counter({ name: 'connections_refused_total', help: 'Connections refused at CONNECT or HELO, by outcome', labelNames: ['outcome'] });
    const blockedGauge = metrics.gauge({ name: 'blocked_subjects', help: 'Subjects refused by rate limits right now (pool-wide, from the store)' });
    const storeErrors = metrics.counter({ name: 'store_errors_total', help: 'Flushes to the store that failed (their counts are kept and retried)' });

    let lastStoreLog = 0;
    const recorder = new Recorder({
      store,
      prefix: options.keyPrefix,
      retentionMs: options.retentionHours * 3_600_000,
      keep: options.topKeep,
      onError(err) {
        storeErrors.inc();
        if (Date.now() - lastStoreLog < 60_000) return;
        lastStoreLog = Date.now();
        const e = error('THEMIS_MONITOR_STORE_WRITE', { reason: (err as Error).message }, { cause: err });
        log.warn({ code: e.code, cause: (err as { code?: string }).code, err: (err as Error).message }, e.message);
      },
    });
    const api = new MonitorApi(store, options.keyPrefix, options.topKeep);
    const maxMinutes = Math.floor(options.retentionHours * 60);

    const timer = setInterval(() => {
      void recorder.flush().then(async () => blockedGauge.set((await api.blockedNow()).length)).catch(() => undefined);
    }, options.flushIntervalMs);
    timer.unref();

    const assetsDir = new URL('../dashboard/', import.meta.url);
    for (const [path, file] of Object.entries(ASSETS)) {
      http.get(path, async () => ({ type: TYPES[file.slice(file.lastIndexOf('.') + 1)], body: await readFile(new URL(file, assetsDir), 'utf8') }));
    }
    // Reads flush first: what the API shows includes the last message.
    http.get('/api/stats', async ({ query }) => {
      const minutes = windowOf(query, maxMinutes);
      if (typeof minutes === 'string') return json({ error: minutes }, 400);
      await recorder.flush();
      return json(await api.stats(minutes));
    });
    http.get('/api/history', async ({ query }) => {
      const minutes = windowOf(query, maxMinutes);
      if (typeof minutes === 'string') return json({ error: minutes }, 400);
      await recorder.flush();
      return json(await api.history(minutes));
    });
    http.get('/api/top', async ({ query }) => {
      const minutes = windowOf(query, maxMinutes);
      if (typeof minutes === 'string') return json({ error: minutes }, 400);
      const limit = Number(query.limit ?? '10');
      if (!Number.isInteger(limit) || limit < 1 || limit > options.topKeep) return json({ error: `limit must be a whole number from 1 to ${options.topKeep}, not ${JSON.stringify(query.limit)}` }, 400);
      await recorder.flush();
      return json(await api.top(minutes, limit));
    });

    return {
      close() {
        recorder.add(recorder.minute(), 'connections');
      },

      decision(ctx, trace) {
        const message = ctx.message;
        const outcome = trace.outcome;
        const m = recorder.minute();
        if (!message) {
          refusedConnections.inc({ outcome });
          recorder.add(m, `o:connection-${outcome}`);
          return;
        }
        let rcpts = 0;
        for (const r of message.recipients) if (r.accepted) rcpts++;
        recorder.add(m, 'messages');
        recorder.add(m, `o:${outcome}`);
        if (rcpts > 0) {
          recorder.add(m, 'recipients', rcpts);
          recorder.add(m, `r:${outcome}`, rcpts);
        }
        recorder.add(m, `s:${ctx.session.mta ?? 'unknown'}:${outcome}`);
        for (const policy of trace.policies) recorder.add(m, `p:${policy}:${outcome}`);
        for (const e of trace.entries) if (e.action !== 'continue') recorder.add(m, `v:${e.plugin}:${e.action}`);

        // What the authenticating plugins found (their notes' `result`): known results only, so the
        // labels and the history's fields stay a fixed, small set whatever a note holds.
        for (const method of AUTH_METHODS) {
          const note = message.notes.of<{ result?: unknown; verified?: unknown }>(method);
          const result = note?.result;
          if (typeof result !== 'string' || !AUTH_RESULTS[method].has(result) || note?.verified === false) continue;
          recorder.add(m, `a:${method}:${result}`);
          authResults.inc({ method, result });
        }

        // The original's "feeders": senders by volume, senders using many client IPs, repeated subjects.
        const sender = (message.sender?.address ?? '').toLowerCase() || '<>';
        recorder.rank('senders', sender);
        const ip = ctx.session.client?.address;
        if (ip) recorder.rank('senderIps', `${sender} ${ip}`);
        if (options.subjects) {
          const subject = message.headers.find((h) => h.name.toLowerCase() === 'subject')?.value.replace(/\s+/g, ' ').trim();
          if (subject) recorder.rank('subjects', subject.slice(0, 200));
        }
        const predicted = message.notes.of<PredictNote>('predict');
        if (predicted?.over && typeof predicted.subject === 'string' && Array.isArray(predicted.timeframes)) {
          const over = predicted.timeframes.filter((t) => t.bound !== null && t.count > t.bound);
          const worst = over.reduce((w, t) => (t.count / t.bound! > w.count / w.bound! ? t : w), over[0] ?? predicted.timeframes[0]);
          const longest = Math.max(...predicted.timeframes.map((t) => t.minutes));
          const unit = typeof predicted.unit === 'string' ? ` ${predicted.unit}` : '';
          const reason = worst ? `${worst.count}${unit} in ${worst.minutes} min, bound ${Math.round(worst.bound ?? 0)}` : 'over the learned rate';
          // One entry per subject and policy; its latest reason beside it (flagged messages are rare:
          // one small write each is fine).
          const member = [predicted.policy, predicted.subject, predicted.shadow ? '1' : '0'].join(BLOCKED_SEPARATOR);
          recorder.overRate(member, Date.now() + longest * 60_000);
          store.set(overReasonKey(options.keyPrefix, member), reason, longest * 60_000 + 60_000).catch(() => undefined);
          recorder.rank('overRate', `${predicted.policy} ${predicted.subject}`);
        }
        const refused = message.notes.of<RatelimitNote>('ratelimit')?.refused;
        if (refused && typeof refused.subject === 'string') {
          const member = [refused.policy, `${refused.by}:${refused.subject}`, refused.outcome === 'blocked' ? '' : refused.limit].join(BLOCKED_SEPARATOR);
          recorder.rank('blocked', member);
          // An administrator's block has no end: it shows until the retention runs out.
          recorder.block(member, refused.retryAfterMs < 0 ? Date.now() + options.retentionHours * 3_600_000 : Date.now() + refused.retryAfterMs);
        }
      },

      async shutdown() {
        clearInterval(timer);
        // What was counted since the last flush is written before the process goes: a restart loses nothing.
        await recorder.flush();
      },
    };
  },
});
