// The predict plugin through the kernel harness with a simulated clock (MemoryStore testClock): it
// learns a sender's normal rate, flags a burst with words that explain it, and acts as configured —
// tag, tempfail, hold, jail (ratelimit's penalty block) — while shadow mode never changes a verdict.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, RedisStore, type PolicyInput, type Store } from 'themis-milter';
import { redisAvailable, startRedis } from '../../../test/helpers/redis.ts';
import { createTestKernel, type TestResult } from 'themis-milter/testing';
import ratelimit from 'themis-plugin-ratelimit';
import predict, { type PredictNote } from '../src/index.ts';
import { predictCommand } from '../src/commands.ts';
import { noteObserver } from './kernel-helpers.ts';

const START = Date.UTC(2026, 10, 2, 8, 0, 0);
const MINUTE = 60_000;

/** A kernel with the predict plugin on a simulated clock. */
async function setup(predictField: object, extra: { ratelimit?: object; store?: Store; clock?: { now: number } } = {}) {
  const clock = extra.clock ?? { now: START };
  const store = extra.store ?? new MemoryStore({ testClock: true });
  const policy: PolicyInput = { name: 'submission', predict: predictField, ...(extra.ratelimit ? { ratelimit: extra.ratelimit } : {}) };
  const notes: (PredictNote | undefined)[] = [];
  const observer = noteObserver(notes);
  const t = await createTestKernel({ plugins: [{ plugin: predict, options: { now: () => clock.now } }, ...(extra.ratelimit ? [ratelimit] : []), observer as never], policies: [policy], store });
  const send = (login: string, recipients: number): Promise<TestResult> => t.message({ from: login, auth: login, rcpt: Array.from({ length: recipients }, (_, i) => `r${i}@example.net`), client: { address: '192.0.2.7' } });
  /** Three hours of normal traffic: 2 recipients every 3 minutes (60 messages). */
  const learn = async (login: string) => {
    for (let i = 0; i < 60; i++) {
      clock.now += 3 * MINUTE;
      const r = await send(login, 2);
      assert.equal(r.decision.action, 'accept');
    }
  };
  /** A burst: 8 messages of 10 recipients within one minute; resolves with the results. */
  const burst = async (login: string) => {
    clock.now += 3 * MINUTE;
    const out: TestResult[] = [];
    for (let i = 0; i < 8; i++) {
      clock.now += 5_000;
      out.push(await send(login, 10));
    }
    return out;
  };
  return { t, store, clock, send, learn, burst, notes };
}

const predictReason = (r: TestResult) => r.trace!.entries.find((e) => e.plugin === 'predict' && e.reason)?.reason ?? '';

describe('predict plugin', () => {
  it('learns a sender’s normal rate and tempfails a burst, explaining it in the trace', async () => {
    const s = await setup({ action: 'tempfail' });
    await s.learn('alice@example.com');
    const results = await s.burst('alice@example.com');
    const first = results.findIndex((r) => r.decision.action === 'tempfail');
    assert.ok(first >= 0 && first <= 2, `refused from the ${first + 1}th message of the burst`);
    const refused = results[first];
    assert.equal(refused.decision.reply?.code, 451);
    assert.equal(refused.decision.reply?.text, 'Unusual sending rate for alice@example.com: try again later');
    assert.match(predictReason(refused), /^submission: alice@example\.com: \d+ recipients in \d+ min, learned normal 2 ± [\d.]+, bound \d+ → tempfail$/);
    // Another user with the same history is not affected.
    await s.learn('bob@example.com');
    assert.equal((await s.send('bob@example.com', 3)).decision.action, 'accept');
    assert.match(await s.t.kernel.registry.getSingleMetricAsString('themis_plugin_predict_decisions_total'), /policy="submission",outcome="over"\} [1-9]/);
    await s.t.close();
  });

  it('shadow mode decides and logs, and never changes a verdict', async () => {
    const s = await setup({ action: 'tempfail', shadow: true });
    await s.learn('alice@example.com');
    const results = await s.burst('alice@example.com');
    assert.deepEqual(results.map((r) => r.decision.action), Array(8).fill('accept'));
    assert.deepEqual(results.flatMap((r) => r.modifications), [], 'no header either');
    assert.ok(s.notes.some((n) => n?.over && n.shadow), 'the note says it was over, in shadow');
    assert.ok(results.some((r) => /\(shadow: no action\)$/.test(predictReason(r))));
    assert.match(await s.t.kernel.registry.getSingleMetricAsString('themis_plugin_predict_decisions_total'), /outcome="over_shadow"\} [1-9]/);
    await s.t.close();
  });

  it('tag adds a header; hold quarantines', async () => {
    const tag = await setup({ action: 'tag' });
    await tag.learn('alice@example.com');
    const tagged = (await tag.burst('alice@example.com')).find((r) => r.modifications.length > 0)!;
    assert.equal(tagged.decision.action, 'accept');
    assert.match((tagged.modifications[0] as { value: string }).value, /^over; policy=submission; (\d+m=\d+\/\d+(; )?)+$/);
    await tag.t.close();
    const hold = await setup({ action: 'hold' });
    await hold.learn('alice@example.com');
    const held = (await hold.burst('alice@example.com')).find((r) => r.modifications.some((m) => m.type === 'quarantine'));
    assert.ok(held, 'a message of the burst is held');
    const reason = (held.modifications.find((m) => m.type === 'quarantine') as { reason: string }).reason;
    assert.match(reason, /^\S+: alice@example\.com over its learned rate \(\d+ in \d+ min, bound \d+\)$/, 'the hold reason is short and plain (the trace keeps the detail)');
    assert.ok(!reason.includes('→'));
    await hold.t.close();
  });

  it('jail hands the subject to ratelimit’s penalty block: refused there afterwards, even at a normal rate', async () => {
    const s = await setup({ action: 'jail', jail: { minutes: 30 } }, { ratelimit: { windows: '1000/1h', by: 'saslUser' } });
    await s.learn('alice@example.com');
    const results = await s.burst('alice@example.com');
    const jailed = results.find((r) => r.decision.action === 'tempfail')!;
    assert.match(predictReason(jailed), /→ jail/);
    s.clock.now += 5 * MINUTE;
    const after = await s.send('alice@example.com', 1);
    assert.equal(after.decision.action, 'tempfail');
    assert.match(after.trace!.entries.find((e) => e.plugin === 'ratelimit' && e.action !== 'continue')!.reason!, /penalty block/);
    await s.t.close();
  });

  it('jail without the ratelimit plugin loaded: the message is still refused, and the missing plugin is logged with a code', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = { child: () => logger, info: () => undefined, debug: () => undefined, error: () => undefined, warn: (o: Record<string, unknown>, msg: string) => void lines.push({ ...o, msg }), isLevelEnabled: () => false };
    const clock = { now: START };
    const t = await createTestKernel({ plugins: [{ plugin: predict, options: { now: () => clock.now } }], policies: [{ name: 'submission', predict: { action: 'jail', jail: { minutes: 30 } } }], store: new MemoryStore({ testClock: true }), logger: logger as never });
    const send = (recipients: number) => t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt: Array.from({ length: recipients }, (_, i) => `r${i}@example.net`), client: { address: '192.0.2.7' } });
    for (let day = 0; day < 14; day++) {
      for (let i = 0; i < 6; i++) {
        clock.now += 10 * MINUTE;
        await send(2);
      }
      clock.now += 23 * 60 * MINUTE;
    }
    let refused: TestResult | undefined;
    for (let i = 0; i < 8 && !refused; i++) {
      const r = await send(30);
      if (r.decision.action === 'tempfail') refused = r;
    }
    assert.ok(refused, 'the burst is refused');
    const line = lines.find((l) => l.code === 'THEMIS_PREDICT_JAIL_FAILED');
    assert.ok(line, `a THEMIS_PREDICT_JAIL_FAILED line among ${JSON.stringify(lines)}`);
    assert.match(String(line.msg), /the ratelimit plugin is not loaded/);
    await t.close();
  });

  it('no action before enough history: a brand-new sender’s first burst only teaches', async () => {
    const s = await setup({ action: 'tempfail' });
    const results = await s.burst('new@example.com');
    assert.deepEqual(results.map((r) => r.decision.action), Array(8).fill('accept'));
    assert.ok(s.notes.every((n) => n?.over === false));
    await s.t.close();
  });

  it('themis predict show explains the profile; reset forgets it', async () => {
    const s = await setup({ action: 'tempfail' });
    await s.learn('alice@example.com');
    const out: string[] = [];
    const err: string[] = [];
    const policies = [{ name: 'submission', config: (await import('../src/schema.ts')).predictField.parse({ action: 'tempfail' }) }];
    const options = (await import('../src/schema.ts')).predictOptions.parse({});
    const ctx = { store: s.store, storeType: 'memory' as const, policies, options, configFile: undefined, readStatus: async () => ({}), out: (x: string) => void out.push(x), err: (x: string) => void err.push(x) };
    assert.equal(await predictCommand.run(['show', 'Alice@Example.com'], ctx), 0);
    assert.match(out.join(''), /alice@example\.com in policy submission \(by saslUser, recipients, ewma, action tempfail\):/);
    assert.match(out.join(''), /^\s+5 min: \d+ recipients in 5 min, learned normal [\d.]+ ± [\d.]+, bound \d+$/m);
    assert.equal(await predictCommand.run(['reset', 'alice@example.com'], ctx), 1, 'reset asks first');
    assert.equal(await predictCommand.run(['reset', 'alice@example.com', '--yes'], ctx), 0);
    out.length = 0;
    await predictCommand.run(['show', 'alice@example.com', '--json'], ctx);
    assert.equal(JSON.parse(out.join(''))[0].timeframes[0].n, 0, 'forgotten');
    assert.equal(await predictCommand.run(['nonsense'], ctx), 2);
    await s.t.close();
  });

  it('what was learned lives in Redis: a restarted daemon (a new kernel and store client) still knows the sender', { skip: redisAvailable() ? false : 'redis-server not installed' }, async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const clock = { now: START };
    const first = await setup({ action: 'tempfail' }, { store: new RedisStore({ url: redis.url }, { testClock: true }), clock });
    await first.learn('alice@example.com');
    await first.t.close();
    await first.store.close();
    const second = await setup({ action: 'tempfail' }, { store: new RedisStore({ url: redis.url }, { testClock: true }), clock });
    const results = await second.burst('alice@example.com');
    assert.ok(results.some((r) => r.decision.action === 'tempfail'), 'the burst is caught with the history learned before the restart');
    await second.t.close();
    await second.store.close();
  });

  it('newRecipients: writing to the usual people teaches, a burst to addresses never written to is caught; internal domains never count; Redis keeps the memory', { skip: redisAvailable() ? false : 'redis-server not installed' }, async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const clock = { now: START };
    const field = { count: 'newRecipients', internalDomains: ['example.com'], action: 'tempfail' };
    const make = () => setup(field, { store: new RedisStore({ url: redis.url }, { testClock: true }), clock });
    const contacts = Array.from({ length: 12 }, (_, i) => `friend${i}@partner.example.org`);
    const colleagues = Array.from({ length: 40 }, (_, i) => `colleague${i}@example.com`);
    const first = await make();
    // Three hours of mail to the same twelve people (two per message), now and then one new address.
    for (let i = 0; i < 60; i++) {
      clock.now += 3 * MINUTE;
      const rcpt = [contacts[i % 12], i % 10 === 0 ? `new${i}@elsewhere.example.net` : contacts[(i + 5) % 12]];
      assert.equal((await first.t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt, client: { address: '192.0.2.7' } })).decision.action, 'accept');
    }
    assert.deepEqual(first.notes.at(-1)?.timeframes.map((x) => x.count), [0, 0, 0], 'the last message went to known people, and the last new one was 30 minutes ago');
    await first.t.close();
    await first.store.close();

    // After a restart: a mail to 40 colleagues (internal) and one to all twelve contacts pass…
    const second = await make();
    clock.now += 3 * MINUTE;
    const send = (rcpt: string[]) => second.t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt, client: { address: '192.0.2.7' } });
    assert.equal((await send(colleagues)).decision.action, 'accept', 'colleagues are never new');
    clock.now += 30_000;
    assert.equal((await send(contacts)).decision.action, 'accept', 'the twelve contacts are remembered across the restart');
    assert.equal(second.notes.at(-1)?.timeframes[0].count, 0);
    // …but fifteen addresses she never wrote to are not.
    clock.now += 3 * MINUTE;
    const spam = await send(Array.from({ length: 15 }, (_, i) => `victim${i}@list.example.net`));
    assert.equal(spam.decision.action, 'tempfail');
    assert.match(predictReason(spam), /^submission: alice@example\.com: 15 new recipients in 1 min, learned normal [\d.]+ ± [\d.]+, bound \d+ → tempfail$/);
    const keys: string[] = [];
    for await (const k of second.store.scanKeys('predict:seen:')) keys.push(k);
    assert.equal(keys.length, 1, 'one recipient memory for the subject');
    const remembered = (await second.store.get(keys[0]))!;
    assert.equal(remembered.length % 8, 0);
    assert.ok(!remembered.includes('alice') && !remembered.includes('victim'), 'hashes are stored, never addresses');
    await second.t.close();
    await second.store.close();
  });

  it('newRecipients: show tells how many recipients are remembered; reset forgets the memory too', async () => {
    const s = await setup({ count: 'newRecipients' });
    for (let i = 0; i < 5; i++) {
      s.clock.now += MINUTE;
      await s.t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt: [`a${i}@x.example`, 'same@x.example'], client: { address: '192.0.2.7' } });
    }
    const schema = await import('../src/schema.ts');
    const out: string[] = [];
    const ctx = { store: s.store, storeType: 'memory' as const, policies: [{ name: 'submission', config: schema.predictField.parse({ count: 'newRecipients' }) }], options: schema.predictOptions.parse({}), configFile: undefined, readStatus: async () => ({}), out: (x: string) => void out.push(x), err: () => {} };
    assert.equal(await predictCommand.run(['show', 'alice@example.com'], ctx), 0);
    assert.match(out.join(''), /alice@example\.com in policy submission \(by saslUser, new recipients, ewma, action tag, 6 recipients remembered\):/);
    assert.match(out.join(''), /^\s+1 min: 0 new recipients in 1 min, learned normal/m);
    out.length = 0;
    assert.equal(await predictCommand.run(['reset', 'alice@example.com', '--yes'], ctx), 0);
    assert.match(out.join(''), /profile forgotten \(2 keys\)/);
    out.length = 0;
    await predictCommand.run(['show', 'alice@example.com', '--json'], ctx);
    assert.equal(JSON.parse(out.join(''))[0].rememberedRecipients, 0);
    await s.t.close();
  });

  it('newRecipients with knownWithin: a correspondent not among the last N distinct ones counts again, from the one memory', async () => {
    const s = await setup({ count: 'newRecipients', knownWithin: 3, timeframes: [60] });
    const send = async (rcpt: string[]) => {
      s.clock.now += MINUTE;
      await s.t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt, client: { address: '192.0.2.7' } });
      return s.notes.at(-1)!.timeframes[0].count;
    };
    // Six correspondents, then the last three again: nothing new after the first six.
    const friends = Array.from({ length: 6 }, (_, i) => `f${i}@partner.example`);
    assert.equal(await send(friends), 6, 'never written to: new');
    assert.equal(await send(['f5@partner.example', 'f4@partner.example', 'f3@partner.example']), 6, 'the last three distinct ones are known');
    // f0 was written to, but three others since: it counts, as the whole address book would for a thief.
    assert.equal(await send(['f0@partner.example']), 7);
    assert.equal(await send(['f0@partner.example']), 7, 'now it is the last one written to');
    await s.t.close();
  });

  it('bad fields are configuration errors naming the place', async () => {
    await assert.rejects(createTestKernel({ plugins: [predict], policies: [{ name: 'p', predict: { by: 'recipient' } }] }), /predict\.by.*one subject per message/);
    await assert.rejects(createTestKernel({ plugins: [predict], policies: [{ name: 'p', predict: { timeframes: [5, 1] } }] }), /predict\.timeframes.*ascending/);
    await assert.rejects(createTestKernel({ plugins: [predict], policies: [{ name: 'p', predict: { floor: { 15: 3 } } }] }), /predict\.floor\["15"\].*no timeframe of 15 minutes/);
    await assert.rejects(createTestKernel({ plugins: [predict], policies: [{ name: 'p', predict: { count: 'newRecipients', internalDomains: ['exa mple.com'] } }] }), /predict\.internalDomains\[0\].*expected a domain/);
    await assert.rejects(createTestKernel({ plugins: [predict], policies: [{ name: 'p', predict: { internalDomains: ['example.com'] } }] }), /predict\.internalDomains.*'newRecipients' or 'newInternalRecipients' only/);
    await assert.rejects(createTestKernel({ plugins: [predict], policies: [{ name: 'p', predict: { knownWithin: 20 } }] }), /predict\.knownWithin.*'newRecipients' or 'newInternalRecipients' only/);
    await assert.rejects(createTestKernel({ plugins: [predict], policies: [{ name: 'p', predict: { count: 'newRecipients', knownWithin: 0 } }] }), /predict\.knownWithin/);
  });
});
