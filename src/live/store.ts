/**
 * The live store: policies, groups and pools kept in the store beside the configuration file (edited
 * with `themis policy|group|pool …`), read and written here, each change recorded in an audit log.
 * @module
 */
import { hostname, userInfo } from 'node:os';
import type { PolicyInput } from '../kernel/kernel.ts';
import type { PoolDefinition, Selector } from '../kernel/policy.ts';
import type { Store } from '../store/store.ts';

/** What can live in the store. */
export type LiveKind = 'policy' | 'group' | 'pool';

/** The live items, by name. */
export interface LiveItems {
  /** Policies (with their plugin fields). */
  policies: Record<string, PolicyInput>;
  /** Groups: members. */
  groups: Record<string, Selector[]>;
  /** Pools. */
  pools: Record<string, PoolDefinition>;
}

/** One change, as the audit log records it. */
export interface AuditEntry {
  /** Sequence number (increasing). */
  seq: number;
  /** When, ISO 8601. */
  at: string;
  /** Who: `user@host`. */
  who: string;
  /** The command line. */
  command: string;
  /** What changed. */
  kind: LiveKind;
  /** Its name. */
  name: string;
  /** Before (null: it did not exist live). */
  before: unknown;
  /** After (null: deleted). */
  after: unknown;
}

/** Store keys of the live items and of the audit log (under the store's key prefix). */
export const LIVE_KEYS = {
  item: (kind: LiveKind, name: string) => `live:${kind}:${name}`,
  prefix: (kind: LiveKind) => `live:${kind}:`,
  auditSeq: 'live:audit-seq',
  audit: (seq: number) => `live:audit:${seq}`,
};

/** Which field of {@link LiveItems} holds each kind. */
export const LIVE_FIELD: Readonly<Record<LiveKind, keyof LiveItems>> = { policy: 'policies', group: 'groups', pool: 'pools' };

/** Reads every live item from the store. */
export async function readLive(store: Store): Promise<LiveItems> {
  const out: LiveItems = { policies: {}, groups: {}, pools: {} };
  for (const kind of ['policy', 'group', 'pool'] as const) {
    const prefix = LIVE_KEYS.prefix(kind);
    for await (const key of store.scanKeys(prefix)) {
      const text = await store.get(key);
      if (text === undefined) continue;
      try {
        (out[LIVE_FIELD[kind]] as Record<string, unknown>)[key.slice(prefix.length)] = JSON.parse(text);
      } catch {
        // A value nobody could have written through the command: skipped, the others still apply.
      }
    }
  }
  return out;
}

/** Whether there is anything live. */
export function hasLive(live: LiveItems): boolean {
  return Object.keys(live.policies).length + Object.keys(live.groups).length + Object.keys(live.pools).length > 0;
}

/**
 * How many audit entries are kept: the newest ones. Every administrator's change writes one, for the
 * life of the store: without a bound the log (keys without expiry) would grow for ever.
 */
export const LIVE_AUDIT_KEEP = 10_000;

/** Writes (or, with `value` null, deletes) one live item and records the change; resolves with the audit entry. */
export async function writeLive(store: Store, kind: LiveKind, name: string, value: unknown, command: string): Promise<AuditEntry> {
  const key = LIVE_KEYS.item(kind, name);
  const text = await store.get(key);
  const before = text === undefined ? null : (JSON.parse(text) as unknown);
  if (value === null) await store.delete(key);
  else await store.set(key, JSON.stringify(value));
  const seq = await store.increment(LIVE_KEYS.auditSeq, 1);
  let who: string;
  try {
    who = `${userInfo().username}@${hostname()}`;
  } catch {
    who = `?@${hostname()}`;
  }
  const entry: AuditEntry = { seq, at: new Date().toISOString(), who, command, kind, name, before, after: value };
  await store.set(LIVE_KEYS.audit(seq), JSON.stringify(entry));
  // The entry that falls out of the window goes (a concurrent writer may delete the same one: harmless).
  if (seq > LIVE_AUDIT_KEEP) await store.delete(LIVE_KEYS.audit(seq - LIVE_AUDIT_KEEP));
  return entry;
}

/** The last `limit` audit entries, newest first (optionally only those about `name`). */
export async function readAudit(store: Store, limit: number, name?: string): Promise<AuditEntry[]> {
  const last = Number((await store.get(LIVE_KEYS.auditSeq)) ?? 0);
  const out: AuditEntry[] = [];
  for (let seq = last; seq > Math.max(0, last - LIVE_AUDIT_KEEP) && out.length < limit; seq--) {
    const text = await store.get(LIVE_KEYS.audit(seq));
    if (text === undefined) continue;
    const e = JSON.parse(text) as AuditEntry;
    if (name === undefined || e.name === name) out.push(e);
  }
  return out;
}
