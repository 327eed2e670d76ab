// Issue 23's first signals: the login's client networks and mail clients, learned as bounded traits in
// the subject's profile (the same store call as the rate), scored as a log-likelihood ratio, and
// combined with the rate by dividing the bounds. The pure functions on known inputs; the bounds under
// an adversary; then the plugin through the kernel: flagged from a new network with a new client at a
// volume that passes from the usual place, one store call per message still, nothing changed without
// `signals`.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, type PolicyInput } from 'themis-milter';
import { createTestKernel, type TestResult } from 'themis-milter/testing';
import predict, { clientNetwork, mailClient, profileUpdate, scoreSignals, traitSurprise, withSignals, MAX_NETWORKS, REPLY_TO_TRAIT, TRAIT_CAP, type PredictNote, type ProfileTrait, type ProfileTraitResult } from '../src/index.ts';
import { parseTrait, traitCompute, traitField } from '../src/store/profile.ts';
import { countingStore, noteObserver } from './kernel-helpers.ts';

const HOUR = 3_600_000;
const MINUTE = 60_000;

describe('signals: what a message shows', () => {
  it('the client network: /24, /64 (compressed, mapped, bracketed, zoned), unknown', () => {
    assert.equal(clientNetwork('203.0.113.77'), '203.0.113.0/24');
    assert.equal(clientNetwork('2001:db8:0:12:a:b:c:d'), '2001:db8:0:12::/64');
    assert.equal(clientNetwork('2001:DB8::1'), '2001:db8:0:0::/64');
    assert.equal(clientNetwork('[2001:db8:1:2::5]'), '2001:db8:1:2::/64');
    assert.equal(clientNetwork('IPv6:fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(clientNetwork('::ffff:198.51.100.9'), '198.51.100.0/24');
    assert.equal(clientNetwork('64:ff9b::1.2.3.4'), '64:ff9b:0:0::/64');
    assert.equal(clientNetwork(undefined), 'unknown');
    assert.equal(clientNetwork('unix:/var/run/x'), 'unknown');
  });

  it('the mail client: User-Agent or X-Mailer without versions, so an update is the same client; none without', () => {
    const of = (name: string, value: string) => mailClient([{ name: 'From', value: 'a@b' }, { name, value }]).label;
    assert.equal(of('X-Mailer', 'Microsoft Outlook 16.0'), 'microsoft outlook');
    assert.equal(of('x-mailer', 'iPhone Mail (21H16)'), 'iphone mail');
    assert.equal(of('X-Mailer', 'iPhone Mail (22B91)'), 'iphone mail');
    assert.equal(of('User-Agent', 'Mutt/2.2.12 (2023-09-09)'), 'mutt');
    assert.equal(of('X-Mailer', 'Evolution 3.52.3-0ubuntu1.1'), 'evolution');
    assert.equal(of('User-Agent', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:102.0) Gecko/20100101 Thunderbird/102.15.1'), 'mozilla gecko thunderbird');
    assert.equal(of('User-Agent', 'Mozilla Thunderbird'), 'mozilla thunderbird');
    assert.equal(mailClient([{ name: 'X-Mailer', value: 'Microsoft Outlook 16.0' }]).id, mailClient([{ name: 'X-Mailer', value: 'Microsoft Outlook 15.0' }]).id);
    assert.match(mailClient([{ name: 'X-Mailer', value: 'PHPMailer 6.9.1' }]).id, /^[\w-]{8}$/);
    assert.deepEqual(mailClient([{ name: 'Subject', value: 'x' }]), { id: 'none', label: 'none' });
    assert.deepEqual(mailClient(undefined), { id: 'none', label: 'none' });
  });
});

const trait = (value: string, extra: Partial<ProfileTrait> = {}): ProfileTrait => ({ name: 'n', value, max: MAX_NETWORKS, cap: TRAIT_CAP, ...extra });

/** Learns `values` in turn, one call each at the given hours, and returns the last text. */
function learn(text: string | undefined, calls: [value: string, hour: number][], extra: Partial<ProfileTrait> = {}): string {
  let t = text;
  for (const [value, hour] of calls) t = traitCompute(t, trait(value, extra), hour).text;
  return t!;
}

describe('signals: learning a trait (profile.ts, mirrored by the Lua script)', () => {
  it('counts active hours: once per hour per value; a new value adds to distinct; the reply is before learning', () => {
    let t = learn(undefined, [['a', 10], ['a', 10], ['a', 11], ['b', 11], ['a', 12]]);
    assert.equal(t, '4,2;a,3,12,10;b,1,11,11');
    const r = traitCompute(t, trait('b'), 12);
    assert.deepEqual(r.result, { name: 'n', total: 4, distinct: 2, count: 1, hour: 11, size: 2, now: 12, first: 11, youngValues: 0, youngHours: 0 });
    t = r.text;
    assert.equal(t, '5,2;a,3,12,10;b,2,12,11');
    // A clock behind learns nothing.
    assert.equal(traitCompute(t, trait('a'), 9).text, t);
  });

  it('beyond max values the least counted goes, then the oldest, never the value of the message', () => {
    const t = learn(undefined, [['a', 1], ['a', 2], ['b', 3], ['c', 4], ['c', 5]], { max: 3 });
    assert.equal(t, '5,3;a,2,2,1;b,1,3,3;c,2,5,4');
    assert.equal(learn(t, [['d', 6]], { max: 3 }), '6,4;a,2,2,1;c,2,5,4;d,1,6,6', 'b (1 hour) went');
    // Entries stored before first hours were kept (value,count,hour) read as old values (first hour 0).
    assert.equal(learn('6,4;a,2,2;c,2,5;d,1,6', [['e', 7]], { max: 3 }), '7,5;a,2,2,0;c,2,5,0;e,1,7,7', 'd went, not e');
    assert.equal(learn('6,4;a,2,2;c,2,5', [['e', 7]], { max: 2 }), '7,5;c,2,5,0;e,1,7,7', 'a tie on count: the oldest went');
  });

  it('young values: those that entered within `young` hours, this one left out, counted with their hours; old-format entries are never young', () => {
    // a: the settled value; b and c entered at hours 100 and 101; this call shows d at 102 (new), then b again.
    const t = learn('40,1;a,40,99', [['b', 100], ['c', 101], ['c', 102]]);
    assert.equal(t, '43,3;a,40,99,0;b,1,100,100;c,2,102,101');
    const fresh = traitCompute(t, trait('d', { young: 24 }), 102).result;
    assert.deepEqual([fresh.first, fresh.youngValues, fresh.youngHours], [0, 2, 3], 'd is new: b and c are the young ones');
    const again = traitCompute(t, trait('b', { young: 24 }), 102).result;
    assert.deepEqual([again.count, again.first, again.youngValues, again.youngHours], [1, 100, 1, 2], 'b itself is left out');
    assert.equal(traitCompute(t, trait('d', { young: 2 }), 102).result.youngValues, 1, 'b entered 2 hours ago: no longer young within 2 hours');
    assert.equal(traitCompute(t, trait('d'), 102).result.youngValues, 0, 'without young, none counted');
  });

  it('past cap every count is halved (rounded up): a user who moved re-learns, the old network fades but stays known', () => {
    const cap = 40;
    let t = learn(undefined, Array.from({ length: 100 }, (_, h): [string, number] => ['home', h]), { cap });
    assert.ok(parseTrait(t)!.total <= cap);
    t = learn(t, Array.from({ length: 100 }, (_, h): [string, number] => ['new-home', 100 + h]), { cap });
    const p = parseTrait(t)!;
    const count = (v: string) => p.entries.find((e) => e.value === v)?.count ?? 0;
    assert.ok(count('new-home') > 10 * count('home'), t);
    assert.ok(count('home') >= 1, 'halving never forgets a value');
    assert.ok(p.total <= cap);
  });

  it('adversarial: 1,000,000 distinct networks into one subject stay within max values, the total within cap, the text bounded', () => {
    let t: string | undefined;
    let longest = 0;
    for (let i = 0; i < 1_000_000; i++) {
      t = traitCompute(t, trait(`${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}.0/24`), 500_000 + (i >> 2)).text;
      if ((i & 1023) === 0) longest = Math.max(longest, t.length);
    }
    const p = parseTrait(t)!;
    assert.equal(p.entries.length, MAX_NETWORKS);
    assert.ok(p.total <= TRAIT_CAP && p.distinct <= TRAIT_CAP, `${p.total} ${p.distinct}`);
    // At most 16 entries of a network (≤ 18 chars), a count and an hour: under 1 KB.
    assert.ok(Math.max(longest, t!.length) < 1024, String(longest));
  });

  it('through the store: 20,000 distinct networks, one subject, one hash of bounded size', async () => {
    const store = new MemoryStore({ testClock: true });
    const base = { key: 'p', timeframes: [1, 5], span: 30, keep: 30, clipK: 6, clipAfter: 10, ttlMs: HOUR };
    for (let i = 0; i < 20_000; i += 100) {
      const requests = Array.from({ length: 100 }, (_, k) => ({ ...base, amount: 1, now: Date.UTC(2026, 0, 1) + (i + k) * MINUTE, traits: [trait(`10.${(i + k) >> 8}.${(i + k) & 255}.0/24`), trait('c1', { name: 'c', max: 8 })] }));
      await profileUpdate(store, requests);
    }
    const hash = (store as unknown as { data: Map<string, { value: Map<string, string> }> }).data.get('p')!.value;
    assert.deepEqual([...hash.keys()].sort(), ['f1', 'f5', 'r', traitField('c'), traitField('n')]);
    assert.equal(parseTrait(hash.get('tn'))!.entries.length, MAX_NETWORKS);
    assert.equal(parseTrait(hash.get('tc'))!.entries.length, 1);
    await store.close();
  });
});

const seen = (over: Partial<ProfileTraitResult>): ProfileTraitResult => ({ name: 'n', total: 40, distinct: 1, count: 0, hour: 0, size: 1, now: 1000, first: 0, youngValues: 0, youngHours: 0, ...over });

describe('signals: the score', () => {
  it('a new network: unusual for a login on one network, much less for a roaming one; the usual network 0; nothing while learning', () => {
    const oneNetwork = traitSurprise(seen({}), 10);
    assert.ok(Math.abs(oneNetwork - Math.log((0.8 * 42) / 2)) < 1e-12, String(oneNetwork));
    const roaming = traitSurprise(seen({ distinct: 15, size: 15 }), 10);
    assert.ok(Math.abs(roaming - Math.log((0.8 * 42) / 16)) < 1e-12, String(roaming));
    assert.ok(oneNetwork > 2.5 && roaming < 1 && oneNetwork > roaming + 2);
    assert.equal(traitSurprise(seen({ count: 40, hour: 990 }), 10), 0, 'its usual network');
    assert.equal(traitSurprise(seen({ count: 1, hour: 990 }), 10), 0, 'a network seen in an earlier hour is known');
    assert.equal(traitSurprise(seen({ total: 9 }), 10), 0, 'learning');
    // A value first counted this same hour is still new (an attacker's first hour).
    assert.equal(traitSurprise(seen({ total: 41, distinct: 2, size: 2, count: 1, hour: 1000 }), 10), oneNetwork);
    // More history, more certain: the same new network says more after 200 hours than after 20.
    assert.ok(traitSurprise(seen({ total: 200 }), 10) > traitSurprise(seen({ total: 20 }), 10) + 2);
  });

  it('young values (youngHours): a thief\'s network stays new all day, and each it rotates through is judged against the settled habits', () => {
    const one = Math.log((0.8 * 42) / 2);
    // New, nothing else young: as without youngHours.
    assert.ok(Math.abs(traitSurprise(seen({}), 10, 24) - one) < 1e-12);
    // Seen 3 hours since it appeared 5 hours ago: without youngHours it is known (0); with them, still new,
    // judged on the 40 settled hours and the one settled network.
    const stayed = seen({ total: 43, distinct: 2, size: 2, count: 3, hour: 999, first: 995 });
    assert.equal(traitSurprise(stayed, 10), 0);
    assert.ok(Math.abs(traitSurprise(stayed, 10, 24) - one) < 1e-12, String(traitSurprise(stayed, 10, 24)));
    // Past the window it is settled: 0.
    assert.equal(traitSurprise({ ...stayed, first: 970 }, 10, 24), 0);
    // Stored before first hours were kept (first 0): settled.
    assert.equal(traitSurprise({ ...stayed, first: 0 }, 10, 24), 0);
    // A third new network in the day, after two others (2 hours between them): judged against the one settled network, not a roaming login.
    const rotating = seen({ total: 42, distinct: 3, size: 3, youngValues: 2, youngHours: 2 });
    assert.ok(Math.abs(traitSurprise(rotating, 10, 24) - one) < 1e-12, String(traitSurprise(rotating, 10, 24)));
    assert.ok(traitSurprise(rotating, 10) < one - 0.5, 'without youngHours the rotation made the login look roaming');
    // The settled history decides learning: 8 settled hours and 4 young ones is still learning.
    assert.equal(traitSurprise(seen({ total: 12, distinct: 2, count: 4, first: 998, hour: 999 }), 10, 24), 0);
  });

  it('a new Reply-To is judged as a setting kept, not a place visited: stronger than a new network, weaker once the login changed it before', () => {
    const kept = traitSurprise(seen({ name: REPLY_TO_TRAIT }), 10);
    assert.ok(Math.abs(kept - Math.log((0.3 * 50) / 0.2)) < 1e-12, String(kept));
    assert.ok(kept > traitSurprise(seen({}), 10) + 1, 'more than a new network for the same history');
    const changedOnce = traitSurprise(seen({ name: REPLY_TO_TRAIT, distinct: 2, size: 2 }), 10);
    assert.ok(Math.abs(changedOnce - Math.log((0.3 * 50) / 1.2)) < 1e-12, String(changedOnce));
    assert.ok(Math.abs(traitSurprise(seen({ name: REPLY_TO_TRAIT, total: 10 }), 10) - Math.log((0.3 * 20) / 0.2)) < 1e-12);
    assert.equal(traitSurprise(seen({ name: REPLY_TO_TRAIT, count: 39, hour: 990 }), 10), 0, 'its usual setting');
  });

  it('the combination divides the bounds by exp(sensitivity × (surprise − tolerance)) and says which signals moved', () => {
    const settings = { network: true, client: true, sensitivity: 1, tolerance: 2, learning: 10 };
    const trusted = scoreSignals({ ...settings, trusted: { has: (ip: string) => ip === '198.18.101.5' } }, [seen({}), seen({ name: 'c' })], { network: '198.18.101.0/24', client: 'x', address: '198.18.101.5' });
    assert.equal(trusted.moved.length, 1, 'a trusted network is not scored');
    const both = [seen({}), seen({ name: 'c' })];
    const v = scoreSignals(settings, both, { network: '203.0.113.0/24', client: 'phpmailer' });
    assert.ok(Math.abs(v.surprise - 2 * Math.log(16.8)) < 1e-12);
    assert.ok(Math.abs(v.divisor - Math.exp(v.surprise - 2)) < 1e-9);
    assert.deepEqual(v.moved, ['new network 203.0.113.0/24 (login uses 1, 2.8 nats)', 'new mail client "phpmailer" (login uses 1, 2.8 nats)']);
    // Only the network scored: under the tolerance more or less; the client switched off.
    const netOnly = scoreSignals({ ...settings, client: false }, both, { network: 'x', client: 'y' });
    assert.ok(netOnly.divisor < 2.5 && netOnly.moved.length === 1);
    // A usual message: no division.
    assert.equal(scoreSignals(settings, [seen({ count: 40, hour: 1 }), seen({ name: 'c', count: 40, hour: 1 })], { network: 'x', client: 'y' }).divisor, 1);
    const d = { minutes: 60, count: 4, center: 2, spread: 1, bound: 90, n: 50, over: false };
    assert.deepEqual(withSignals(d, 1), d);
    assert.deepEqual(withSignals(d, 30), { ...d, bound: 3, over: true });
    assert.equal(withSignals({ ...d, bound: null }, 30).over, false, 'no decision while the rate learns');
    assert.equal(withSignals({ ...d, count: 0 }, 1e6).over, false, 'nothing counted, nothing over');
  });
});

const START = Date.UTC(2026, 10, 2, 8, 0, 0);
const USUAL = { address: '192.0.2.7', mailer: 'Microsoft Outlook 16.0' };

/** A kernel with predict on a simulated clock; counts the store's atomic calls. */
async function setup(field: object) {
  const clock = { now: START };
  const { store, calls } = countingStore();
  const notes: (PredictNote | undefined)[] = [];
  const observer = noteObserver(notes);
  const policy: PolicyInput = { name: 'submission', predict: field };
  const t = await createTestKernel({ plugins: [{ plugin: predict, options: { now: () => clock.now } }, observer as never], policies: [policy], store });
  const send = (from: { address: string; mailer: string }, recipients: number): Promise<TestResult> =>
    t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt: Array.from({ length: recipients }, (_, i) => `r${i}@example.net`), client: { address: from.address }, headers: [['From', 'Alice <alice@example.com>'], ['X-Mailer', from.mailer]] });
  /** 30 working hours from the usual place: 2 recipients every 20 minutes. */
  const learnUsual = async () => {
    for (let h = 0; h < 30; h++) {
      for (let k = 0; k < 3; k++) {
        clock.now = START + h * HOUR + k * 20 * MINUTE;
        assert.equal((await send(USUAL, 2)).decision.action, 'accept');
      }
    }
    clock.now = START + 31 * HOUR;
  };
  return { t, store, clock, send, learnUsual, notes, calls };
}

const reason = (r: TestResult) => r.trace!.entries.find((e) => e.plugin === 'predict' && e.reason)?.reason ?? '';

describe('signals through the kernel', () => {
  it('a login from a new network with a new mail client is refused at a volume that passes from its usual place; a new network alone passes', async () => {
    const s = await setup({ action: 'tempfail', signals: {} });
    await s.learnUsual();
    assert.equal((await s.send(USUAL, 4)).decision.action, 'accept', 'the usual place, 4 recipients');
    s.clock.now += 20 * MINUTE;
    const trip = await s.send({ address: '198.51.100.20', mailer: 'Microsoft Outlook 16.0' }, 4);
    assert.equal(trip.decision.action, 'accept', 'a trip: a new network, the usual client');
    assert.equal(s.notes.at(-1)!.signals!.divisor, 1, `within the tolerance: ${JSON.stringify(s.notes.at(-1)!.signals)}`);
    s.clock.now += 20 * MINUTE;
    const thief = await s.send({ address: '203.0.113.9', mailer: 'PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)' }, 4);
    assert.equal(thief.decision.action, 'tempfail');
    assert.match(reason(thief), /^submission: alice@example\.com: 4 recipients in \d+ min, learned normal [\d.]+ ± [\d.]+, bound [\d.]+ \(bounds ÷ \d+(\.\d)?: new network 203\.0\.113\.0\/24 \(login uses 2, [\d.]+ nats\), new mail client "phpmailer" \(login uses 1, [\d.]+ nats\)\) → tempfail$/);
    const note = s.notes.at(-1)!;
    assert.equal(note.over, true);
    assert.ok(note.signals!.divisor > 10, JSON.stringify(note.signals));
    assert.equal(note.signals!.moved.length, 2);
    await s.t.close();
  });

  it('a trusted network (the site’s webmail) is never scored on its network; the client still is', async () => {
    const s = await setup({ action: 'tempfail', signals: { trustedNetworks: ['198.18.101.0/24'] } });
    await s.learnUsual();
    const webmail = await s.send({ address: '198.18.101.5', mailer: 'Roundcube Webmail/1.6.9' }, 4);
    assert.equal(webmail.decision.action, 'accept', 'a new client from the webmail: within the tolerance');
    assert.deepEqual(s.notes.at(-1)!.signals!.moved.map((m) => m.split(' (')[0]), ['new mail client "roundcube webmail"']);
    s.clock.now += 20 * MINUTE;
    assert.equal((await s.send({ address: '203.0.113.9', mailer: 'Roundcube Webmail/1.6.9' }, 4)).decision.action, 'tempfail', 'the same client elsewhere, in the same hour: both still new');
    await s.t.close();
  });

  it('still one store call per message: the traits ride on the profile call; with newRecipients two, as without signals', async () => {
    for (const field of [{}, { count: 'newRecipients' }]) {
      const counts: number[] = [];
      for (const signals of [undefined, {}]) {
        const s = await setup({ ...field, ...(signals ? { signals } : {}) });
        await s.send(USUAL, 2);
        const before = s.calls();
        await s.send(USUAL, 3);
        counts.push(s.calls() - before);
        await s.t.close();
      }
      assert.deepEqual(counts, field.count ? [2, 2] : [1, 1], JSON.stringify(field));
    }
  });

  it('without signals nothing changes: no trait in the store, no signals in the note, the same decisions', async () => {
    const runs = [];
    for (const signals of [undefined, {}]) {
      const s = await setup({ action: 'tempfail', ...(signals ? { signals } : {}) });
      await s.learnUsual();
      const thief = await s.send({ address: '203.0.113.9', mailer: 'PHPMailer 6.9.1' }, 4);
      const hash = (s.store as unknown as { data: Map<string, { value: Map<string, string> }> }).data;
      const fields = [...hash.values()].flatMap((k) => (k.value instanceof Map ? [...k.value.keys()] : []));
      runs.push({ action: thief.decision.action, traitFields: fields.filter((f) => f.startsWith('t')).sort(), signals: s.notes.at(-1)!.signals !== undefined, decisions: s.notes.map((n) => n?.over) });
      await s.t.close();
    }
    assert.deepEqual(runs[0], { action: 'accept', traitFields: [], signals: false, decisions: Array(91).fill(false) });
    assert.equal(runs[1].action, 'tempfail');
    assert.deepEqual(runs[1].traitFields, ['tc', 'td', 'tn', 'tr'], 'signals: {} learns the network, the client, and by default the Reply-To and the display name');
    assert.deepEqual(runs[1].decisions.slice(0, 90), runs[0].decisions.slice(0, 90), 'while the traits were usual, the same decisions');
  });

  it('themis predict show says how many networks and clients the subject uses, and how many appeared within youngHours; the inspection learns nothing', async () => {
    const s = await setup({ action: 'tempfail', signals: {} });
    await s.learnUsual();
    await s.send({ address: '203.0.113.9', mailer: 'PHPMailer 6.9.1' }, 1);
    const { predictField, predictOptions } = await import('../src/schema.ts');
    const { predictCommand } = await import('../src/commands.ts');
    const out: string[] = [];
    const ctx = { store: s.store, storeType: 'memory' as const, policies: [{ name: 'submission', config: predictField.parse({ action: 'tempfail', signals: {} }) }], options: predictOptions.parse({ now: () => s.clock.now }), configFile: undefined, readStatus: async () => ({}), out: (x: string) => void out.push(x), err: () => {} };
    for (let i = 0; i < 2; i++) {
      out.length = 0;
      assert.equal(await predictCommand.run(['show', 'alice@example.com'], ctx as never), 0);
      assert.match(out.join(''), /^ {2}networks: 2 known, 2 new in 31 active hours \(decayed\); 1 appeared in the last 6 h, still new$/m);
      assert.match(out.join(''), /^ {2}mail clients: 2 known, 2 new in 31 active hours \(decayed\); 1 appeared in the last 6 h, still new$/m);
    }
    // A day later the thief's network and client are settled values of the login.
    s.clock.now += 25 * HOUR;
    out.length = 0;
    assert.equal(await predictCommand.run(['show', 'alice@example.com'], ctx as never), 0);
    assert.match(out.join(''), /^ {2}networks: 2 known, 2 new in 31 active hours \(decayed\)$/m);
    await s.t.close();
  });

  it('the signals field: defaults, and what it refuses', async () => {
    const { predictField } = await import('../src/schema.ts');
    const { trusted, ...rest } = predictField.parse({ signals: { trustedNetworks: ['198.51.100.0/24', '2001:db8::1'] } }).signals!;
    assert.deepEqual(rest, { network: true, client: true, replyTo: true, displayName: true, tls: false, hours: false, sensitivity: 2.5, tolerance: 3.5, learning: 10, trustedNetworks: ['198.51.100.0/24', '2001:db8::1'] });
    assert.ok(trusted.has('198.51.100.200') && trusted.has('2001:db8::1') && !trusted.has('198.51.101.1'));
    assert.throws(() => predictField.parse({ signals: { trustedNetworks: ['webmail'] } }), /trustedNetworks/);
    assert.throws(() => predictField.parse({ signals: { trustedNetworks: ['10.0.0.0/33'] } }), /prefix/);
    assert.equal(predictField.parse({}).signals, undefined);
    assert.throws(() => predictField.parse({ signals: { sensitivity: -1 } }));
    assert.throws(() => predictField.parse({ signals: { weekdays: true } }));
  });
});
