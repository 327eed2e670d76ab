// A login's predict history, learned the way a pool shares it: the real predict plugin, in a kernel of its
// own (createTestKernel) on a clock set in the past, writes the login's profile into the Redis a daemon then
// reads. Signals need 10 active hours, counted once per clock hour: the part an end-to-end test cannot wait
// for. Used by the predict end-to-end tests behind Postfix and behind Sendmail.
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisStore, type PolicyInput } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import predict, { predictField, profileKey } from 'themis-plugin-predict';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

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
