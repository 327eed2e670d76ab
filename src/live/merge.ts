/**
 * The one merge of the configuration file's policies, groups and pools with the live ones: every
 * command and every daemon sees the policies through this function, so they all see the same set.
 * @module
 */
import type { PolicyInput } from '../kernel/kernel.ts';
import type { PolicySettings } from '../kernel/policy.ts';
import type { LiveItems } from './store.ts';

/** What carries policies: a loaded configuration, kernel options, or just the two fields. */
export interface PolicySource {
  /** The policies (absent: none). */
  readonly policies?: readonly PolicyInput[];
  /** Groups, pools and outbound networks (absent: none). */
  readonly policySettings?: PolicySettings;
}

/** `T` with the policies and settings as they apply: both always present. */
export type WithLive<T extends PolicySource> = Omit<T, 'policies' | 'policySettings'> & {
  /** The file's policies that no live policy replaces, then the live ones (priorities order them later). */
  policies: PolicyInput[];
  /** The file's settings with the live groups and pools over them. */
  policySettings: PolicySettings;
};

/**
 * `base` (the file's side) with the live items merged in: a live policy, group or pool replaces the
 * file's one of the same name, the others are added after the file's. A live policy is kept whole,
 * `enabled: false` included: disabling is an override, not a removal. Without live items (`live`
 * undefined), `base` is returned with its fields filled in but nothing added, so a daemon without
 * live items serves exactly its file. `base` is never modified.
 */
export function mergeLive<T extends PolicySource>(base: T, live: LiveItems | undefined): WithLive<T> {
  if (live === undefined) return { ...base, policies: [...(base.policies ?? [])], policySettings: base.policySettings ?? {} };
  const names = new Set(Object.keys(live.policies));
  return {
    ...base,
    policies: [...(base.policies ?? []).filter((p) => !names.has(p.name)), ...Object.values(live.policies)],
    policySettings: { ...base.policySettings, groups: { ...base.policySettings?.groups, ...live.groups }, pools: { ...base.policySettings?.pools, ...live.pools } },
  };
}

/** Where a policy, group or pool of the merged set comes from: `live` when the store holds it, else `file`. */
export function liveOrigin(live: LiveItems | undefined, kind: keyof LiveItems, name: string): 'file' | 'live' {
  return live !== undefined && Object.hasOwn(live[kind], name) ? 'live' : 'file';
}
