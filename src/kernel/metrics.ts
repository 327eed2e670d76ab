/**
 * Metrics that outlive a kernel: runtimes built by a reload share one registry, so a metric is
 * taken from it when it is already there.
 * @module
 */
import type { Registry } from 'prom-client';

type MetricClass<M> = new (config: any) => M;

/**
 * The registry's metric of that name if it is of the same kind, else a new one: kernels built by a
 * reload share the registry, and a counter must keep counting across them.
 */
export function sharedMetric<M>(registry: Registry, kind: MetricClass<M>, config: { name: string; help: string; labelNames?: readonly string[]; [k: string]: unknown }): M {
  const existing = registry.getSingleMetric(config.name);
  if (existing instanceof kind) return existing as M;
  if (existing) registry.removeSingleMetric(config.name);
  return new kind({ ...config, registers: [registry] });
}
