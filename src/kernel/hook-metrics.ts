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
 * registry: kernels that replace each other on reload share it, and a retired kernel's last counts
 * are reported once more before it is forgotten, so nothing counted is lost.
 */
class HookTiming {
  private readonly live = new Map<LoadedPlugin, Float64Array>();
  /** Plugins retired since the last scrape, with the counters (0 and 1) still to report them. */
  private readonly retiring = new Map<LoadedPlugin, Set<0 | 1>>();

  constructor(registry: Registry) {
    const self = this;
    sharedMetric(registry, Counter, { name: 'themis_hook_seconds_total', help: 'Time spent in plugin hooks, by plugin and hook', labelNames: ['plugin', 'hook'] as const, collect(this: Counter<'plugin' | 'hook'>) { self.sync(0, this); } });
    sharedMetric(registry, Counter, { name: 'themis_hook_calls_total', help: 'Plugin hook calls, by plugin and hook', labelNames: ['plugin', 'hook'] as const, collect(this: Counter<'plugin' | 'hook'>) { self.sync(1, this); } });
  }

  add(plugins: readonly LoadedPlugin[]): void {
    for (const p of plugins) this.live.set(p, new Float64Array(p.timing.length));
  }

  retire(plugins: readonly LoadedPlugin[]): void {
    for (const p of plugins) if (this.live.has(p)) this.retiring.set(p, new Set([0, 1]));
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
      const pending = this.retiring.get(p);
      if (pending?.delete(which) && pending.size === 0) {
        this.retiring.delete(p);
        this.live.delete(p);
      }
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

/** A plugin's `ctx.metrics`: its metrics, named `themis_plugin_<name>_…` so plugins cannot collide. */
export function metricsFactory(plugin: string, registry: Registry): MetricsFactory {
  const prefix = `themis_plugin_${plugin.replace(/[^a-zA-Z0-9_]/g, '_')}_`;
  return {
    counter: (c) => sharedMetric(registry, Counter, { ...c, name: prefix + c.name }),
    gauge: (c) => sharedMetric(registry, Gauge, { ...c, name: prefix + c.name }),
    histogram: (c) => sharedMetric(registry, Histogram, { ...c, name: prefix + c.name }),
  };
}
