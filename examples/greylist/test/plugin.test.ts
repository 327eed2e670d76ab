// themis-plugin-greylist in a real kernel with the in-memory store, on a clock the test drives:
// days of greylisting in milliseconds, without sleeping.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { MemoryStore, StoreError } from 'themis-milter';
import { createTestKernel, problemsOf, useTestClock, type TestKernel, type TestMessage } from 'themis-milter/testing';
import greylist, { type GreylistInput } from '../src/index.ts';

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const DAY = 24 * 60 * MINUTE;

/** A message from a client address, to one recipient. */
const from = (address: string, m: Partial<TestMessage> = {}): { client: { address: string } } & TestMessage => ({ client: { address }, from: 'sender@example.org', rcpt: ['rcpt@example.net'], ...m });

/** A kernel with the greylist plugin on a test clock; closed when the test ends. */
async function greylisting(t: TestContext, field: GreylistInput = {}, more: { store?: MemoryStore } = {}): Promise<{ k: TestKernel; clock: ReturnType<typeof useTestClock> }> {
  const clock = useTestClock(t.mock.timers);
  const k = await createTestKernel({ plugins: [greylist], policies: [{ name: 'inbound', greylist: field }], ...more });
  t.after(() => k.close());
  return { k, clock };
}

/** What the first recipient was told: the action and, for a tempfail, the reply's text. */
async function answer(k: TestKernel, m: ReturnType<typeof from>): Promise<string> {
  const r = await k.message(m);
  const rcpt = r.recipients[0];
  return rcpt.reply ? `${rcpt.action} ${rcpt.reply.code} ${rcpt.reply.enhanced} ${String(rcpt.reply.text)}` : rcpt.action;
}

const metric = async (k: TestKernel, name: string) => k.kernel.registry.getSingleMetricAsString(`themis_plugin_greylist_${name}`);

describe('themis-plugin-greylist: the state machine, on a test clock', () => {
  it('first attempt 451 with the seconds left; an early retry 451 with fewer; a retry after the delay passes; then known', async (t) => {
    const { k, clock } = await greylisting(t);
    const m = from('198.51.100.7');
    assert.equal(await answer(k, m), 'tempfail 451 4.7.1 Greylisted, try again in 300 seconds');
    await clock.advance(100 * SECOND);
    assert.equal(await answer(k, m), 'tempfail 451 4.7.1 Greylisted, try again in 200 seconds');
    await clock.advance(199 * SECOND);
    assert.equal(await answer(k, m), 'tempfail 451 4.7.1 Greylisted, try again in 1 seconds', 'one second before the delay: still early');
    await clock.advance(1 * SECOND);
    const passed = await k.message(m);
    assert.equal(passed.recipients[0].action, 'continue', 'the retry after the delay passes (no objection)');
    assert.equal(passed.decision.action, 'accept');
    assert.equal(await answer(k, m), 'continue', 'known from now on');

    assert.match(await metric(k, 'greylisted_total'), /policy="inbound",state="new"\} 1\b/);
    assert.match(await metric(k, 'greylisted_total'), /policy="inbound",state="early"\} 2\b/);
    assert.match(await metric(k, 'passed_total'), /policy="inbound"\} 1\b/);
    assert.match(await metric(k, 'known_total'), /policy="inbound"\} 1\b/);
    assert.ok(!passed.trace!.entries.some((e) => e.plugin === 'greylist' && e.action !== 'continue'), 'a pass is no objection: greylist decided nothing');
  });

  it('a known triplet is renewed by every use and forgotten after expiry without one', async (t) => {
    const { k, clock } = await greylisting(t, { delay: '5m', expiry: '36d' });
    const m = from('198.51.100.7');
    await answer(k, m);
    await clock.advance(5 * MINUTE);
    assert.equal(await answer(k, m), 'continue');
    for (let i = 0; i < 3; i++) {
      await clock.advance(30 * DAY); // 90 days after passing, but never 36 without a use
      assert.equal(await answer(k, m), 'continue', `use ${i + 1}: 30 days after the last one, still known`);
    }
    await clock.advance(36 * DAY + SECOND);
    assert.match(await answer(k, m), /^tempfail 451 .* 300 seconds$/, 'unused for longer than expiry: forgotten, new again');
  });

  it('a retry later than the retry window starts over as new', async (t) => {
    const { k, clock } = await greylisting(t, { delay: '10m', retryWindow: '4h' });
    const m = from('198.51.100.7');
    assert.match(await answer(k, m), /600 seconds$/);
    await clock.advance(4 * 60 * MINUTE + SECOND);
    assert.match(await answer(k, m), /600 seconds$/, 'too late: a new first attempt, the full delay again');
    await clock.advance(10 * MINUTE);
    assert.equal(await answer(k, m), 'continue', 'a retry after the delay of the new round passes');
    assert.match(await metric(k, 'greylisted_total'), /state="new"\} 2\b/);
  });

  it('an early retry does not move the start: the delay counts from the first attempt', async (t) => {
    const { k, clock } = await greylisting(t, { delay: '5m' });
    const m = from('198.51.100.7');
    await answer(k, m);
    for (let i = 0; i < 4; i++) {
      await clock.advance(MINUTE);
      assert.match(await answer(k, m), new RegExp(`try again in ${(4 - i) * 60} seconds$`));
    }
    await clock.advance(MINUTE);
    assert.equal(await answer(k, m), 'continue');
  });

  it('every recipient is its own triplet: a new recipient waits while a passed one is accepted', async (t) => {
    const { k, clock } = await greylisting(t);
    await answer(k, from('198.51.100.7'));
    await clock.advance(5 * MINUTE);
    const r = await k.message(from('198.51.100.7', { rcpt: ['rcpt@example.net', 'second@example.net'] }));
    assert.deepEqual(r.recipients.map((x) => x.action), ['continue', 'tempfail']);
    assert.equal(r.decision.action, 'accept', 'the message goes on to the accepted recipient');
  });

  it('the sender and the recipient are compared without case; a bounce (null sender) is greylisted like any sender', async (t) => {
    const { k, clock } = await greylisting(t);
    await answer(k, from('198.51.100.7', { from: 'Sender@Example.ORG', rcpt: ['RCPT@example.net'] }));
    await answer(k, from('198.51.100.7', { from: '' }));
    await clock.advance(5 * MINUTE);
    assert.equal(await answer(k, from('198.51.100.7')), 'continue', 'same triplet, other case');
    assert.equal(await answer(k, from('198.51.100.7', { from: '' })), 'continue', 'the bounce retried');
    assert.match(await answer(k, from('198.51.100.7', { from: 'other@example.org' })), /^tempfail 451/, 'another sender is another triplet');
  });
});

describe('themis-plugin-greylist: the client network', () => {
  it('an IPv4 /24 shares its triplets (an IPv4-mapped IPv6 address included); the next /24 does not', async (t) => {
    const { k, clock } = await greylisting(t);
    await answer(k, from('198.51.100.7'));
    await clock.advance(5 * MINUTE);
    assert.equal(await answer(k, from('198.51.100.200')), 'continue', 'a retry from another host of the /24');
    assert.equal(await answer(k, from('::ffff:198.51.100.9')), 'continue', 'IPv4-mapped: the same /24');
    assert.match(await answer(k, from('198.51.101.7')), /^tempfail 451/, 'another /24');
  });

  it('an IPv6 /64 shares its triplets; the next /64 does not', async (t) => {
    const { k, clock } = await greylisting(t);
    await answer(k, from('2001:db8:1:2::1'));
    await clock.advance(5 * MINUTE);
    assert.equal(await answer(k, from('2001:db8:1:2:ffff:aaaa:bbbb:9')), 'continue');
    assert.match(await answer(k, from('2001:db8:1:3::1')), /^tempfail 451/);
  });

  it('the prefix lengths are the policy’s: /32 and /128 greylist each address on its own', async (t) => {
    const { k, clock } = await greylisting(t, { ipv4Prefix: 32, ipv6Prefix: 128 });
    await answer(k, from('198.51.100.7'));
    await answer(k, from('2001:db8::1'));
    await clock.advance(5 * MINUTE);
    assert.equal(await answer(k, from('198.51.100.7')), 'continue');
    assert.match(await answer(k, from('198.51.100.8')), /^tempfail 451/);
    assert.equal(await answer(k, from('2001:db8::1')), 'continue');
    assert.match(await answer(k, from('2001:db8::2')), /^tempfail 451/);
  });
});

describe('themis-plugin-greylist: exemptions', () => {
  it('a SASL-authenticated client is never greylisted, unless exemptAuthenticated is false', async (t) => {
    const { k } = await greylisting(t);
    assert.equal(await answer(k, from('198.51.100.7', { auth: 'alice@example.org' })), 'continue');
    assert.match(await metric(k, 'exempt_total'), /policy="inbound",reason="authenticated"\} 1\b/);
    assert.doesNotMatch(await metric(k, 'greylisted_total'), /\} [1-9]/);

    const strict = await createTestKernel({ plugins: [greylist], policies: [{ name: 'strict', greylist: { exemptAuthenticated: false } }] });
    t.after(() => strict.close());
    assert.match(await answer(strict, from('198.51.100.7', { auth: 'alice@example.org' })), /^tempfail 451/);
  });

  it('exemptClients: addresses and networks, IPv4 and IPv6, are never greylisted; others are', async (t) => {
    const { k } = await greylisting(t, { exemptClients: ['203.0.113.0/24', '2001:db8:ffff::/48', '192.0.2.25'] });
    assert.equal(await answer(k, from('203.0.113.77')), 'continue');
    assert.equal(await answer(k, from('::ffff:203.0.113.78')), 'continue', 'IPv4-mapped');
    assert.equal(await answer(k, from('2001:db8:ffff:1::5')), 'continue');
    assert.equal(await answer(k, from('192.0.2.25')), 'continue');
    assert.match(await answer(k, from('192.0.2.26')), /^tempfail 451/);
    assert.match(await answer(k, from('2001:db8:fffe::5')), /^tempfail 451/);
    assert.match(await metric(k, 'exempt_total'), /reason="client"\} 4\b/);
  });

  it('does nothing where no policy sets greylist', async (t) => {
    useTestClock(t.mock.timers);
    const k = await createTestKernel({ plugins: [greylist], policies: [{ name: 'other' }] });
    t.after(() => k.close());
    assert.equal(await answer(k, from('198.51.100.7')), 'continue');
  });
});

describe('themis-plugin-greylist: policies, replies, store errors', () => {
  it('two policies greylist on their own; the recipient waits for the longer delay', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const k = await createTestKernel({ plugins: [greylist], policies: [{ name: 'short', greylist: { delay: '1m' } }, { name: 'long', greylist: { delay: '10m' } }] });
    t.after(() => k.close());
    const m = from('198.51.100.7');
    assert.match(await answer(k, m), /try again in 600 seconds$/);
    await clock.advance(MINUTE);
    assert.match(await answer(k, m), /try again in 540 seconds$/, 'the short policy passed, the long one still waits');
    assert.match(await metric(k, 'passed_total'), /policy="short"\} 1\b/);
    await clock.advance(9 * MINUTE);
    assert.equal(await answer(k, m), 'continue');
  });

  it('a configured reply: its text with {wait} and {policy}, the codes kept 4xx', async (t) => {
    const { k } = await greylisting(t, { delay: '2m', reply: { code: 450, text: 'Policy {policy}: come back in {wait}s' } });
    assert.equal(await answer(k, from('198.51.100.7')), 'tempfail 450 4.7.1 Policy inbound: come back in 120s');
  });

  it('a store that fails: the recipient passes by default, is tempfailed with onStoreError: tempfail', async (t) => {
    class BrokenStore extends MemoryStore {
      override async atomic(): Promise<never> {
        throw new StoreError('THEMIS_ERR_STORE_UNAVAILABLE', { target: 'test', reason: 'outage' });
      }
    }
    const store = new BrokenStore();
    const { k } = await greylisting(t, {}, { store });
    assert.equal(await answer(k, from('198.51.100.7')), 'continue');
    assert.match(await metric(k, 'store_errors_total'), /policy="inbound"\} 1\b/);
    const strict = await createTestKernel({ plugins: [greylist], policies: [{ name: 'strict', greylist: { onStoreError: 'tempfail' } }], store: new BrokenStore() });
    t.after(() => strict.close());
    assert.equal(await answer(strict, from('198.51.100.7')), 'tempfail 451 4.7.1 Greylisted, try again later');
  });

  for (const [what, field, pattern] of [
    ['a duration in words', { delay: '5 minutes' }, /expected a duration such as '30s'/],
    ['a retry window not longer than the delay', { delay: '1h', retryWindow: '30m' }, /retryWindow \(30m\) must be longer than delay \(1h\)/],
    ['a 5xx reply', { reply: { code: 550 } }, /4xx code/],
    ['an exempt client that is no network', { exemptClients: ['mail.example.org'] }, /not an IP address or CIDR/],
    ['a prefix longer than the address', { ipv4Prefix: 33 }, /ipv4Prefix|33|32/],
    ['an unknown key', { dealy: '5m' }, /dealy/],
  ] as const) {
    it(`refuses ${what} with THEMIS_ERR_POLICY_FIELD`, async () => {
      await assert.rejects(
        createTestKernel({ plugins: [greylist], policies: [{ name: 'broken', greylist: field as never }] }),
        (err: unknown) => {
          const problems = problemsOf(err);
          assert.ok(problems.some((p) => p.code === 'THEMIS_ERR_POLICY_FIELD' && p.message.includes('greylist') && pattern.test(p.message)), problems.map((p) => `${p.code}: ${p.message}`).join('\n'));
          return true;
        },
      );
    });
  }
});
