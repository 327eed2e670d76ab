/**
 * The configurations the evaluation tries, and loading the plugins they name.
 * @module
 */
import type { PluginDefinition } from 'themis';
import reference from './reference.ts';
import type { DetectorSpec } from './run-plugin.ts';

/** Timeframes of every configuration and of the fixed-limit baseline, minutes. */
export const TIMEFRAMES = [1, 5, 10];

/** No floor: the learned bound alone decides. */
const NO_FLOORS = 0;

/**
 * The real plugin's configurations: its defaults (EWMA k=5, recipients capped at 10 per message,
 * 1/5/10 minutes, floors 15/30/50), the same in shadow mode (which must flag exactly what its acting
 * twin flags and change no verdict), the robust estimator, no cap, no floors, and the recommended
 * configuration (a 60-minute timeframe and factor 1.5; also with 240 minutes). Every one uses
 * `action: 'tag'` (a header; the message goes through) so the traffic stays the same for all.
 */
export function predictConfigs(): DetectorSpec[] {
  const base = { by: 'saslUser', timeframes: TIMEFRAMES, action: 'tag' };
  const c = (id: string, label: string, extra: Record<string, unknown>, twinOf?: string): DetectorSpec => ({ id, label, source: 'predict', policy: { ...base, ...extra }, ...(twinOf ? { twinOf } : {}) });
  return [
    c('defaults', 'predict defaults (ewma k=5, cap 10, 1/5/10)', {}),
    c('defaults-shadow', 'predict defaults, shadow', { shadow: true }, 'defaults'),
    c('robust', 'defaults with the robust estimator', { estimator: 'robust' }),
    c('uncapped', 'defaults, recipients not capped per message', { maxPerMessage: 0 }),
    c('nofloor', 'defaults, no floors', { floor: NO_FLOORS }),
    c('recommended', 'recommended: defaults + 60 min, factor 1.5', { timeframes: [...TIMEFRAMES, 60], factor: 1.5 }),
    c('recommended-robust', 'recommended, robust estimator', { timeframes: [...TIMEFRAMES, 60], factor: 1.5, estimator: 'robust' }),
    c('recommended-240', 'recommended + 240 min (floor 150)', { timeframes: [...TIMEFRAMES, 60, 240], factor: 1.5 }),
  ];
}

/**
 * Exploratory configurations (`--extra`): counting messages instead of recipients; k and factor around
 * the recommended; and two policies on one subject (messages over 1/5/10 minutes, capped recipients over
 * 60/240): on 600 senders × 10 days it detected everything but flagged 2.7 % of senders a day.
 */
export function extraConfigs(): DetectorSpec[] {
  const c = (id: string, label: string, policy: Record<string, unknown>): DetectorSpec => ({ id, label, source: 'predict', policy: { by: 'saslUser', action: 'tag', ...policy } });
  return [
    c('messages', 'count messages (floors 5/10/15/30), 1/5/10/60', { count: 'messages', timeframes: [...TIMEFRAMES, 60], floor: { 1: 5, 5: 10, 10: 15, 60: 30 } }),
    c('recommended-f2', 'recommended with factor 2', { timeframes: [...TIMEFRAMES, 60], factor: 2 }),
    c('recommended-k4', 'recommended with k=4', { timeframes: [...TIMEFRAMES, 60], factor: 1.5, k: 4 }),
    { id: 'combo2', label: 'messages 1/5/10 (5/10/15) + capped recipients 60/240', source: 'predict', policy: [{ by: 'saslUser', action: 'tag', count: 'messages', timeframes: TIMEFRAMES, floor: { 1: 5, 5: 10, 10: 15 } }, { by: 'saslUser', action: 'tag', timeframes: [60, 240], factor: 1.5 }] },
  ];
}

/** The bench's own reference detector (EWMA per message), as an extra row. */
export function referenceConfigs(): DetectorSpec[] {
  return [{ id: 'reference-k4', label: 'reference EWMA k=4 (bench)', source: 'reference', policy: { timeframes: TIMEFRAMES, k: 4 } }];
}

/** The plugin a configuration runs: the real one by package name, or the bench's reference. */
export async function loadPlugin(source: DetectorSpec['source']): Promise<PluginDefinition<any, any>> {
  if (source === 'reference') return reference;
  const mod = await import('themis-plugin-predict');
  return mod.default as PluginDefinition<any, any>;
}
