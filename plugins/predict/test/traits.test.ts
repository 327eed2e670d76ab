// Issue 23's later signals: the Reply-To domain, the From display name and the SASL/TLS fingerprint,
// each an opt-in trait on the same machinery as the network and the mail client (learned in the same
// store call, scored by traitSurprise, added). Extraction on odd headers; the score; then through the
// kernel with per-connection macros: a message whose traits are all new is flagged at a volume that
// passes with the usual ones, and nothing changes with the options off.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PolicyInput } from 'themis-milter';
import { createTestKernel, type TestResult } from 'themis-milter/testing';
import predict, { addressDomains, decodeWords, displayName, messageTraits, replyToDomain, scoreSignals, tlsFingerprint, DISPLAY_NAME_TRAIT, REPLY_TO_TRAIT, TLS_TRAIT, type PredictNote, type ProfileTraitResult } from '../src/index.ts';
import { countingStore, noteObserver } from './kernel-helpers.ts';

const HOUR = 3_600_000;
const MINUTE = 60_000;
const h = (...pairs: [string, string][]) => pairs.map(([name, value]) => ({ name, value }));

describe('the later traits: what a message shows', () => {
  it('Reply-To: none, the From domain (or under it) is same, an outside domain is itself; lists, groups, quotes, no From', () => {
    const from: [string, string] = ['From', 'Alice <alice@example.com>'];
    assert.deepEqual(replyToDomain(h(from)), { id: 'none', label: 'none' });
    assert.deepEqual(replyToDomain(h(from, ['Reply-To', 'team@example.com'])), { id: 'same', label: 'same' });
    assert.deepEqual(replyToDomain(h(from, ['reply-to', '"Team, Sales" <sales@EU.Example.com>'])), { id: 'same', label: 'same' });
    const evil = replyToDomain(h(from, ['Reply-To', 'alice.3@Evil.Example']));
    assert.equal(evil.label, 'evil.example');
    assert.match(evil.id, /^[\w-]{8}$/);
    // A list: the outside domains, sorted; the same set in another order is the same value.
    const list = replyToDomain(h(from, ['Reply-To', 'a@example.com, "x, y" <b@z.example>, c@y.example']));
    assert.equal(list.label, 'y.example z.example');
    assert.equal(replyToDomain(h(from, ['Reply-To', 'c@y.example, b@z.example'])).id, list.id);
    // A group, and an angle address with a comment.
    assert.equal(replyToDomain(h(from, ['Reply-To', 'helpers: a@one.example, b@two.example;'])).label, 'one.example two.example');
    assert.equal(replyToDomain(h(from, ['Reply-To', 'Bob (boss) <bob@other.example> (work)'])).label, 'other.example');
    // A quoted @ in a display name is not an address.
    assert.equal(replyToDomain(h(from, ['Reply-To', '"bob@evil.example" <bob@example.com>'])).id, 'same');
    // No address in it: as no Reply-To; no From: the envelope sender's domain, else every domain is outside.
    assert.equal(replyToDomain(h(from, ['Reply-To', 'undisclosed-recipients:;'])).id, 'none');
    assert.equal(replyToDomain(h(from, ['Reply-To', 'garbage'])).id, 'none');
    assert.equal(replyToDomain(h(['Reply-To', 'x@example.com']), 'example.com').id, 'same');
    assert.equal(replyToDomain(h(['Reply-To', 'x@example.com'])).label, 'example.com');
    assert.deepEqual(replyToDomain(undefined), { id: 'none', label: 'none' });
    assert.deepEqual(addressDomains('<a@[192.0.2.1]>, b@host.example.'), ['192.0.2.1', 'host.example']);
  });

  it('display name: quotes, case, spaces and encoded words normalised; none without From or name', () => {
    const of = (value: string) => displayName(h(['To', 'x@y'], ['From', value]));
    const alice = of('"Smith, Alice" <alice@example.com>');
    assert.equal(alice.label, 'smith, alice');
    assert.match(alice.id, /^[\w-]{8}$/);
    assert.equal(of('  SMITH,   "Alice"  <alice@example.com>').id, alice.id);
    assert.equal(of('=?utf-8?Q?Smith,_Alice?= <alice@example.com>').id, alice.id);
    assert.equal(of('=?UTF-8?B?U21pdGgsIEFsaWNl?= <alice@example.com>').id, alice.id);
    assert.equal(of('=?iso-8859-1?q?=C9lodie?= <e@example.com>').label, 'élodie');
    assert.equal(of('=?utf-8?q?Jos=C3=A9?= =?utf-8?q?_Garc=C3=ADa?= <j@example.com>').label, 'josé garcía');
    assert.equal(of('alice@example.com (Alice Smith)').label, 'alice smith', 'the old style: the comment');
    assert.equal(of('"Alice \\"The Boss\\"" <alice@example.com>').label, 'alice the boss');
    assert.deepEqual(of('alice@example.com'), { id: 'none', label: 'none' });
    assert.deepEqual(of('"" <alice@example.com>'), { id: 'none', label: 'none' });
    assert.deepEqual(of('<alice@example.com>'), { id: 'none', label: 'none' });
    assert.deepEqual(displayName(h(['Subject', 'no from'])), { id: 'none', label: 'none' });
    assert.deepEqual(displayName(undefined), { id: 'none', label: 'none' });
    assert.notEqual(of('CEO Office <alice@example.com>').id, alice.id);
    assert.ok(of(`"${'x'.repeat(500)}" <a@b>`).label.length <= 64);
    // Malformed encoded words stay as they are.
    assert.equal(decodeWords('=?utf-8?x?abc?= plain'), '=?utf-8?x?abc?= plain');
    assert.equal(decodeWords('=?nosuch-charset?q?abc?='), 'abc');
  });

  it('SASL/TLS: mechanism (any case), version, cipher and a client certificate; what the MTA did not send is -', () => {
    const m = (o: Record<string, string>) => new Map(Object.entries(o));
    const usual = tlsFingerprint(m({ '{auth_type}': 'login', '{tls_version}': 'TLSv1.3', '{cipher}': 'TLS_AES_256_GCM_SHA384', '{cipher_bits}': '256' }));
    assert.equal(usual.label, 'LOGIN TLSv1.3 TLS_AES_256_GCM_SHA384');
    assert.match(usual.id, /^[\w-]{8}$/);
    assert.equal(tlsFingerprint(m({ '{auth_type}': 'LOGIN', '{tls_version}': 'TLSv1.3', '{cipher}': 'TLS_AES_256_GCM_SHA384' })).id, usual.id);
    assert.equal(tlsFingerprint(m({ '{auth_type}': 'LOGIN', '{tls_version}': 'TLSv1.3', '{cipher}': 'TLS_AES_256_GCM_SHA384', '{cert_subject}': 'CN=laptop' })).label, 'LOGIN TLSv1.3 TLS_AES_256_GCM_SHA384 cert');
    assert.equal(tlsFingerprint(m({ '{auth_type}': 'PLAIN', '{tls_version}': '', '{cipher}': ' ' })).label, 'PLAIN - -');
    assert.equal(tlsFingerprint(undefined).label, '- - -');
  });

  it('messageTraits adds each optional trait only when asked; every value fits the store', () => {
    assert.deepEqual(messageTraits('n', { id: 'c' }).map((t) => t.name), ['n', 'c']);
    const all = messageTraits('n', { id: 'c' }, { replyTo: replyToDomain(h(['Reply-To', 'a@b.example'])), displayName: displayName(h(['From', 'A <a@b>'])), tls: tlsFingerprint(undefined) });
    assert.deepEqual(all.map((t) => t.name), ['n', 'c', REPLY_TO_TRAIT, DISPLAY_NAME_TRAIT, TLS_TRAIT]);
    for (const t of all) assert.match(t.value, /^[\x21-\x2b\x2d-\x3a\x3c-\x7e]{1,64}$/);
  });
});

const seen = (over: Partial<ProfileTraitResult>): ProfileTraitResult => ({ name: 'n', total: 40, distinct: 1, count: 0, hour: 0, size: 1, now: 1000, first: 0, youngValues: 0, youngHours: 0, ...over });

describe('the later traits: the score', () => {
  it('each is scored only when its option is on, the device (client, SASL/TLS, display name) once, and said in words', () => {
    const settings = { network: false, client: false, sensitivity: 1, tolerance: 2, learning: 10 };
    const traits = [seen({ name: REPLY_TO_TRAIT }), seen({ name: DISPLAY_NAME_TRAIT }), seen({ name: TLS_TRAIT })];
    const shown = { network: 'x', client: 'y', replyTo: 'evil.example', displayName: 'ceo office', tls: 'PLAIN TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384' };
    assert.equal(scoreSignals(settings, traits, shown).surprise, 0, 'off by default');
    const v = scoreSignals({ ...settings, replyTo: true, displayName: true, tls: true }, traits, shown);
    // Reply-To (judged as a setting kept: ln(0.3 × 50 / 0.2)), plus the device once: the display name and the
    // SASL/TLS fingerprint are what one new machine shows.
    assert.ok(Math.abs(v.surprise - (Math.log(75) + Math.log(16.8))) < 1e-12, String(v.surprise));
    assert.deepEqual(v.moved, [
      'new Reply-To domain evil.example (login uses 1 other Reply-To setting, 4.3 nats)',
      'new display name "ceo office" (login uses 1, 2.8 nats)',
      'new SASL/TLS "PLAIN TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384" (login uses 1, 2.8 nats)',
    ]);
    const one = scoreSignals({ ...settings, displayName: true }, traits, shown);
    assert.equal(one.moved.length, 1);
    assert.equal(scoreSignals({ ...settings, replyTo: true }, [seen({ name: REPLY_TO_TRAIT, size: 2 })], { ...shown, replyTo: 'none' }).moved[0], 'no Reply-To (login uses 2 other Reply-To settings, 4.3 nats)');
    // A known value scores nothing.
    assert.equal(scoreSignals({ ...settings, replyTo: true, displayName: true, tls: true }, traits.map((t) => ({ ...t, count: 30, hour: 990 })), shown).divisor, 1);
  });
});

const START = Date.UTC(2026, 10, 2, 8, 0, 0);
/** A message's sending side: network, mail client, headers, SASL and TLS. */
interface Side {
  address: string;
  mailer: string;
  from: string;
  replyTo?: string;
  macros: Record<string, string>;
}
const USUAL: Side = { address: '192.0.2.7', mailer: 'Microsoft Outlook 16.0', from: '"Alice Smith" <alice@example.com>', macros: { '{auth_type}': 'LOGIN', '{tls_version}': 'TLSv1.3', '{cipher}': 'TLS_AES_256_GCM_SHA384', '{cipher_bits}': '256' } };
/** The thief: the usual network and mail client (malware on the owner's machine, say), everything else new. */
const THIEF: Side = { ...USUAL, from: '"CEO Office" <alice@example.com>', replyTo: 'alice.7@mail3.evil.example', macros: { '{auth_type}': 'PLAIN', '{tls_version}': 'TLSv1.2', '{cipher}': 'ECDHE-RSA-AES256-GCM-SHA384', '{cipher_bits}': '256' } };

async function setup(field: object, options: object = {}) {
  const clock = { now: START };
  const { store, calls } = countingStore();
  const notes: (PredictNote | undefined)[] = [];
  const observer = noteObserver(notes);
  const policy: PolicyInput = { name: 'submission', predict: field };
  const t = await createTestKernel({ plugins: [{ plugin: predict, options: { ...options, now: () => clock.now } }, observer as never], policies: [policy], store });
  const send = (side: Side, recipients: number): Promise<TestResult> =>
    t.message({
      from: 'alice@example.com',
      auth: 'alice@example.com',
      rcpt: Array.from({ length: recipients }, (_, i) => `r${i}@example.net`),
      client: { address: side.address, macros: side.macros },
      headers: [['From', side.from], ...(side.replyTo ? [['Reply-To', side.replyTo] as [string, string]] : []), ['X-Mailer', side.mailer]],
    });
  const learnUsual = async () => {
    for (let hour = 0; hour < 30; hour++) {
      for (let k = 0; k < 3; k++) {
        clock.now = START + hour * HOUR + k * 20 * MINUTE;
        assert.equal((await send(USUAL, 2)).decision.action, 'accept');
      }
    }
    clock.now = START + 31 * HOUR;
  };
  return { t, store, clock, send, learnUsual, notes, calls };
}

const reason = (r: TestResult) => r.trace!.entries.find((e) => e.plugin === 'predict' && e.reason)?.reason ?? '';

describe('the later traits through the kernel', () => {
  it('the plugin asks for the SASL and TLS macros (already in Postfix’s defaults)', () => {
    assert.deepEqual(predict.macros, { helo: ['{tls_version}', '{cipher}', '{cert_subject}'], mailFrom: ['{auth_type}'] });
  });

  it('by default, Reply-To and display name are scored; SASL/TLS is not', async () => {
    const { predictField } = await import('../src/schema.ts');
    const s = predictField.parse({ signals: {} }).signals!;
    assert.deepEqual([s.replyTo, s.displayName, s.tls, s.hours], [true, true, false, false]);
  });

  it('a message from the usual network and client whose Reply-To, display name and SASL/TLS are all new is refused at a volume that passes as usual', async () => {
    const s = await setup({ action: 'tempfail', signals: { replyTo: true, displayName: true, tls: true } });
    await s.learnUsual();
    assert.equal((await s.send(USUAL, 4)).decision.action, 'accept', 'the usual traits, 4 recipients');
    assert.equal(s.notes.at(-1)!.signals!.divisor, 1);
    s.clock.now += 20 * MINUTE;
    const thief = await s.send(THIEF, 4);
    assert.equal(thief.decision.action, 'tempfail', JSON.stringify(s.notes.at(-1)));
    const moved = s.notes.at(-1)!.signals!.moved;
    assert.deepEqual(
      moved.map((m) => m.replace(/, [\d.]+ nats\)$/, ')')),
      ['new Reply-To domain mail3.evil.example (login uses 1 other Reply-To setting)', 'new display name "ceo office" (login uses 1)', 'new SASL/TLS "PLAIN TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384" (login uses 1)'],
    );
    assert.match(reason(thief), /\(bounds ÷ [\d.]+: new Reply-To domain mail3\.evil\.example .*\) → tempfail$/);
    await s.t.close();
  });

  it('with the options off the same thief passes: nothing new is learned or scored, still one store call', async () => {
    const s = await setup({ action: 'tempfail', signals: { replyTo: false, displayName: false } });
    await s.learnUsual();
    const before = s.calls();
    assert.equal((await s.send(THIEF, 4)).decision.action, 'accept');
    assert.equal(s.calls() - before, 1);
    assert.equal(s.notes.at(-1)!.signals!.divisor, 1);
    const data = (s.store as unknown as { data: Map<string, { value: unknown }> }).data;
    const fields = [...data.values()].flatMap((k) => (k.value instanceof Map ? [...k.value.keys()] : [])).filter((f: string) => f.startsWith('t'));
    assert.deepEqual(fields.sort(), ['tc', 'tn']);
    await s.t.close();
  });

  it('youngHours: a thief on a new network and device is refused for hours (6 by default), not only in its first hour; with youngHours 0 it passes from the second hour', async () => {
    const ROAMER: Side = { ...USUAL, address: '203.0.113.9', mailer: 'PHPMailer 6.9.1' };
    const cases: [options: { youngHours?: number }, hoursLater: number, action: string][] = [
      [{}, 3, 'tempfail'],
      [{}, 7, 'accept'],
      [{ youngHours: 24 }, 7, 'tempfail'],
      [{ youngHours: 0 }, 3, 'accept'],
    ];
    for (const [options, hoursLater, later] of cases) {
      const s = await setup({ action: 'tempfail', signals: {} }, options);
      await s.learnUsual();
      assert.equal((await s.send(ROAMER, 4)).decision.action, 'tempfail', `first hour, ${JSON.stringify(options)}`);
      s.clock.now += hoursLater * HOUR;
      const r = await s.send(ROAMER, 4);
      assert.equal(r.decision.action, later, `${hoursLater} hours later, ${JSON.stringify(options)}: ${JSON.stringify(s.notes.at(-1))}`);
      if (later === 'tempfail') assert.match(reason(r), /new network 203\.0\.113\.0\/24 \(login uses 1, [\d.]+ nats\)/);
      else assert.equal(s.notes.at(-1)!.signals!.divisor, 1, 'settled: the network and client are the login\'s now');
      await s.t.close();
    }
  });

  it('themis predict show counts the later traits when the policy scores them', async () => {
    const field = { action: 'tempfail', signals: { replyTo: true, displayName: true, tls: true } };
    const s = await setup(field);
    await s.learnUsual();
    await s.send(THIEF, 1);
    const { predictField, predictOptions } = await import('../src/schema.ts');
    const { predictCommand } = await import('../src/commands.ts');
    const out: string[] = [];
    const ctx = { store: s.store, storeType: 'memory' as const, policies: [{ name: 'submission', config: predictField.parse(field) }], options: predictOptions.parse({}), configFile: undefined, readStatus: async () => ({}), out: (x: string) => void out.push(x), err: () => {} };
    assert.equal(await predictCommand.run(['show', 'alice@example.com'], ctx as never), 0);
    for (const words of ['networks: 1', 'mail clients: 1', 'Reply-To settings: 2', 'display names: 2', 'SASL/TLS fingerprints: 2']) assert.match(out.join(''), new RegExp(`^ {2}${words} known`, 'm'));
    await s.t.close();
  });

  it('one store call per message with every trait on; two policies on the login learn the union once', async () => {
    const clock = { now: START };
    const { store, calls } = countingStore();
    const policies: PolicyInput[] = [
      { name: 'a', predict: { signals: { replyTo: true } } },
      { name: 'b', predict: { timeframes: [1, 5, 10, 60], signals: { tls: true, displayName: true } } },
    ];
    const t = await createTestKernel({ plugins: [{ plugin: predict, options: { now: () => clock.now } }], policies, store });
    await t.message({ from: 'alice@example.com', auth: 'alice@example.com', rcpt: ['r@example.net'], client: { address: USUAL.address, macros: USUAL.macros }, headers: [['From', USUAL.from]] });
    assert.equal(calls(), 1);
    const data = (store as unknown as { data: Map<string, { value: unknown }> }).data;
    const perKey = [...data.values()].map((k) => (k.value instanceof Map ? [...k.value.keys()].filter((f: string) => f.startsWith('t')).sort() : []));
    assert.deepEqual(perKey.filter((f) => f.length > 0), [['tc', 'td', 'tn', 'tr', 'ts']]);
    await t.close();
  });
});
