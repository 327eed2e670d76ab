/**
 * themis-plugin-monitor: what the mail system does. Prometheus counters with bounded labels (outcome,
 * policy, MTA, plugin, action — never an address); a per-minute history and top-N lists in the shared
 * store, so a pool of daemons has one combined history that survives restarts; a live dashboard and a
 * JSON API on the daemon's status endpoint; `themis stats` reads the same API.
 * @module
 */
import { readFile } from 'node:fs/promises';
import { definePlugin, type HttpResponse } from 'themis';
import { z } from 'zod';
import { BLOCKED_SEPARATOR, MonitorApi } from './api.ts';
import { Recorder } from './recorder.ts';
import { statsCommand } from './stats-command.ts';

export { MonitorApi, BLOCKED_SEPARATOR, type StatsAnswer, type HistoryAnswer, type TopAnswer, type MinuteEntry, type BlockedEntry, type TopEntry } from './api.ts';
export { Recorder, TOP_KINDS, keys, type TopKind } from './recorder.ts';
export { renderStats, formatRemaining } from './stats-command.ts';

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

/** The ratelimit plugin's refusal, as its note publishes it (read by shape: no import of another plugin). */
interface RefusalNote {
  policy: string;
  by: string;
  subject: string;
  outcome: string;
  limit: string;
  retryAfterMs: number;
}

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

export default definePlugin<unknown, MonitorOptions>({
  name: 'monitor',
  version: '1.0.0',
  kernel: '^1',
  options: monitorOptions as unknown as z.ZodType<MonitorOptions>,
  // The envelope and the headers are read from the trace's message, streamed without replies.
  observes: ['connect', 'mailFrom', 'rcptTo', 'header'],
  commands: { stats: statsCommand },
  setup({ store, metrics, options, http, log }) {
    const messages = metrics.counter({ name: 'messages_total', help: 'Messages by outcome (accepted, rejected, tempfailed, discarded, quarantined, aborted)', labelNames: ['outcome'] });
    const recipients = metrics.counter({ name: 'recipients_total', help: 'Accepted recipients of messages, by message outcome', labelNames: ['outcome'] });
    const connections = metrics.counter({ name: 'connections_total', help: 'SMTP connections that ended' });
    const refusedConnections = metrics.counter({ name: 'connections_refused_total', help: 'Connections refused at CONNECT or HELO, by outcome', labelNames: ['outcome'] });
    const byPolicy = metrics.counter({ name: 'policy_messages_total', help: 'Messages by policy that applied and outcome', labelNames: ['policy', 'outcome'] });
    const byServer = metrics.counter({ name: 'server_messages_total', help: 'Messages by MTA ({j}, a pool member) and outcome', labelNames: ['server', 'outcome'] });
    const verdicts = metrics.counter({ name: 'verdicts_total', help: 'Verdicts other than continue, by plugin and action', labelNames: ['plugin', 'action'] });
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
        log.warn({ code: (err as { code?: string }).code, err: (err as Error).message }, 'monitor: could not write to the store; counts are kept and retried');
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
        connections.inc();
        recorder.count({ connections: 1 });
      },

      decision(ctx, trace) {
        const message = ctx.message;
        const outcome = trace.outcome;
        if (!message) {
          refusedConnections.inc({ outcome });
          recorder.count({ [`o:connection-${outcome}`]: 1 });
          return;
        }
        const rcpts = message.recipients.reduce((n, r) => (r.accepted ? n + 1 : n), 0);
        const server = ctx.session.mta ?? 'unknown';
        messages.inc({ outcome });
        if (rcpts > 0) recipients.inc({ outcome }, rcpts);
        byServer.inc({ server, outcome });
        const fields: Record<string, number> = { messages: 1, recipients: rcpts, [`o:${outcome}`]: 1, [`s:${server}:${outcome}`]: 1 };
        for (const policy of trace.policies) {
          byPolicy.inc({ policy, outcome });
          fields[`p:${policy}:${outcome}`] = 1;
        }
        for (const e of trace.entries) {
          if (e.action === 'continue') continue;
          verdicts.inc({ plugin: e.plugin, action: e.action });
          const k = `v:${e.plugin}:${e.action}`;
          fields[k] = (fields[k] ?? 0) + 1;
        }
        recorder.count(fields);

        // The original's "feeders": senders by volume, senders using many client IPs, repeated subjects.
        const sender = (message.sender?.address ?? '').toLowerCase() || '<>';
        recorder.rank('senders', sender);
        const ip = ctx.session.client?.address;
        if (ip) recorder.rank('senderIps', `${sender} ${ip}`);
        if (options.subjects) {
          const subject = message.headers.find((h) => h.name.toLowerCase() === 'subject')?.value.replace(/\s+/g, ' ').trim();
          if (subject) recorder.rank('subjects', subject.slice(0, 200));
        }
        const refused = message.notes.of<{ refused?: RefusalNote }>('ratelimit')?.refused;
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
