/**
 * What the monitor counts, kept in memory between flushes and written to the store in batches: one
 * hash of counters per minute (pool-wide, since every daemon adds to the same keys) and bounded
 * sorted sets for the top-N lists. Nothing is lost to a failed flush: the batch is merged back and
 * retried. Memory is bounded by the configuration, never by the traffic: each top-N list, the refused
 * and the over-rate subjects hold fewer than 2 × `keep` candidates between flushes (past that, the
 * `keep` largest stay), and what a failed flush keeps is dropped once older than the retention.
 * @module
 */
import type { Store } from 'themis-milter';

/** Top-N lists the monitor keeps. */
export const TOP_KINDS = ['senders', 'senderIps', 'subjects', 'blocked', 'overRate'] as const;
/** One top-N list. */
export type TopKind = (typeof TOP_KINDS)[number];

/** Store key layout, under the plugin's prefix. */
export const keys = {
  /** Counters of one minute (`minute` = ms since 1970 / 60,000). */
  minute: (prefix: string, minute: number) => `${prefix}m:${minute}`,
  /** One top-N list for one hour (`hour` = ms since 1970 / 3,600,000). */
  top: (prefix: string, kind: TopKind, hour: number) => `${prefix}top:${kind}:${hour}`,
  /** Subjects refused now, scored by the time (ms) they may send again. */
  blocked: (prefix: string) => `${prefix}blocked`,
  /** Subjects over their learned rate (the predict plugin), scored by when that stops showing (ms). */
  over: (prefix: string) => `${prefix}over`,
};

/** Settings of a {@link Recorder}. */
export interface RecorderOptions {
  /** The shared store. */
  store: Store;
  /** Key prefix (`monitor:`). */
  prefix: string;
  /** How long minute counters and top lists are kept, ms. */
  retentionMs: number;
  /** Members kept per top-N list (in memory between flushes, and in the store). */
  keep: number;
  /** Called when a flush fails (the batch is kept for the next one). */
  onError(err: unknown): void;
  /** The clock (tests). */
  now?: () => number;
}

/** Sizes of what waits to be written: each is bounded by the configuration (tests, diagnostics). */
export interface RecorderSizes {
  /** Minutes with pending counters: at most the retention's minutes and the current one. */
  minutes: number;
  /** Pending counter fields, over those minutes (per minute: one per outcome, policy, MTA, plugin verdict). */
  fields: number;
  /** Pending top-N lists (one per kind and hour, within the retention). */
  lists: number;
  /** Candidates in the largest pending top-N list: fewer than 2 × `keep`. */
  largestList: number;
  /** Pending refused subjects: fewer than 2 × `keep`. */
  blocked: number;
  /** Pending subjects over their learned rate: fewer than 2 × `keep`. */
  over: number;
}

/** Counts in memory and flushes them to the store. */
export class Recorder {
  private readonly o: RecorderOptions;
  private readonly now: () => number;
  /** Pending counter deltas: minute → field → amount. */
  private minutes = new Map<number, Map<string, number>>();
  /** Pending top-N deltas: `kind:hour` → member → amount. */
  private tops = new Map<string, { kind: TopKind; hour: number; members: Map<string, number> }>();
  /** Pending blocked subjects: member → until (ms). */
  private blocked = new Map<string, number>();
  /** Pending subjects over their learned rate: member → until (ms). */
  private over = new Map<string, number>();
  /**
   * The latest `until` flushed to the refused and over-rate lists: their keys live at least until
   * then, so a later, shorter mark does not cut an earlier, longer one short (the write resets the expiry).
   */
  private readonly horizon = { blocked: 0, over: 0 };
  private flushing: Promise<void> | undefined;

  constructor(options: RecorderOptions) {
    this.o = options;
    this.now = options.now ?? Date.now;
  }

  /** Counts since the process started, by field: what the Prometheus counters report. */
  readonly totals = new Map<string, number>();
  private currentMinute = -1;
  private current: Map<string, number> | undefined;

  /**
   * The current minute's counters. Per message the monitor adds several fields: the map is looked
   * up once per message, not once per field.
   */
  minute(): Map<string, number> {
    const minute = Math.floor(this.now() / 60_000);
    if (minute !== this.currentMinute || this.current === undefined || this.minutes.get(minute) !== this.current) {
      let m = this.minutes.get(minute);
      if (!m) this.minutes.set(minute, (m = new Map()));
      this.currentMinute = minute;
      this.current = m;
    }
    return this.current;
  }

  /** Adds `n` to a field of a minute's counters (from {@link minute}) and to the process totals. */
  add(minute: Map<string, number>, field: string, n = 1): void {
    minute.set(field, (minute.get(field) ?? 0) + n);
    this.totals.set(field, (this.totals.get(field) ?? 0) + n);
  }

  /** Adds to a top-N list of the current hour. */
  rank(kind: TopKind, member: string, by = 1): void {
    const hour = Math.floor(this.now() / 3_600_000);
    const id = `${kind}:${hour}`;
    let t = this.tops.get(id);
    if (!t) this.tops.set(id, (t = { kind, hour, members: new Map() }));
    t.members.set(member, (t.members.get(member) ?? 0) + by);
    if (t.members.size >= this.o.keep * 2) t.members = this.largest(t.members);
  }

  /**
   * Bounded memory between flushes: the `keep` largest of a list of candidates that reached twice
   * that (so a trim costs one sort every `keep` new members). A member that stays among the `keep`
   * largest is never dropped, so a list's leaders are counted exactly; the store keeps the same rule.
   */
  private largest(members: Map<string, number>): Map<string, number> {
    return new Map([...members].sort((a, b) => b[1] - a[1]).slice(0, this.o.keep));
  }

  /** The `keep` latest marks still running: the refused and over-rate lists as the store keeps them (mode `max`, `keep` highest). */
  private latest(marks: Map<string, number>): Map<string, number> {
    const now = this.now();
    return new Map([...marks].filter(([, until]) => until > now).sort((a, b) => b[1] - a[1]).slice(0, this.o.keep));
  }

  /** Records a subject refused until `until` (ms). */
  block(member: string, until: number): void {
    this.blocked.set(member, Math.max(this.blocked.get(member) ?? 0, until));
    if (this.blocked.size >= this.o.keep * 2) this.blocked = this.latest(this.blocked);
  }

  /** Records a subject over its learned rate, shown until `until` (ms). */
  overRate(member: string, until: number): void {
    this.over.set(member, Math.max(this.over.get(member) ?? 0, until));
    if (this.over.size >= this.o.keep * 2) this.over = this.latest(this.over);
  }

  /** What waits to be written, counted (each bounded: see {@link RecorderSizes}). */
  get sizes(): RecorderSizes {
    let fields = 0;
    for (const m of this.minutes.values()) fields += m.size;
    let largestList = 0;
    for (const t of this.tops.values()) largestList = Math.max(largestList, t.members.size);
    return { minutes: this.minutes.size, fields, lists: this.tops.size, largestList, blocked: this.blocked.size, over: this.over.size };
  }

  /** Whether anything waits to be written. */
  get pending(): boolean {
    return this.minutes.size > 0 || this.tops.size > 0 || this.blocked.size > 0 || this.over.size > 0;
  }

  /** Writes everything pending; concurrent calls share one flush. Never rejects. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => (this.pending ? this.flush() : undefined));
    if (!this.pending) return Promise.resolve();
    const minutes = this.minutes;
    const tops = this.tops;
    const blocked = this.blocked;
    const over = this.over;
    this.minutes = new Map();
    this.tops = new Map();
    this.blocked = new Map();
    this.over = new Map();
    const { store, prefix, retentionMs, keep } = this.o;
    const writes: Promise<unknown>[] = [];
    for (const [minute, fields] of minutes) {
      // The key lives for the retention counted from its own minute, whenever it is written.
      const ttl = minute * 60_000 + 60_000 + retentionMs - this.now();
      if (ttl > 0) writes.push(store.counterAdd(keys.minute(prefix, minute), Object.fromEntries(fields), ttl).then(undefined, (err: unknown) => this.restoreMinute(minute, fields, err)));
    }
    for (const t of tops.values()) {
      const ttl = t.hour * 3_600_000 + 3_600_000 + retentionMs - this.now();
      if (ttl > 0) writes.push(store.rankAdd(keys.top(prefix, t.kind, t.hour), Object.fromEntries(t.members), { keep, ttlMs: ttl }).then(undefined, (err: unknown) => this.restoreTop(t, err)));
    }
    if (blocked.size > 0) {
      const ttlMs = this.markTtl('blocked', blocked);
      writes.push(store.rankAdd(keys.blocked(prefix), Object.fromEntries(blocked), { keep, mode: 'max', ttlMs }).then(undefined, (err: unknown) => this.restoreMarks(blocked, (m, u) => this.block(m, u), err)));
    }
    if (over.size > 0) {
      const ttlMs = this.markTtl('over', over);
      writes.push(store.rankAdd(keys.over(prefix), Object.fromEntries(over), { keep, mode: 'max', ttlMs }).then(undefined, (err: unknown) => this.restoreMarks(over, (m, u) => this.overRate(m, u), err)));
    }
    this.flushing = Promise.all(writes).then(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  /** The expiry of a marks list after writing `marks`: until its latest mark ever written (at least a minute). */
  private markTtl(list: 'blocked' | 'over', marks: Map<string, number>): number {
    let last = this.horizon[list];
    for (const until of marks.values()) if (until > last) last = until;
    this.horizon[list] = last;
    return Math.max(60_000, last - this.now());
  }

  private restoreMinute(minute: number, fields: Map<string, number>, err: unknown): void {
    this.o.onError(err);
    let m = this.minutes.get(minute);
    if (!m) this.minutes.set(minute, (m = new Map()));
    for (const [k, v] of fields) m.set(k, (m.get(k) ?? 0) + v);
  }

  private restoreTop(t: { kind: TopKind; hour: number; members: Map<string, number> }, err: unknown): void {
    this.o.onError(err);
    const id = `${t.kind}:${t.hour}`;
    let cur = this.tops.get(id);
    if (!cur) this.tops.set(id, (cur = { kind: t.kind, hour: t.hour, members: new Map() }));
    for (const [member, n] of t.members) cur.members.set(member, (cur.members.get(member) ?? 0) + n);
    // The batch and what came since, merged: bounded as any list is.
    if (cur.members.size >= this.o.keep * 2) cur.members = this.largest(cur.members);
  }

  private restoreMarks(marks: Map<string, number>, mark: (member: string, until: number) => void, err: unknown): void {
    this.o.onError(err);
    for (const [member, until] of marks) mark(member, until);
  }
}
