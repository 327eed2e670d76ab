/**
 * The kernel's metrics about plugins: time and calls per plugin hook, hook failures, and the
 * `metrics` factory each plugin gets in its setup context.
 * @module
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { sharedMetric } from './metrics.ts';
import { STAGE_HOOKS, type MetricsFactory, type StageHookName } from './plugin.ts';
import type { LoadedPlugin } from './plugin-setup.ts';

/**
 * Each stage hook's slot in {@link LoadedPlugin.timing}: seconds at `2 * index`, calls at `2 * index + 1`.
 * The dispatcher writes there on every hook call; {@link HookTiming} reads the same layout when scraped.
 */
export const STAGE_INDEX = Object.fromEntries(STAGE_HOOKS.map((h, i) => [h, i])) as Record<StageHookName, number>;

/**
 * The plugins' hook timing as two counters, read from plain accumulators at scrape time. One per
 * registry: kernels that replace each other on reload share it. A retired kernel's plugins are let go
 * at once — what they counted since the last scrape is kept by plugin name and reported at the next
 * one — so nothing counted is lost, and a daemon reloaded a thousand times and never scraped keeps
 * no retired plugin (nor the state its hooks close over) alive.
 */
class HookTiming {
  /** The serving plugins, with what of their accumulators was reported so far. */
  private readonly live = new Map<LoadedPlugin, Float64Array>();
  /** What retired plugins counted that no scrape reported yet, by plugin name (same layout as {@link LoadedPlugin.timing}). */
  private readonly owed = new Map<string, Float64Array>();

  constructor(registry: Registry) {
    const self = this;
    sharedMetric(registry, Counter, { name: 'themis_hook_seconds_total', help: 'Time spent in plugin hooks, by plugin and hook', labelNames: ['plugin', 'hook'] as const, collect(this: Counter<'plugin' | 'hook'>) { self.sync(0, this); } });
    sharedMetric(registry, Counter, { name: 'themis_hook_calls_total', help: 'Plugin hook calls, by plugin and hook', labelNames: ['plugin', 'hook'] as const, collect(this: Counter<'plugin' | 'hook'>) { self.sync(1, this); } });
  }

  add(plugins: readonly LoadedPlugin[]): void {
    for (const p of plugins) this.live.set(p, new Float64Array(p.timing.length));
  }

  /** Forgets plugins whose kernel shut down, keeping what they counted since the last scrape. */
  retire(plugins: readonly LoadedPlugin[]): void {
    for (const p of plugins) {
      const last = this.live.get(p);
      if (!last) continue;
      this.live.delete(p);
      let owed = this.owed.get(p.name);
      for (let k = 0; k < last.length; k++) {
        const delta = p.timing[k] - last[k];
        if (delta <= 0) continue;
        if (!owed) this.owed.set(p.name, (owed = new Float64Array(last.length)));
        owed[k] += delta;
      }
    }
  }

  private sync(which: 0 | 1, counter: Counter<'plugin' | 'hook'>): void {
    for (const [p, last] of this.live) {
      STAGE_HOOKS.forEach((hook, i) => {
        const k = i * 2 + which;
        const delta = p.timing[k] - last[k];
        if (delta > 0) {
          counter.inc({ plugin: p.name, hook }, delta);
          last[k] = p.timing[k];
        }
      });
    }
    for (const [name, owed] of this.owed) {
      STAGE_HOOKS.forEach((hook, i) => {
        const k = i * 2 + which;
        if (owed[k] > 0) counter.inc({ plugin: name, hook }, owed[k]);
        owed[k] = 0;
      });
      if (owed.every((v) => v === 0)) this.owed.delete(name);
    }
  }
}

const hookTimings = new WeakMap<Registry, HookTiming>();

/** The registry's hook timing, made (and its two counters registered) on first use. */
export function hookTiming(registry: Registry): HookTiming {
  let t = hookTimings.get(registry);
  if (!t) hookTimings.set(registry, (t = new HookTiming(registry)));
  return t;
}

/** The counter of hook calls answered by the plugin's onError policy (shared across reloads). */
export function hookErrorCounter(registry: Registry): Counter<'plugin' | 'hook' | 'kind'> {
  return sharedMetric(registry, Counter, { name: 'themis_hook_errors_total', help: 'Hook calls answered by the plugin onError policy', labelNames: ['plugin', 'hook', 'kind'] as const });
}

/**
 * A plugin's `ctx.metrics`: its metrics, named `themis_plugin_<name>_…` so plugins cannot collide.
 * Kernels built by reloads share the registry, so a metric asked for again is the one already there;
 * its `collect` (the function that reads the plugin's state at scrape time) is then the previous
 * kernel's. The new one replaces it through `commit`, which the kernel runs once the configuration is
 * accepted: the metric reads the serving kernel's state, and the replaced kernel's state is not kept
 * alive by the registry (a refused build commits nothing).
 */
export function metricsFactory(plugin: string, registry: Registry, commit: (() => void)[] = []): MetricsFactory {
  const prefix = `themis_plugin_${plugin.replace(/[^a-zA-Z0-9_]/g, '_')}_`;
  const make = <M>(kind: new (config: any) => M, c: { name: string; help: string; collect?: unknown }): M => {
    const metric = sharedMetric(registry, kind, { ...c, name: prefix + c.name });
    const m = metric as { collect?: unknown };
    if (m.collect !== c.collect) commit.push(() => void (m.collect = c.collect));
    return metric;
  };
  return {
    counter: (c) => make(Counter, c),
    gauge: (c) => make(Gauge, c),
    histogram: (c) => make(Histogram, c),
  };
}
