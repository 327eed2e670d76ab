/**
 * The JSON behind the dashboard and `themis stats`, read from the store — so every daemon sharing it
 * answers the same, pool-wide numbers. Shapes are documented in the README (`/api/stats`,
 * `/api/history`, `/api/top`).
 * @module
 */
import type { Store } from 'themis-milter';
import { TOP_KINDS, keys, type TopKind } from './recorder.ts';


/** The order methods are listed in: the order a receiver evaluates them. */
const METHOD_ORDER = ['spf', 'dkim', 'dmarc', 'arc'];
/** Counts per outcome (`accepted`, `rejected`, `tempfailed`, `discarded`, `quarantined`, `aborted`); zeros left out. */
export type Outcomes = Record<string, number>;

/** One minute of history. */
export interface MinuteEntry {
  /** The minute's start, ISO 8601. */
  t: string;
  /** Messages that ended in it. */
  messages: number;
  /** Their accepted recipients. */
  recipients: number;
  /** Connections that ended in it. */
  connections: number;
  /** Messages per outcome. */
  outcomes: Outcomes;
  /** Messages per policy and outcome. */
  policies: Record<string, Outcomes>;
  /** Messages per MTA (`{j}`). */
  servers: Record<string, number>;
  /** Verdicts per `plugin:action` (continue left out). */
  verdicts: Record<string, number>;
  /** Authentication results per `method:result` (`spf:pass`, `dkim:fail`, `dmarc:none`…). */
  auth: Record<string, number>;
}

/** `GET /api/history`. */
export interface HistoryAnswer {
  /** The window, minutes. */
  minutes: number;
  /** One entry per minute, oldest first; the last is the current minute. */
  series: MinuteEntry[];
}

/** A subject refused now. */
export interface BlockedEntry {
  /** The policy that refused it. */
  policy: string;
  /** `by:value` (`sender:a@example.org`). */
  subject: string;
  /** When it may send again, ISO 8601; null when an administrator must lift the block. */
  until: string | null;
  /** Seconds until then (null for an administrator's block). */
  remainingSeconds: number | null;
  /** Why, in words. */
  reason: string;
}

/** A subject over its learned rate now (the predict plugin). */
export interface OverEntry {
  /** The policy that judged it. */
  policy: string;
  /** The subject (`alice@example.com`). */
  subject: string;
  /** Until when it shows (the longest timeframe after the last message over the bound), ISO 8601. */
  until: string;
  /** Seconds until then. */
  remainingSeconds: number;
  /** The trace's words: `37 recipients in 5 min, learned normal 4 ± 2, bound 12`. */
  reason: string;
  /** Decided in shadow mode (logged, not acted on). */
  shadow: boolean;
}

/** `GET /api/stats`. */
export interface StatsAnswer {
  /** When the answer was made. */
  generatedAt: string;
  /** The window, minutes. */
  minutes: number;
  /** Sums over the window. */
  totals: { messages: number; recipients: number; connections: number; outcomes: Outcomes };
  /** `lastMinute`: messages in the last complete minute; `perMinute`: the window's average. */
  rate: { lastMinute: number; perMinute: number };
  /** Per policy, busiest first. */
  policies: { name: string; messages: number; outcomes: Outcomes }[];
  /** Per MTA, busiest first (a pool's servers). */
  servers: { name: string; messages: number; outcomes: Outcomes }[];
  /** Verdicts per plugin and action, most first. */
  verdicts: { plugin: string; action: string; count: number }[];
  /**
   * Mail-authentication results of the window, per method (`spf`, `dkim`, `dmarc`, in that order; only the
   * methods seen): messages checked, and how many got each result.
   */
  authentication: { method: string; checked: number; results: Record<string, number> }[];
  /** Subjects refused now, longest first. */
  blocked: BlockedEntry[];
  /** Subjects over their learned rate now (the predict plugin), latest first. */
  overRate: OverEntry[];
}

/** One entry of a top-N list. */
export interface TopEntry {
  /** The member (a sender, a subject, `policy by:value`). */
  key: string;
  /** Its count: messages, or distinct client IPs for `senderIps`. */
  count: number;
}

/** `GET /api/top`. */
export type TopAnswer = { minutes: number; limit: number } & Record<TopKind, TopEntry[]>;

const MINUTE = 60_000;
const HOUR = 3_600_000;

/** The key of the latest reason of a subject over its learned rate. */
export function overReasonKey(prefix: string, member: string): string {
  return `${prefix}over-reason:${member}`;
}

/** Blocked-list members: policy, subject and the limit, joined by a separator no address contains. */
export const BLOCKED_SEPARATOR = '\u001f';

/** Reads history, stats and top lists from the store. */
export class MonitorApi {
  private readonly store: Store;
  private readonly prefix: string;
  private readonly keep: number;
  private readonly now: () => number;

  constructor(store: Store, prefix: string, keep: number, now: () => number = Date.now) {
    this.store = store;
    this.prefix = prefix;
    this.keep = keep;
    this.now = now;
  }

  /** Per-minute series of the last `minutes` minutes (the current one included). */
  async history(minutes: number): Promise<HistoryAnswer> {
    return { minutes, series: (await this.read(minutes)).map((r) => r.entry) };
  }

  /** The window's minutes, parsed, with the per-server outcomes the stats need. */
  private async read(minutes: number): Promise<{ entry: MinuteEntry; servers: Map<string, Outcomes> }[]> {
    const current = Math.floor(this.now() / MINUTE);
    const list = Array.from({ length: minutes }, (_, i) => current - minutes + 1 + i);
    const rows = await this.store.counterRead(list.map((m) => keys.minute(this.prefix, m)));
    return rows.map((fields, i) => {
      const servers = new Map<string, Outcomes>();
      const e: MinuteEntry = { t: new Date(list[i] * MINUTE).toISOString(), messages: 0, recipients: 0, connections: 0, outcomes: {}, policies: {}, servers: {}, verdicts: {}, auth: {} };
      for (const [field, n] of Object.entries(fields)) {
        // Fields: messages, recipients, connections, o:<outcome>, p:<policy>:<outcome>, s:<server>:<outcome>, v:<plugin>:<action>, a:<method>:<result>.
        const colon = field.indexOf(':');
        if (colon < 0) {
          if (field === 'messages' || field === 'recipients' || field === 'connections') e[field] = n;
          continue;
        }
        const kind = field.slice(0, colon);
        const rest = field.slice(colon + 1);
        if (kind === 'o') e.outcomes[rest] = n;
        else if (kind === 's') {
          const [name, outcome] = splitLast(rest);
          e.servers[name] = (e.servers[name] ?? 0) + n;
          const acc = servers.get(name) ?? {};
          acc[outcome] = (acc[outcome] ?? 0) + n;
          servers.set(name, acc);
        }
        else if (kind === 'v') e.verdicts[rest] = n;
        else if (kind === 'a') e.auth[rest] = n;
        else if (kind === 'p') {
          const at = rest.lastIndexOf(':');
          const policy = rest.slice(0, at);
          (e.policies[policy] ??= {})[rest.slice(at + 1)] = n;
        }
      }
      return { entry: e, servers };
    });
  }

  /** Sums over the window, the rate, and the subjects refused now. */
  async stats(minutes: number): Promise<StatsAnswer> {
    const [rows, blocked, overRate] = await Promise.all([this.read(minutes), this.blockedNow(), this.overNow()]);
    const series = rows.map((r) => r.entry);
    const totals = { messages: 0, recipients: 0, connections: 0, outcomes: {} as Outcomes };
    const policies = new Map<string, Outcomes>();
    const verdicts = new Map<string, number>();
    const auth = new Map<string, Record<string, number>>();
    for (const e of series) {
      for (const [key, n] of Object.entries(e.auth)) {
        const [method, result] = splitLast(key);
        const acc = auth.get(method) ?? {};
        acc[result] = (acc[result] ?? 0) + n;
        auth.set(method, acc);
      }
      totals.messages += e.messages;
      totals.recipients += e.recipients;
      totals.connections += e.connections;
      add(totals.outcomes, e.outcomes);
      for (const [p, o] of Object.entries(e.policies)) {
        let acc = policies.get(p);
        if (!acc) policies.set(p, (acc = {}));
        add(acc, o);
      }
      for (const [v, n] of Object.entries(e.verdicts)) verdicts.set(v, (verdicts.get(v) ?? 0) + n);
    }
    const serverOutcomes = new Map<string, Outcomes>();
    for (const r of rows)
      for (const [name, outcomes] of r.servers) {
        const acc = serverOutcomes.get(name) ?? {};
        add(acc, outcomes);
        serverOutcomes.set(name, acc);
      }
    const sum = (o: Outcomes) => Object.values(o).reduce((a, b) => a + b, 0);
    return {
      generatedAt: new Date(this.now()).toISOString(),
      minutes,
      totals,
      rate: { lastMinute: series.length >= 2 ? series[series.length - 2].messages : 0, perMinute: Math.round((totals.messages / minutes) * 100) / 100 },
      policies: [...policies].map(([name, outcomes]) => ({ name, messages: sum(outcomes), outcomes })).sort((a, b) => b.messages - a.messages || a.name.localeCompare(b.name)),
      servers: [...serverOutcomes].map(([name, outcomes]) => ({ name, messages: sum(outcomes), outcomes })).sort((a, b) => b.messages - a.messages || a.name.localeCompare(b.name)),
      verdicts: [...verdicts].map(([key, count]) => {
        const [plugin, action] = splitLast(key);
        return { plugin, action, count };
      }).sort((a, b) => b.count - a.count),
      authentication: [...auth]
        .map(([method, results]) => ({ method, checked: Object.values(results).reduce((a, b) => a + b, 0), results }))
        .sort((a, b) => METHOD_ORDER.indexOf(a.method) - METHOD_ORDER.indexOf(b.method) || a.method.localeCompare(b.method)),
      blocked,
      overRate,
    };
  }

  /** Subjects the predict plugin found over their learned rate, still showing. */
  async overNow(): Promise<OverEntry[]> {
    const [members] = await this.store.rankRead([keys.over(this.prefix)], this.keep);
    const now = this.now();
    const out: OverEntry[] = [];
    for (const [member, until] of members) {
      if (until <= now) continue;
      const [policy, subject, shadow] = member.split(BLOCKED_SEPARATOR);
      out.push({ policy, subject, until: new Date(until).toISOString(), remainingSeconds: Math.ceil((until - now) / 1000), reason: member, shadow: shadow === '1' });
    }
    const reasons = await Promise.all(out.map((o) => this.store.get(overReasonKey(this.prefix, o.reason)).catch(() => undefined)));
    out.forEach((o, i) => (o.reason = reasons[i] ?? 'over the learned rate'));
    return out;
  }

  /** Subjects whose refusal still runs, longest first. */
  async blockedNow(): Promise<BlockedEntry[]> {
    const [members] = await this.store.rankRead([keys.blocked(this.prefix)], this.keep);
    const now = this.now();
    const out: BlockedEntry[] = [];
    for (const [member, until] of members) {
      if (until <= now) continue;
      const [policy, subject, limit] = member.split(BLOCKED_SEPARATOR);
      const admin = limit === '';
      out.push({ policy, subject, until: admin ? null : new Date(until).toISOString(), remainingSeconds: admin ? null : Math.ceil((until - now) / 1000), reason: admin ? 'blocked by an administrator' : `over ${limit}` });
    }
    return out;
  }

  /** Top-N lists over the hours the window touches. */
  async top(minutes: number, limit: number): Promise<TopAnswer> {
    const now = this.now();
    const last = Math.floor(now / HOUR);
    const first = Math.floor((now - minutes * MINUTE + 1) / HOUR);
    const hours = Array.from({ length: last - first + 1 }, (_, i) => first + i);
    const answer = { minutes, limit } as TopAnswer;
    const lists = await Promise.all(TOP_KINDS.map((kind) => this.store.rankRead(hours.map((h) => keys.top(this.prefix, kind, h)), this.keep)));
    TOP_KINDS.forEach((kind, i) => {
      const merged = new Map<string, number>();
      for (const rows of lists[i]) for (const [member, score] of rows) merged.set(member, (merged.get(member) ?? 0) + score);
      let entries: [string, number][];
      if (kind === 'senderIps') {
        // Members are `sender ip`: the count is the number of distinct client IPs per sender.
        const ips = new Map<string, number>();
        for (const member of merged.keys()) {
          const sender = member.slice(0, member.lastIndexOf(' '));
          ips.set(sender, (ips.get(sender) ?? 0) + 1);
        }
        entries = [...ips];
      } else if (kind === 'blocked') entries = [...merged].map(([m, n]) => [m.split(BLOCKED_SEPARATOR).slice(0, 2).join(' '), n]);
      else entries = [...merged];
      answer[kind] = entries.sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, limit).map(([key, count]) => ({ key, count }));
    });
    return answer;
  }
}

function add(into: Outcomes, from: Outcomes): void {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
}

function splitLast(s: string): [string, string] {
  const at = s.lastIndexOf(':');
  return [s.slice(0, at), s.slice(at + 1)];
}
