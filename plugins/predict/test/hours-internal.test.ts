// Issue 23's time signal, the device counted once, and new internal recipients on their own:
// - the slot of the week a message is sent in (weekday or weekend, three hours), in the plugin's time
//   zone, learned as a trait and scored by how often the login sends then (hoursSurprise);
// - the mail client and the SASL/TLS fingerprint are one device: the larger of their surprises counts;
// - `count: 'newInternalRecipients'` counts the colleagues a login never wrote to, with the same memory.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, type PolicyInput } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import predict, { hoursSurprise, messageAmount, messageTraits, predictField, predictOptions, scoreSignals, traitSurprise, WeekSlots, CLIENT_TRAIT, HOURS_TRAIT, MAX_HOURS, NETWORK_TRAIT, TLS_TRAIT, type PredictNote, type ProfileTraitResult } from '../src/index.ts';
import { countingStore, noteObserver } from './kernel-helpers.ts';

const HOUR = 3_600_000;
const MINUTE = 60_000;
const trait = (over: Partial<ProfileTraitResult>): ProfileTraitResult => ({ name: HOURS_TRAIT, total: 100, distinct: 3, count: 0, hour: 0, size: 3, now: 1000, first: 0, youngValues: 0, youngHours: 0, ...over });

describe('the hours of the week', () => {
  it('a slot is a weekday or weekend and three hours of the day, in the zone asked', () => {
    const utc = new WeekSlots('UTC');
    // 2026-11-02 is a Monday.
    assert.deepEqual(utc.of(Date.UTC(2026, 10, 2, 9, 30)), { id: 'w3', label: 'weekday 09–12 h' });
    assert.deepEqual(utc.of(Date.UTC(2026, 10, 2, 23, 59)), { id: 'w7', label: 'weekday 21–24 h' });
    assert.deepEqual(utc.of(Date.UTC(2026, 10, 7, 0, 0)), { id: 'e0', label: 'weekend 00–03 h' });
    assert.deepEqual(utc.of(Date.UTC(2026, 10, 8, 14, 0)), { id: 'e4', label: 'weekend 12–15 h' });
    // Kolkata is 5:30 ahead: Friday 20:00 UTC is Saturday 01:30 there; Sunday 18:29 UTC is Sunday 23:59.
    const kolkata = new WeekSlots('Asia/Kolkata');
    assert.equal(kolkata.of(Date.UTC(2026, 10, 6, 20, 0)).id, 'e0');
    assert.equal(kolkata.of(Date.UTC(2026, 10, 8, 18, 29)).id, 'e7');
    assert.equal(kolkata.of(Date.UTC(2026, 10, 8, 18, 30)).id, 'w0', 'Monday 00:00 there');
    // New York's daylight saving ended on 2026-11-01: 13:00 UTC is 08:00 there, a weekday's 06–09 slot.
    assert.equal(new WeekSlots('America/New_York').of(Date.UTC(2026, 10, 2, 13, 0)).id, 'w2');
  });

  it('the plugin option timeZone is checked: an unknown zone is a clear error naming the field', () => {
    assert.equal(predictOptions.parse({ timeZone: 'Europe/Paris' }).timeZone, 'Europe/Paris');
    const r = predictOptions.safeParse({ timeZone: 'Mars/Olympus' });
    assert.equal(r.success, false);
    assert.deepEqual(r.error!.issues[0].path, ['timeZone']);
    assert.match(r.error!.issues[0].message, /expected an IANA time zone/);
  });

  it('the score: a slot the login never used grows with its history; its own hours score 0; a rare one a little', () => {
    const never = (total: number) => hoursSurprise(trait({ total, count: 0 }), false, 10);
    // ln(0.5 + 0.5 / (1.8 / (total + 2) + 0.1)), as the README says.
    const formula = (total: number) => Math.log(0.5 + 0.5 / (1.8 / (total + 2) + 0.1));
    for (const total of [10, 50, 100, 200]) assert.ok(Math.abs(never(total) - formula(total)) < 1e-12, String(total));
    assert.deepEqual([10, 50, 100].map((x) => Math.round(never(x) * 10) / 10), [0.9, 1.4, 1.6]);
    // The same for a weekend slot: the slot's share of the week cancels out for a slot never used.
    assert.ok(Math.abs(hoursSurprise(trait({ count: 0 }), true, 10) - never(100)) < 1e-12);
    assert.equal(hoursSurprise(trait({ count: 40, hour: 990 }), false, 10), 0, 'office hours');
    const rare = hoursSurprise(trait({ count: 3, hour: 900 }), false, 10);
    assert.ok(rare > 0.5 && rare < 0.6, String(rare));
    assert.equal(hoursSurprise(trait({ total: 9 }), false, 10), 0, 'still learning');
    // This hour's own count is not history: the first message of a night is as unusual as the second.
    assert.equal(hoursSurprise(trait({ total: 101, count: 1, hour: 1000 }), false, 10), never(100));
    // Never a reason alone: at most ln(5.5) = 1.7 nats, however long the history (the owner's own off hours, 10 %).
    assert.ok(never(1e6) <= Math.log(5.5) + 1e-12 && never(1e6) > 1.69);
  });

  it('scored only when asked, and said in words', () => {
    const settings = { network: false, client: false, sensitivity: 1, tolerance: 2, learning: 10 };
    const shown = { network: 'x', client: 'y', hours: 'weekend 00–03 h' };
    const traits = [trait({})];
    assert.equal(scoreSignals(settings, traits, shown).surprise, 0);
    const v = scoreSignals({ ...settings, hours: true }, traits, shown);
    assert.ok(Math.abs(v.surprise - Math.log(0.5 + 0.5 / (1.8 / 102 + 0.1))) < 1e-12);
    assert.deepEqual(v.moved, ['unusual time weekend 00–03 h (login active then in 0 of 100 hours, 1.6 nats)']);
    assert.equal(messageTraits('n', { id: 'c' }, { hours: { id: 'e0' } }).find((t) => t.name === HOURS_TRAIT)?.max, MAX_HOURS);
  });
});

describe('the mail client and the SASL/TLS fingerprint are one device', () => {
  it('the larger of the two counts, not their sum; the network still adds', () => {
    const settings = { network: true, client: true, tls: true, sensitivity: 1, tolerance: 0, learning: 10 };
    const fresh = (name: string, total: number) => ({ name, total, distinct: 1, count: 0, hour: 0, size: 1, now: 1000, first: 0, youngValues: 0, youngHours: 0 });
    const traits = [fresh(NETWORK_TRAIT, 40), fresh(CLIENT_TRAIT, 40), fresh(TLS_TRAIT, 100)];
    const v = scoreSignals(settings, traits, { network: '203.0.113.0/24', client: 'phpmailer', tls: 'PLAIN - -' });
    const each = (t: ProfileTraitResult) => traitSurprise(t, 10);
    assert.ok(Math.abs(v.surprise - (each(traits[0]) + Math.max(each(traits[1]), each(traits[2])))) < 1e-12);
    assert.equal(v.moved.length, 3, 'all three are still said');
  });
});

describe('new internal recipients, on their own', () => {
  it('counts the colleagues never written to, only inside internalDomains; needs them', () => {
    const c = predictField.parse({ count: 'newInternalRecipients', internalDomains: ['Example.com'] });
    const rcpt = ['a@example.com', 'b@eu.example.com', 'c@example.net', 'd@example.com'];
    assert.equal(messageAmount(c, rcpt, [-1, -1, -1, 0]), 2);
    assert.equal(messageAmount(predictField.parse({ count: 'newRecipients', internalDomains: ['example.com'] }), rcpt, [-1, -1, -1, 0]), 1, 'the outside twin');
    const r = predictField.safeParse({ count: 'newInternalRecipients' });
    assert.equal(r.success, false);
    assert.deepEqual(r.error!.issues[0].path, ['internalDomains']);
    assert.match(r.error!.issues[0].message, /expected at least one domain/);
  });

  it('through the kernel: a login that writes to a few colleagues is flagged when it writes to many new ones, with one memory call and one profile call', async () => {
    const START = Date.UTC(2026, 10, 2, 8, 0);
    const clock = { now: START };
    const { store, calls } = countingStore();
    const notes: (PredictNote | undefined)[] = [];
    const observer = noteObserver(notes);
    const policies: PolicyInput[] = [
      { name: 'outside', predict: { count: 'newRecipients', internalDomains: ['example.com'], timeframes: [1, 5, 10, 60], action: 'tempfail' } },
      { name: 'colleagues', predict: { count: 'newInternalRecipients', internalDomains: ['example.com'], timeframes: [1, 5, 10, 60], action: 'tempfail' } },
    ];
    const t = await createTestKernel({ plugins: [{ plugin: predict, options: { now: () => clock.now } }, observer as never], policies, store });
    const send = (rcpt: string[]) => t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt });
    // Two weeks of the same five colleagues, and now and then a new one.
    let fresh = 0;
    for (let hour = 0; hour < 60; hour++) {
      clock.now = START + hour * HOUR;
      const rcpt = [`c${hour % 5}@example.com`, ...(hour % 6 === 0 ? [`new${fresh++}@example.com`] : [])];
      assert.equal((await send(rcpt)).decision.action, 'accept');
    }
    clock.now = START + 61 * HOUR;
    const before = calls();
    // Many colleagues never written to: 40 in a few minutes (the default floors of new recipients: 10 in 1 min, 15 in 5, 25 in 10).
    const results = [];
    for (let k = 0; k < 20; k++) {
      clock.now += 15_000;
      results.push(await send([`target${2 * k}@example.com`, `target${2 * k + 1}@example.com`]));
    }
    assert.equal(calls() - before, 2 * 20, 'per message: the recipient memory, then every profile in one call');
    const refused = results.findIndex((r) => r.decision.action === 'tempfail');
    assert.ok(refused > 0, 'caught');
    const note = notes.at(-1)!;
    assert.equal(note.policy, 'colleagues');
    assert.equal(note.unit, 'new internal recipients');
    assert.match(results[refused].trace!.entries.find((e) => e.plugin === 'predict' && e.reason)!.reason!, /^colleagues: alice@example\.com: \d+ new internal recipients in \d+ min/);
    await t.close();
  });
});

describe('the hours through the kernel', () => {
  it('a new network in office hours passes; the same at 2 a.m. on a Sunday is refused, and the trace says both', async () => {
    const MONDAY = Date.UTC(2026, 10, 2);
    const clock = { now: MONDAY };
    const store = new MemoryStore({ testClock: true });
    const notes: (PredictNote | undefined)[] = [];
    const observer = noteObserver(notes);
    const policy: PolicyInput = { name: 'submission', predict: { action: 'tempfail', signals: { replyTo: true, hours: true } } };
    const t = await createTestKernel({ plugins: [{ plugin: predict, options: { now: () => clock.now, timeZone: 'Europe/Paris' } }, observer as never], policies: [policy], store });
    const send = (address: string, recipients: number) =>
      t.message({
        from: 'alice@example.com',
        auth: 'alice@example.com',
        rcpt: Array.from({ length: recipients }, (_, i) => `r${i}@example.net`),
        client: { address },
        headers: [['From', 'Alice <alice@example.com>'], ['X-Mailer', 'Microsoft Outlook 16.0']],
      });
    // Two weeks of office hours in Paris (UTC+1 in November: 09:00–17:00 there is 08:00–16:00 UTC), three messages an hour.
    for (let day = 0; day < 11; day++) {
      if (day % 7 >= 5) continue;
      for (let hour = 8; hour < 16; hour++) {
        for (let k = 0; k < 3; k++) {
          clock.now = MONDAY + day * 24 * HOUR + hour * HOUR + k * 20 * MINUTE;
          assert.equal((await send('192.0.2.7', 2)).decision.action, 'accept');
        }
      }
    }
    // Friday 13 November, 14:00 in Paris: a new network alone (72 active hours, one network: 3.4 nats) is under the tolerance (3.5).
    clock.now = Date.UTC(2026, 10, 13, 13, 0);
    assert.equal((await send('203.0.113.9', 4)).decision.action, 'accept');
    assert.equal(notes.at(-1)!.signals!.divisor, 1);
    // Sunday 15 November, 02:00 in Paris: the same message, at an hour this login never sent in (1.5 nats more: 4.9).
    clock.now = Date.UTC(2026, 10, 15, 1, 0);
    const night = await send('198.51.100.9', 4);
    assert.equal(night.decision.action, 'tempfail', JSON.stringify(notes.at(-1)));
    const moved = notes.at(-1)!.signals!.moved;
    assert.equal(moved.length, 2);
    assert.match(moved[1], /^unusual time weekend 00–03 h \(login active then in 0 of \d+ hours, [\d.]+ nats\)$/);
    await t.close();
  });
});
