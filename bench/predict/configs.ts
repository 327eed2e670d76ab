/**
 * The configurations the evaluation tries, and loading the plugins they name.
 * @module
 */
import type { PluginDefinition } from 'themis-milter';
import reference from './reference.ts';
import type { DetectorSpec } from './run-plugin.ts';

/** Timeframes of every configuration and of the fixed-limit baseline, minutes. */
export const TIMEFRAMES = [1, 5, 10];

/** No floor: the learned bound alone decides. */
const NO_FLOORS = 0;

/** The company's own domain in the simulation: colleagues are `user<i>@example.com`. */
const INTERNAL = ['example.com'];

/** Timeframes of the new-recipients configurations and of the fixed new-recipient baseline. */
export const NEW_RECIPIENT_TIMEFRAMES = [...TIMEFRAMES, 60];
/** The plugin's default recipient memory (`recipientMemory`), which the fixed new-recipient baseline mirrors. */
export const NEW_RECIPIENT_MEMORY = 1000;

/** The new-recipients field of the recommended configuration. */
const NEW_RECIPIENTS = { count: 'newRecipients', internalDomains: INTERNAL, timeframes: NEW_RECIPIENT_TIMEFRAMES, factor: 2 };
/** New internal recipients (colleagues the login never wrote to), counted on their own: issue 23's internal spear phishing. */
const NEW_INTERNAL = { count: 'newInternalRecipients', internalDomains: INTERNAL, timeframes: NEW_RECIPIENT_TIMEFRAMES, factor: 2 };
/** New outside recipients over longer horizons, judged against the login's own 4-hour and daily figures rather than fixed minimums. */
const NEW_RECIPIENTS_DAY = { count: 'newRecipients', internalDomains: INTERNAL, timeframes: [240, 1440], factor: 2, floor: { 240: 8, 1440: 12 }, minHistory: 3 };
/** Recipients (colleagues too) the login has not written to among its last `n` distinct ones, capped at 10 a message, over 1 and 4 hours. */
const stale = (n: number) => ({ count: 'newRecipients', knownWithin: n, timeframes: [60, 240], maxPerMessage: 10, factor: 2, floor: { 60: 20, 240: 30 } });
/** `signals-rd-cap10` (the recommendation with signals) and a third policy on the same subject, `field`. */
const withStale = (id: string, label: string, field: object): DetectorSpec => ({ id, label, source: 'predict', policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 10 }, RATE_BACKSTOP, field].map((f) => ({ by: 'saslUser', action: 'tag', signals: { ...SIGNALS, replyTo: true, displayName: true }, ...f })) });
/** The rate field of the recommended configuration: a backstop (for spam to known addresses, and slow spam). */
const RATE_BACKSTOP = { timeframes: [...TIMEFRAMES, 60], factor: 2.5 };

/** The simulated company's webmail server (traits.ts): every webmail user's mail comes from it, so it is no login's own network. */
const WEBMAIL = '198.18.101.0/24';
/**
 * The `signals` of `recommended+signals`: tuned on seed 1 only (`sensitivity` 1–4 × `tolerance` 2–5, with and
 * without the webmail server trusted; plugins/predict/README.md, "Measured").
 */
const SIGNALS = { sensitivity: 2.5, tolerance: 3.5, trustedNetworks: [WEBMAIL], replyTo: false, displayName: false };

/**
 * The real plugin's configurations: its defaults (recipients, EWMA k=5, capped at 10 per message,
 * 1/5/10 minutes, floors 15/30/50); recipients over 1/5/10/60 minutes with factor 1.5 (the best rate
 * configuration); new recipients (outside the company's domain, and every recipient); and the
 * recommended configuration — new recipients and a recipient-rate backstop, as two policies on the
 * same subject — also in shadow mode (which must flag exactly what its acting twin flags and change no
 * verdict). Every one uses `action: 'tag'` (a header; the message goes through) so the traffic stays
 * the same for all.
 */
export function predictConfigs(): DetectorSpec[] {
  const base = { by: 'saslUser', timeframes: TIMEFRAMES, action: 'tag' };
  const c = (id: string, label: string, extra: Record<string, unknown>): DetectorSpec => ({ id, label, source: 'predict', policy: { ...base, ...extra } });
  const both = (shadow: boolean) => [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ ...base, ...f, ...(shadow ? { shadow } : {}) }));
  return [
    c('defaults', 'predict defaults (recipients, ewma k=5, cap 10, 1/5/10)', {}),
    c('rate-60', 'recipients + 60 min, factor 1.5', { timeframes: [...TIMEFRAMES, 60], factor: 1.5 }),
    c('new-recipients', 'new recipients (outside example.com) 1/5/10/60, factor 2', NEW_RECIPIENTS),
    c('new-recipients-all', 'new recipients, every domain counted', { ...NEW_RECIPIENTS, internalDomains: [] }),
    { id: 'recommended', label: 'recommended: new recipients (factor 2) + recipients (factor 2.5)', source: 'predict', policy: both(false) },
    { id: 'recommended-shadow', label: 'recommended, shadow', source: 'predict', policy: both(true), twinOf: 'recommended' },
  ];
}

/**
 * Exploratory configurations (`--extra`): the rate estimators and settings measured before new
 * recipients were counted (robust, no cap, no floors, 240 minutes, counting messages, k and factor
 * around the best rate row, two rate policies), new recipients with factor 1.5, and the recommended
 * configuration with issue 23's signals (networks and mail clients), with and without the webmail trusted,
 * and with the later traits (Reply-To, display name, SASL/TLS: `signals-all`; without SASL/TLS: `signals-rd`;
 * all three with tolerance 6: `signals-all-t6`), and the later rows each commented where it is defined
 * (young values, caps per message, recipients not written to lately).
 */
export function extraConfigs(): DetectorSpec[] {
  const c = (id: string, label: string, policy: Record<string, unknown>): DetectorSpec => ({ id, label, source: 'predict', policy: { by: 'saslUser', action: 'tag', timeframes: TIMEFRAMES, ...policy } });
  return [
    c('robust', 'defaults with the robust estimator', { estimator: 'robust' }),
    c('uncapped', 'defaults, recipients not capped per message', { maxPerMessage: 0 }),
    c('nofloor', 'defaults, no floors', { floor: NO_FLOORS }),
    c('rate-60-robust', 'recipients + 60 min, factor 1.5, robust', { timeframes: [...TIMEFRAMES, 60], factor: 1.5, estimator: 'robust' }),
    c('rate-240', 'recipients + 60 + 240 min (floor 150), factor 1.5', { timeframes: [...TIMEFRAMES, 60, 240], factor: 1.5 }),
    c('messages', 'count messages (floors 5/10/15/30), 1/5/10/60', { count: 'messages', timeframes: [...TIMEFRAMES, 60], floor: { 1: 5, 5: 10, 10: 15, 60: 30 } }),
    c('rate-60-f2', 'recipients + 60 min, factor 2', { timeframes: [...TIMEFRAMES, 60], factor: 2 }),
    c('rate-60-k4', 'recipients + 60 min, factor 1.5, k=4', { timeframes: [...TIMEFRAMES, 60], factor: 1.5, k: 4 }),
    c('new-recipients-f1.5', 'new recipients, factor 1.5', { ...NEW_RECIPIENTS, factor: 1.5 }),
    // Issue 23's first signals: the login's client networks and mail clients divide both policies' bounds when unusual.
    // In --extra for now, so that the default run (and --new-per-kind 0) prints exactly what it printed before.
    { id: 'recommended+signals', label: 'recommended + signals (network, mail client; sensitivity 2.5, tolerance 3.5)', source: 'predict', policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: SIGNALS })) },
    // recommended+signals without the webmail server trusted: its users' mail from someone else's computer looks like a new network and a new client.
    { id: 'signals-untrusted', label: 'recommended + signals, webmail not trusted', source: 'predict', policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, trustedNetworks: [] } })) },
    // recommended+signals with the three later traits scored too: the Reply-To domain, the From display name, the SASL/TLS fingerprint.
    { id: 'signals-all', label: 'recommended + signals + Reply-To, display name, SASL/TLS', source: 'predict', policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true, tls: true } })) },
    // signals-all without the SASL/TLS fingerprint (it mostly repeats the mail client), and signals-all with a higher tolerance.
    { id: 'signals-rd', label: 'recommended + signals + Reply-To, display name', source: 'predict', policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    // signals-rd in shadow mode: the same flags as signals-rd, and never a changed verdict (issue 23: shadow with signals).
    { id: 'signals-rd-shadow', label: 'signals-rd, shadow', source: 'predict', policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', shadow: true, ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })), twinOf: 'signals-rd' },
    { id: 'signals-all-t6', label: 'signals-all, tolerance 6', source: 'predict', policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, tolerance: 6, replyTo: true, displayName: true, tls: true } })) },
    // signals-rd with the hours of the week scored too (the simulation's server keeps UTC), then with new internal recipients
    // counted by a third policy on the same subject (spear phishing of colleagues), then with the SASL/TLS fingerprint (one device with the mail client).
    { id: 'signals-rdh', label: 'signals-rd + hours of the week', source: 'predict', options: { timeZone: 'UTC' }, policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true, hours: true } })) },
    { id: 'signals-rdh-int', label: 'signals-rdh + new internal recipients (1/5/10/60, factor 2)', source: 'predict', options: { timeZone: 'UTC' }, policy: [NEW_RECIPIENTS, NEW_INTERNAL, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true, hours: true } })) },
    { id: 'signals-full', label: 'signals-rdh-int + SASL/TLS (one device with the mail client)', source: 'predict', options: { timeZone: 'UTC' }, policy: [NEW_RECIPIENTS, NEW_INTERNAL, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true, hours: true, tls: true } })) },
    // signals-rdh with new outside recipients also judged over 4 hours and a day against the login's own figures
    // (floors 8 and 12 instead of the defaults' 24 and 100; 3 active buckets of history): the low-and-slow day.
    { id: 'signals-day', label: 'signals-rdh + new recipients over 4 h and a day (floors 8/12, 3 buckets)', source: 'predict', options: { timeZone: 'UTC' }, policy: [NEW_RECIPIENTS, RATE_BACKSTOP, NEW_RECIPIENTS_DAY].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true, hours: true } })) },
    // The day policy stricter (floors 10 and 20, 5 buckets of history), and without signals of its own, factor 3.
    { id: 'signals-day-strict', label: 'signals-rd + new recipients over 4 h and a day (floors 10/20, 5 buckets)', source: 'predict', policy: [NEW_RECIPIENTS, RATE_BACKSTOP, { ...NEW_RECIPIENTS_DAY, floor: { 240: 10, 1440: 20 }, minHistory: 5 }].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    { id: 'signals-day-plain', label: 'signals-rd + new recipients over 4 h and a day (factor 3, floors 10/20, no signals)', source: 'predict', policy: [...[NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })), { ...NEW_RECIPIENTS_DAY, factor: 3, floor: { 240: 10, 1440: 20 } }].map((f) => ({ by: 'saslUser', action: 'tag', ...f })) },
    // signals-rd with new recipients capped at 20 per message (a newsletter is one message; a spammer sends many), and with a lower tolerance too.
    { id: 'signals-rd-cap20', label: 'signals-rd, new recipients capped at 20 per message', source: 'predict', policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 20 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    { id: 'signals-rd-cap10', label: 'signals-rd, new recipients capped at 10 per message', source: 'predict', policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 10 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    // The recommendation with signals in shadow mode: the same flags as signals-rd-cap10, and never a changed verdict.
    { id: 'signals-rd-cap10-shadow', label: 'signals-rd-cap10, shadow', source: 'predict', policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 10 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', shadow: true, ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })), twinOf: 'signals-rd-cap10' },
    { id: 'signals-rd-cap10-t3.25', label: 'signals-rd-cap10, tolerance 3.25', source: 'predict', policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 10 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, tolerance: 3.25, replyTo: true, displayName: true } })) },
    { id: 'signals-rd-cap10-t3-y24', label: 'signals-rd-cap10, tolerance 3, youngHours 24', source: 'predict', options: { youngHours: 24 }, policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 10 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, tolerance: 3, replyTo: true, displayName: true } })) },
    { id: 'signals-rd-cap5-y24', label: 'signals-rd, new recipients capped at 5 per message, youngHours 24', source: 'predict', options: { youngHours: 24 }, policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 5 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    { id: 'signals-rd-cap10-y24', label: 'signals-rd-cap10, youngHours 24', source: 'predict', options: { youngHours: 24 }, policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 10 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    // The recommendation with signals, and a third policy: recipients, colleagues included, not among the login's last
    // N distinct ones (knownWithin), capped at 10 a message, over an hour and 4 hours (floors 20/30): a thief who mails
    // the whole address book, or many colleagues, reaches correspondents the owner has not written to lately. Then over
    // the hour only (most of the 4-hour flags were false positives), with N = 20, floor 20 or 25, factor 2 or 2.5.
    ...[10, 20, 40].map((n) => withStale(`signals-rd-cap10-stale${n}`, `signals-rd-cap10 + recipients not among the last ${n}, 60/240 min (floors 20/30, factor 2)`, stale(n))),
    withStale('signals-rd-cap10-stale20-60', 'signals-rd-cap10 + recipients not among the last 20, 60 min (floor 20, factor 2)', { ...stale(20), timeframes: [60], floor: { 60: 20 } }),
    withStale('signals-rd-cap10-stale20-60-fl25', 'signals-rd-cap10 + recipients not among the last 20, 60 min (floor 25, factor 2)', { ...stale(20), timeframes: [60], floor: { 60: 25 } }),
    withStale('signals-rd-cap10-stale20-60-x2.5-t2', 'stale20-60-x2.5, tolerance 2, sensitivity 1.5', { ...stale(20), timeframes: [60], floor: { 60: 20 }, factor: 2.5, signals: { ...SIGNALS, replyTo: true, displayName: true, tolerance: 2, sensitivity: 1.5 } }),
    withStale('signals-rd-cap10-stale20-60-x3-t1.5', 'stale20-60, factor 3, floor 25, tolerance 1.5, sensitivity 1.5', { ...stale(20), timeframes: [60], floor: { 60: 25 }, factor: 3, signals: { ...SIGNALS, replyTo: true, displayName: true, tolerance: 1.5, sensitivity: 1.5 } }),
    withStale('signals-rd-cap10-stale20-60-x2.5', 'signals-rd-cap10 + recipients not among the last 20, 60 min (floor 20, factor 2.5)', { ...stale(20), timeframes: [60], floor: { 60: 20 }, factor: 2.5 }),
    // signals-rd with the plugin's youngHours at 0 (a value is new only in the hour it appeared) and at 24 instead of 6: what keeping a thief's values new buys and costs.
    { id: 'signals-rd-y0', label: 'signals-rd, youngHours 0', source: 'predict', options: { youngHours: 0 }, policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    { id: 'signals-rd-y24', label: 'signals-rd, youngHours 24', source: 'predict', options: { youngHours: 24 }, policy: [NEW_RECIPIENTS, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, replyTo: true, displayName: true } })) },
    { id: 'signals-rd-cap20-t3', label: 'signals-rd-cap20, tolerance 3', source: 'predict', policy: [{ ...NEW_RECIPIENTS, maxPerMessage: 20 }, RATE_BACKSTOP].map((f) => ({ by: 'saslUser', action: 'tag', ...f, signals: { ...SIGNALS, tolerance: 3, replyTo: true, displayName: true } })) },
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
