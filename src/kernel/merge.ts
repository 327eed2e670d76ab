/**
 * Verdict merging: of all verdicts given at one stage, the one from the highest-priority plugin wins;
 * ties go to the most severe. `continue` never wins over a decision: it means "no objection".
 * @module
 */
import { SEVERITY, type StageHookName, type VerdictAction } from './plugin.ts';
import type { SmtpReply } from '../milter/index.ts';

/** One plugin's verdict at one stage, as the decision trace records it. */
export interface TraceEntry {
  /** The stage. */
  stage: StageHookName;
  /** The plugin. */
  plugin: string;
  /** Its priority. */
  priority: number;
  /** What it answered. */
  action: VerdictAction;
  /** Why (the plugin's words, or the error). */
  reason?: string;
  /** The plugin's {@link Verdict.detail}, if any: for the trace and the log only. */
  detail?: string;
  /** Custom SMTP reply, if any. */
  reply?: SmtpReply;
  /** The recipient, for `rcptTo` entries. */
  recipient?: string;
  /** Error code when the verdict came from the plugin's `onError` policy. */
  error?: string;
  /** Time spent in the hook, in ms. */
  ms: number;
}

/** Index of the winning entry among `entries[from..]`, or -1 when every entry is `continue`. */
export function pickWinner(entries: readonly TraceEntry[], from = 0): number {
  let best = -1;
  for (let i = from; i < entries.length; i++) {
    const e = entries[i];
    if (e.action === 'continue') continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const b = entries[best];
    if (e.priority > b.priority || (e.priority === b.priority && SEVERITY[e.action] > SEVERITY[b.action])) best = i;
  }
  return best;
}
