/**
 * The milter stages a plugin may tap, in the order the MTA reaches them.
 * @module
 */
import { ScaffoldError } from './errors.ts';

/** Every stage hook of a Themis plugin, in milter order. */
export const STAGES = ['connect', 'helo', 'mailFrom', 'rcptTo', 'data', 'header', 'endOfHeaders', 'body', 'endOfMessage', 'abort', 'close'] as const;

/** A stage hook name. */
export type Stage = (typeof STAGES)[number];

/** The stages a new plugin taps when none are named: refuse at RCPT, tag at end of message. */
export const DEFAULT_STAGES: readonly Stage[] = ['rcptTo', 'endOfMessage'];

/**
 * The stages of a comma-separated list (`rcptTo,endOfMessage`) or an array, deduplicated and in
 * milter order. Case-insensitive, so `rcptto` and `RCPTTO` are `rcptTo`.
 * @throws ScaffoldError `THEMIS_ERR_SCAFFOLD_STAGE` for an unknown stage or an empty list.
 */
export function parseStages(list: string | readonly string[]): Stage[] {
  const given = (typeof list === 'string' ? list.split(',') : list).map((s) => s.trim()).filter(Boolean);
  if (given.length === 0) throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_STAGE', `--stages: expected at least one of ${STAGES.join(', ')}`);
  const chosen = new Set<Stage>();
  for (const name of given) {
    const stage = STAGES.find((s) => s.toLowerCase() === name.toLowerCase());
    if (!stage) throw new ScaffoldError('THEMIS_ERR_SCAFFOLD_STAGE', `--stages: ${JSON.stringify(name)} is not a stage; expected some of ${STAGES.join(', ')}`);
    chosen.add(stage);
  }
  return STAGES.filter((s) => chosen.has(s));
}
