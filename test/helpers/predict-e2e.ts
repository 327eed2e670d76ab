// What the predict end-to-end tests behind Postfix and behind Sendmail share: the login, its correspondents
// and its networks; its history, learned the way a pool shares it — the real predict plugin, in a kernel of
// its own (createTestKernel) on a clock set in the past, writes the login's profile into the Redis a daemon
// then reads (signals need 10 active hours, counted once per clock hour: the part an end-to-end test cannot
// wait for); and the daemon's JSON log, read back.
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisStore, type PolicyInput } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import predict, { predictField, profileKey } from 'themis-plugin-predict';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** The SASL login of the tests, and its password. */
export const LOGIN = 'alice@example.test';
export const PASSWORD = 'correct horse battery';
/** The login's correspondents: partners and customers outside, two colleagues inside (internalDomains). */
export const CORRESPONDENTS = ['bob@partner.example', 'carol@partner.example', 'dave@customer.example', 'erin@customer.example', 'frank@supplier.example', 'grace@supplier.example', 'heidi@example.test', 'ivan@example.test'];
/** The login's usual mail client. */
export const THUNDERBIRD = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0';
/** Where the login sends from (Linux routes all of 127/8 to lo): its office network, and a network it never used. */
export const USUAL_ADDRESS = '127.0.0.7';
export const NEW_ADDRESS = '127.0.1.9';
/** Recipients of each test message, all usual correspondents (why 4: predict-postfix.test.ts's describe block). */
export const RECIPIENTS = CORRESPONDENTS.slice(0, 4);

/**
 * The plugin README's recommendation with signals ("two policies on the same subject", `maxPerMessage: 10`
 * and `signals: {}` — the defaults: sensitivity 2.5, tolerance 3.5, learning 10 active hours — on both),
 * out of shadow mode, with `action` instead of the jail; `withCeiling` adds the README's fixed ratelimit
 * ceiling for everybody (the daemon's configuration; the history is learned without it).
 */
export function recommendedPolicies(action: 'tempfail' | 'hold', withCeiling = false) {
  return [
    { name: 'submission-new', match: { direction: 'outbound' as const }, predict: { by: 'saslUser', count: 'newRecipients' as const, internalDomains: ['example.test'], timeframes: [1, 5, 10, 60], factor: 2, maxPerMessage: 10, action, signals: {} } },
    { name: 'submission', match: { direction: 'outbound' as const }, ...(withCeiling ? { ratelimit: { windows: '500/1h', by: 'saslUser' } } : {}), predict: { by: 'saslUser', timeframes: [1, 5, 10, 60], factor: 2.5, action, signals: {} } },
  ];
}

/** A line of the daemon's JSON log, as far as the tests read it. */
export interface LogLine {
  msg?: string;
  outcome?: string;
  winner?: { plugin: string; reason: string };
}

/** The JSON lines of a daemon's output (other lines skipped). */
export function logLines(output: string): LogLine[] {
  return output.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

/** The login, its correspondents and its usual client: what {@link learnPredictHistory} writes. */
export interface PredictHistory {
  redisUrl: string;
  /** The policies with a `predict` field, as the daemon will run them (without a ratelimit ceiling). */
  policies: PolicyInput[];
  login: string;
  correspondents: readonly string[];
  /** The `User-Agent` of every history message. */
  userAgent: string;
  /** The client address of every history message (its /24 is the usual network). */
  address: string;
}

/**
 * Two weeks of history: every weekday of the 14 days before today (UTC), 09:00–14:00, two messages an hour
 * (at :10 and :40) from `address` with `userAgent`, each to 2 or 3 of the correspondents. 10 weekdays × 5
 * hours: 50 active hours, all on one network with one mail client. Returns the active hours learned.
 */
export async function learnPredictHistory(h: PredictHistory): Promise<number> {
  const store = new RedisStore({ url: h.redisUrl }, { testClock: true });
  const clock = { now: 0 };
  const k = await createTestKernel({ plugins: [{ plugin: predict, options: { now: () => clock.now } }], policies: h.policies, store });
  const today = Math.floor(Date.now() / DAY) * DAY;
  let hours = 0;
  let n = 0;
  try {
    for (let day = today - 14 * DAY; day < today; day += DAY) {
      const weekday = new Date(day).getUTCDay();
      if (weekday === 0 || weekday === 6) continue;
      for (let hour = 9; hour < 14; hour++, hours++) {
        for (const minute of [10, 40]) {
          clock.now = day + hour * HOUR + minute * 60_000;
          const rcpt = Array.from({ length: 2 + (n % 2) }, (_, j) => h.correspondents[(n + 3 * j) % h.correspondents.length]);
          n++;
          const r = await k.message({ from: h.login, auth: h.login, rcpt, client: { address: h.address, hostname: 'desktop.example.test' }, headers: [['From', `Alice <${h.login}>`], ['To', rcpt.join(', ')], ['Subject', `note ${n}`], ['User-Agent', h.userAgent]] });
          assert.equal(r.decision.action, 'accept', `history message ${n}: ${JSON.stringify(r.trace?.entries)}`);
        }
      }
    }
  } finally {
    await k.close();
    await store.close();
  }
  return hours;
}

/**
 * The login's learned client networks, as the profile's hash keeps them (`total,distinct;network,count,hour,first;…`).
 * The traits ride on the profile of the first policy with signals in the kernel's order (priority, then
 * name): every policy's is read, under the Redis store's default key prefix (themis:).
 */
export async function learnedNetworks(redisUrl: string, policies: PolicyInput[], login: string): Promise<string | null> {
  const keys = policies.map((p) => 'themis:' + profileKey('predict:', predictField.parse(p.predict), login));
  const raw = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await raw.connect();
    const found = (await Promise.all(keys.map((key) => raw.hget(key, 'tn')))).filter((x) => x !== null);
    assert.ok(found.length <= 1, `the traits are on one profile: ${JSON.stringify(found)}`);
    return found[0] ?? null;
  } finally {
    raw.disconnect();
  }
}
