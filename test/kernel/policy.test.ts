// Policy matching, row by row from the original's checklist (themis-original.md section 12, "Policy
// model"), including each line the original got wrong — then through the kernel.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { ThemisError, isThemisError, definePlugin, type PolicyDefinition } from '../../src/index.ts';
import { PolicyMatcher } from '../../src/kernel/policy.ts';
import { createTestKernel } from '../../src/testing/index.ts';

const groups = {
  internal: ['@example.com', '@sub-domain.example.com', 'first.last+tag@partner.example', '10.0.0.0/8', '192.0.2.0/28', '2001:db8::/32'],
  company: ['@company.example'],
  vip: ['boss@Example.NET', 'sasl:alice'],
  nested: ['vip', '@nested.example'],
};
const names = (m: PolicyMatcher, f: Parameters<PolicyMatcher['match']>[0]) => m.match(f).policies.map((p) => p.name);

describe('PolicyMatcher', () => {
  it('reserved names (any, all, list, global, metadata, pool, policy, policies, group) are refused for policies, groups and pools', () => {
    for (const name of ['any', 'ALL', 'list', 'global', 'metadata', 'pool', 'policy', 'policies', 'group']) {
      assert.throws(() => new PolicyMatcher([{ name }]), (e: unknown) => isThemisError(e, 'THEMIS_ERR_POLICY_NAME') && e.message.startsWith(`policies[0].name: policy name "${name}" is not allowed: reserved`));
      assert.throws(() => new PolicyMatcher([], { groups: { [name]: ['@example.com'] } }), (e: unknown) => isThemisError(e, 'THEMIS_ERR_POLICY_NAME') && e.message.includes(`groups.${name}: group name`));
      assert.throws(() => new PolicyMatcher([], { pools: { [name]: { servers: ['mx'] } } }), (e: unknown) => isThemisError(e, 'THEMIS_ERR_POLICY_NAME') && e.message.includes(`pools.${name}: pool name`));
    }
    assert.throws(() => new PolicyMatcher([], { groups: { 'bad name': ['@example.com'] } }), /group name "bad name" is not allowed: expected a letter/);
    assert.equal(new PolicyMatcher([{ name: 'company' }], { groups: { company: ['@example.com'] } }).all.length, 1, 'ordinary names are fine');
  });

  it('a group named "company" is a group, not any (fix)', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { source: 'company' } }], { groups });
    assert.deepEqual(names(m, { sender: 'x@company.example' }), ['p']);
    assert.deepEqual(names(m, { sender: 'x@elsewhere.example' }), []);
  });

  it('hyphenated domains and + addresses are valid members (fix); names and domains compare case-insensitively (fix)', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { source: 'internal' } }], { groups });
    assert.deepEqual(names(m, { sender: 'a@SUB-DOMAIN.example.com' }), ['p']);
    assert.deepEqual(names(m, { sender: 'First.Last+tag@partner.example' }), ['p']);
  });

  it('source: sender, domain, SASL login or client IP in any CIDR of the group (fix: any-of)', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { source: 'internal' } }, { name: 'v', match: { source: 'vip' } }], { groups });
    assert.deepEqual(names(m, { sender: 'stranger@x.example', clientIp: '10.1.2.3' }), ['p']);
    assert.deepEqual(names(m, { sender: 'stranger@x.example', clientIp: '192.0.2.5' }), ['p'], 'the second CIDR of the group still matches');
    assert.deepEqual(names(m, { sender: 'stranger@x.example', clientIp: '2001:db8::25' }), ['p']);
    assert.deepEqual(names(m, { sender: 'stranger@x.example', clientIp: '192.0.2.99' }), []);
    assert.deepEqual(names(m, { sender: 'x@y.example', auth: 'ALICE' }), ['v']);
  });

  it('negation means none of them', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { source: '!internal' } }], { groups });
    assert.deepEqual(names(m, { sender: 'a@example.com' }), []);
    assert.deepEqual(names(m, { sender: 'a@x.example', clientIp: '10.0.0.1' }), []);
    assert.deepEqual(names(m, { sender: 'a@x.example', clientIp: '203.0.113.1' }), ['p']);
  });

  it('destination: at least one recipient or its domain, case-insensitive (fix); full addresses too', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { destination: ['vip', '@Example.com'] } }], { groups });
    assert.deepEqual(names(m, { recipients: ['nobody@x.example', 'BOSS@example.net'] }), ['p']);
    assert.deepEqual(names(m, { recipients: ['a@EXAMPLE.COM'] }), ['p']);
    assert.deepEqual(names(m, { recipients: ['a@x.example'] }), []);
    assert.deepEqual(names(m, { recipients: [] }), [], 'no recipient yet: a destination criterion cannot match');
    const neg = new PolicyMatcher([{ name: 'n', match: { destination: '!internal' } }], { groups });
    assert.deepEqual(names(neg, { recipients: ['a@example.com', 'b@outside.example'] }), ['n'], 'negated: one recipient outside is enough');
    assert.deepEqual(names(neg, { recipients: ['a@example.com'] }), []);
  });

  it('ascending priority, ties broken by name whatever the written order; disabled policies skipped', () => {
    const policies: PolicyDefinition[] = [{ name: 'zeta', priority: 1 }, { name: 'late', priority: 9 }, { name: 'alpha', priority: 1 }, { name: 'off', priority: 0, enabled: false }, { name: 'default' }];
    assert.deepEqual(names(new PolicyMatcher(policies), {}), ['alpha', 'zeta', 'default', 'late']);
  });

  it('stopHere ends evaluation after a policy that matched; not after one that did not', () => {
    const m = new PolicyMatcher([{ name: 'a', priority: 1, stopHere: true, match: { source: 'internal' } }, { name: 'b', priority: 2 }], { groups });
    assert.deepEqual(names(m, { sender: 'x@example.com' }), ['a']);
    assert.deepEqual(names(m, { sender: 'x@outside.example' }), ['b']);
  });

  it('bypass accepts when the source matches; with a destination, when a recipient matches too — also with destination any (fix)', () => {
    const m = new PolicyMatcher([{ name: 'trusted', priority: 1, type: 'bypass', match: { source: 'internal' } }, { name: 'rest', priority: 2 }], { groups });
    assert.equal(m.match({ sender: 'a@example.com' }).bypass?.name, 'trusted');
    const anyDest = new PolicyMatcher([{ name: 'b', type: 'bypass', match: { source: 'vip', destination: 'any' } }], { groups });
    assert.equal(anyDest.match({ auth: 'alice' }).bypass?.name, 'b');
    const withDest = new PolicyMatcher([{ name: 'b', type: 'bypass', match: { source: 'vip', destination: '@example.com' } }], { groups });
    assert.equal(withDest.match({ auth: 'alice', recipients: ['x@other.example'] }).bypass, undefined);
    assert.equal(withDest.match({ auth: 'alice', recipients: ['x@other.example', 'y@example.com'] }).bypass?.name, 'b');
  });

  it('direction: outbound when authenticated or from an outbound network; inbound otherwise', () => {
    const m = new PolicyMatcher([{ name: 'out', match: { direction: 'outbound' } }, { name: 'in', match: { direction: 'inbound' } }], { outboundNetworks: ['10.0.0.0/8'] });
    assert.deepEqual(names(m, { auth: 'alice', clientIp: '203.0.113.9' }), ['out']);
    assert.deepEqual(names(m, { clientIp: '10.9.9.9' }), ['out']);
    assert.deepEqual(names(m, { clientIp: '203.0.113.9' }), ['in']);
    assert.deepEqual(names(m, {}), ['in'], 'no IP (local submission), not authenticated: inbound');
  });

  it('pools: a member runs its pools\' policies (all of them when in several), plus global ones only with fallbackToGlobal', () => {
    const pools = { edge: { servers: ['mx1.example.com', 'MX2.example.com'] }, relay: { servers: ['mx2.example.com', 'out.example.com'], fallbackToGlobal: true } };
    const m = new PolicyMatcher([{ name: 'everywhere' }, { name: 'edge-only', match: { pool: 'edge' } }, { name: 'relay-only', match: { pool: 'relay' } }], { pools });
    assert.deepEqual(names(m, { mta: 'mx1.example.com' }), ['edge-only']);
    assert.deepEqual(names(m, { mta: 'out.example.com' }), ['everywhere', 'relay-only']);
    assert.deepEqual(names(m, { mta: 'mx2.example.com' }), ['edge-only', 'everywhere', 'relay-only'], 'in two pools: both, and global since one falls back (same priority: by name)');
    assert.deepEqual(names(m, { mta: 'elsewhere.example.com' }), ['everywhere']);
  });

  it('null sender and connections without an IP match nothing but any', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { source: 'internal' } }, { name: 'every' }], { groups });
    assert.deepEqual(names(m, { sender: '' }), ['every']);
  });

  it('nested groups; bad references and members are errors naming the policy and the place', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { source: 'nested' } }], { groups });
    assert.deepEqual(names(m, { auth: 'alice' }), ['p']);
    const bad = (p: PolicyDefinition, re: RegExp) => assert.throws(() => new PolicyMatcher([p], { groups, pools: { edge: { servers: ['mx'] } } }), (e: unknown) => e instanceof ThemisError && e.code === 'THEMIS_ERR_POLICY_FIELD' && re.test(e.message));
    bad({ name: 'x', match: { source: 'no_such_group' } }, /policies\[0\]\.match\.source \(x\): "no_such_group" is neither a group/);
    bad({ name: 'x', match: { destination: ['any', '@bad..domain'] } }, /match\.destination\[1\].*not a valid @domain/);
    bad({ name: 'x', match: { source: '10.0.0.0/33' } }, /bad prefix length/);
    bad({ name: 'x', match: { pool: 'core' } }, /match\.pool.*no pool named "core"/);
    assert.throws(() => new PolicyMatcher([{ name: 'a' }, { name: 'a' }]), /already called "a"/);
  });
});

describe('policies through the kernel', () => {
  const counter = definePlugin({
    name: 'tagger',
    version: '1.0.0',
    kernel: '^1',
    claims: { field: 'tag', schema: z.string() },
    modifies: ['headers'],
    setup: () => ({
      endOfMessage: (ctx) => void ctx.message!.addHeader('X-Policies', ctx.policies.map((p) => `${p.name}=${p.config}`).join(',') || 'none'),
    }),
  });

  it('plugins receive the matched policies that carry their field, in order; bypass accepts without asking them', async () => {
    const t = await createTestKernel({
      plugins: [counter],
      policySettings: { groups, outboundNetworks: ['10.0.0.0/8'], pools: { edge: { servers: ['mx.test.example'], fallbackToGlobal: true } } },
      policies: [
        { name: 'trusted', priority: 0, type: 'bypass', match: { source: 'vip' } },
        { name: 'outbound', priority: 1, match: { direction: 'outbound' }, tag: 'out' },
        { name: 'inbound', priority: 1, match: { direction: 'inbound', destination: '@example.com' }, tag: 'in' },
        { name: 'edge', priority: 2, match: { pool: 'edge' }, tag: 'edge' },
      ],
    });
    const inbound = await t.message({ client: { address: '203.0.113.5' }, from: 'x@outside.example', rcpt: ['a@example.com'] });
    assert.deepEqual(inbound.modifications, [{ type: 'addHeader', name: 'X-Policies', value: 'inbound=in,edge=edge' }]);
    assert.deepEqual(inbound.trace!.policies, ['inbound', 'edge']);
    const outbound = await t.message({ client: { address: '10.1.1.1' }, from: 'x@example.com', rcpt: ['b@outside.example'] });
    assert.deepEqual(outbound.modifications, [{ type: 'addHeader', name: 'X-Policies', value: 'outbound=out,edge=edge' }]);
    const bypass = await t.message({ from: 'x@example.org', rcpt: ['b@outside.example'], auth: 'alice' });
    assert.equal(bypass.decision.action, 'accept');
    assert.equal(bypass.decision.stage, 'mailFrom', 'accepted as soon as the source is known');
    assert.deepEqual(bypass.modifications, []);
    assert.equal(bypass.trace!.winner!.plugin, 'policy:trusted');
  });

  it('a kernel whose policies match on the envelope asks the MTA for it, without replies', async () => {
    const t = await createTestKernel({ plugins: [counter], policies: [{ name: 'p', match: { source: '@example.com' }, tag: 'x' }] });
    const n = t.kernel.application.negotiation as { stages: string[]; noReply: string[] };
    assert.deepEqual(n.noReply, ['connect', 'helo', 'mailFrom', 'rcptTo']);
    const r = await t.message({ from: 'a@example.com', rcpt: ['b@x.example'] });
    assert.deepEqual(r.modifications, [{ type: 'addHeader', name: 'X-Policies', value: 'p=x' }]);
  });
});

describe('PolicyMatcher.explain', () => {
  const settings = { groups, outboundNetworks: ['10.0.0.0/8'], pools: { edge: { servers: ['mx1.example.com'] }, relay: { servers: ['out.example.com'], fallbackToGlobal: true } } };
  const policies: PolicyDefinition[] = [
    { name: 'trusted', priority: 1, type: 'bypass', match: { source: 'vip' } },
    { name: 'off', priority: 0, enabled: false },
    { name: 'outbound', match: { direction: 'outbound' } },
    { name: 'inbound', match: { direction: 'inbound', destination: 'internal' }, stopHere: true },
    { name: 'edge', priority: 8, match: { pool: 'edge' } },
    { name: 'late', priority: 9 },
  ];
  const m = new PolicyMatcher(policies, settings);
  const byName = (facts: Parameters<PolicyMatcher['explain']>[0]) => Object.fromEntries(m.explain(facts).map((e) => [e.name, e]));

  it('lists every policy, disabled ones included, in match() order, with name, priority, type, pool and enabled', () => {
    const all = m.explain({});
    assert.deepEqual(all.map((e) => e.name), ['off', 'trusted', 'inbound', 'outbound', 'edge', 'late']);
    assert.deepEqual(m.all.map((p) => p.name), ['off', 'trusted', 'inbound', 'outbound', 'edge', 'late']);
    assert.deepEqual(m.ordered.map((p) => p.name), ['trusted', 'inbound', 'outbound', 'edge', 'late'], 'ordered still leaves disabled policies out');
    assert.deepEqual(all[0], { name: 'off', priority: 0, type: 'regular', pool: undefined, enabled: false, outcome: 'skipped', reasons: ['disabled'] });
    assert.deepEqual({ ...all[1], reasons: [] }, { name: 'trusted', priority: 1, type: 'bypass', pool: undefined, enabled: true, outcome: 'skipped', reasons: [] });
    assert.equal(all[4].pool, 'edge');
  });

  it('says why: source, destination, direction, pool, stopHere, bypass', () => {
    const out = byName({ sender: 'alice@example.org', auth: 'bob', clientIp: '192.0.2.1', recipients: ['bob@example.net'] });
    assert.deepEqual(out.trusted.reasons, ['source: none of sender alice@example.org, domain example.org, login bob, client 192.0.2.1 is in [vip]']);
    assert.deepEqual(out.inbound.reasons, ['direction: inbound required, but client authenticated (as bob)', 'destination: none of recipient bob@example.net is in [internal]']);
    assert.equal(out.outbound.outcome, 'matched');
    assert.deepEqual(out.outbound.reasons, ['direction: outbound (authenticated as bob)']);
    assert.deepEqual(out.edge.reasons, ['pool edge: MTA (unknown) is not in it']);
    assert.deepEqual(out.late.reasons, ['no criteria: applies to every message']);

    const inbound = byName({ sender: 'x@outside.example', clientIp: '203.0.113.5', recipients: ['nobody@x.example', 'Bob@Example.com'], mta: 'mx9.example.com' });
    assert.equal(inbound.inbound.outcome, 'matched');
    assert.deepEqual(inbound.inbound.reasons, [
      'direction: inbound (not authenticated, and client 203.0.113.5 is not in outboundNetworks)',
      'destination: recipient Bob@Example.com is in group internal (via @example.com)',
      'stopHere: later policies are not evaluated',
    ]);
    assert.deepEqual(inbound.outbound.reasons, ['not evaluated: policy "inbound" above has stopHere']);
    assert.deepEqual(inbound.edge.reasons, ['not evaluated: policy "inbound" above has stopHere']);

    const viaNetwork = byName({ sender: 'x@outside.example', clientIp: '10.1.2.3', recipients: ['a@example.com'] });
    assert.deepEqual(viaNetwork.inbound.reasons, ['direction: inbound required, but client 10.1.2.3 is in outboundNetworks via 10.0.0.0/8']);
    assert.deepEqual(viaNetwork.outbound.reasons, ['direction: outbound (client 10.1.2.3 is in outboundNetworks via 10.0.0.0/8)']);

    const bypass = byName({ sender: 'x@y.example', auth: 'ALICE', recipients: [] });
    assert.equal(bypass.trusted.outcome, 'bypass');
    assert.deepEqual(bypass.trusted.reasons, ['source: login ALICE is in group vip (via sasl:alice)', 'bypass: the message is accepted without asking any plugin']);
    for (const name of ['inbound', 'outbound', 'edge', 'late']) assert.deepEqual(bypass[name].reasons, ['not evaluated: bypass policy "trusted" accepted the message'], name);
    assert.deepEqual(bypass.off.reasons, ['disabled']);

    const sender = byName({ sender: 'Boss@example.NET' });
    assert.deepEqual(sender.trusted.reasons.slice(0, 1), ['source: sender Boss@example.NET is in group vip (via boss@example.net)']);
  });

  it('pools: a member runs only its pool\'s policies unless the pool falls back to the global ones', () => {
    const edge = byName({ sender: 'x@outside.example', auth: 'alice', mta: 'MX1.example.com' });
    assert.equal(edge.edge.outcome, 'matched');
    assert.deepEqual(edge.edge.reasons, ['pool edge: MTA MX1.example.com is in it']);
    assert.equal(edge.trusted.outcome, 'skipped', 'not even the bypass: it names no pool');
    assert.deepEqual(edge.trusted.reasons, ['pool: the policy names no pool, and MTA MX1.example.com is in pool edge, which does not fall back to global policies']);
    const relay = byName({ sender: 'x@outside.example', clientIp: '203.0.113.5', mta: 'out.example.com' });
    assert.deepEqual(relay.late.reasons, ['pool: the policy names no pool, and MTA out.example.com is in pool relay, with fallbackToGlobal']);
    assert.deepEqual(relay.edge.reasons, ['pool edge: MTA out.example.com is not in it']);
  });

  it('negations, literal selectors, the null sender, no recipients, no client IP', () => {
    const n = new PolicyMatcher(
      [
        { name: 'not-internal', match: { source: '!internal' } },
        { name: 'literal', match: { source: ['@partner.example', '192.0.2.0/24'], destination: '!@example.com' } },
        { name: 'nobody', match: { source: '!any' } },
      ],
      { groups },
    );
    const e = (f: Parameters<PolicyMatcher['explain']>[0]) => Object.fromEntries(n.explain(f).map((x) => [x.name, x.reasons]));
    assert.deepEqual(e({ sender: 'a@example.com' })['not-internal'], ['source: sender a@example.com is in group internal (via @example.com), so !internal does not match']);
    assert.deepEqual(e({ sender: 'a@outside.example', clientIp: '203.0.113.1' })['not-internal'], ['source: none of sender a@outside.example, domain outside.example, login (none), client 203.0.113.1 is in group internal (!internal)']);
    assert.deepEqual(e({ sender: '' }).literal, [
      'source: none of sender <> (null sender), domain (none), login (none), client (none) is in [@partner.example, 192.0.2.0/24]',
      'destination: no recipients yet (a destination criterion matches only once recipients are known)',
    ]);
    assert.deepEqual(e({ sender: 'x@y.example', clientIp: '192.0.2.77', recipients: ['a@example.com', 'b@else.example'] }).literal, [
      'source: client 192.0.2.77 is selected by 192.0.2.0/24',
      'destination: recipient b@else.example is not in @example.com (!@example.com)',
    ]);
    assert.deepEqual(e({ sender: 'x@partner.example', recipients: ['a@example.com'] }).literal, ['destination: recipient a@example.com is in @example.com, so !@example.com does not match']);
    assert.deepEqual(e({}).nobody, ['source: !any selects nothing']);
  });

  it('agrees exactly with match() over many varied facts and policy sets', () => {
    // A small deterministic PRNG, so a failure is reproducible.
    let seed = 0x2545f491;
    const rand = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)];
    const selectors = ['any', '!any', 'internal', '!internal', 'vip', '!vip', 'company', 'nested', '@example.com', '@Example.NET', 'boss@example.net', '10.0.0.0/8', '!192.0.2.0/28', '2001:db8::/32', 'sasl:alice', 'sasl:*', '!sasl:*'];
    const pools = { edge: { servers: ['mx1.example.com', 'mx2.example.com'] }, relay: { servers: ['mx2.example.com', 'out.example.com'], fallbackToGlobal: true }, core: { servers: ['core.example.com'] } };
    const senders = [undefined, '', 'a@example.com', 'A@EXAMPLE.COM', 'x@company.example', 'boss@example.net', 'first.last+tag@partner.example', 'x@sub-domain.example.com', 'stranger@elsewhere.example', 'postmaster'];
    const logins = [undefined, 'alice', 'ALICE', 'bob', 'carol@example.com'];
    const ips = [undefined, '10.1.2.3', '192.0.2.5', '192.0.2.99', '203.0.113.1', '2001:db8::25', '2001:db9::1', '::1'];
    const rcpts = ['a@example.com', 'b@outside.example', 'boss@example.net', 'c@company.example', 'd@nested.example', 'e@SUB-DOMAIN.example.com'];
    const mtas = [undefined, 'mx1.example.com', 'MX2.example.com', 'out.example.com', 'core.example.com', 'elsewhere.example.com'];
    let comparisons = 0;
    let matchedSeen = 0;
    let bypassSeen = 0;
    for (let set = 0; set < 60; set++) {
      const defs: PolicyDefinition[] = [];
      const count = 1 + rand(8);
      for (let i = 0; i < count; i++) {
        const match: NonNullable<PolicyDefinition['match']> = {};
        if (rand(2)) match.source = rand(3) ? pick(selectors) : [pick(selectors), pick(selectors)];
        if (rand(3) === 0) match.destination = rand(3) ? pick(selectors) : [pick(selectors), pick(selectors)];
        if (rand(2)) match.direction = pick(['inbound', 'outbound', 'any'] as const);
        if (rand(3) === 0) match.pool = pick(['edge', 'relay', 'core']);
        defs.push({ name: `p${i}`, priority: rand(4), type: rand(5) === 0 ? 'bypass' : 'regular', stopHere: rand(5) === 0, enabled: rand(8) !== 0, match });
      }
      const matcher = new PolicyMatcher(defs, { groups, pools, outboundNetworks: rand(2) ? ['10.0.0.0/8', '2001:db8::/32'] : [] });
      for (let k = 0; k < 150; k++) {
        const facts = { sender: pick(senders), auth: pick(logins), clientIp: pick(ips), mta: pick(mtas), recipients: Array.from({ length: rand(4) }, () => pick(rcpts)) };
        const expected = matcher.match(facts);
        const explained = matcher.explain(facts);
        assert.deepEqual(explained.map((e) => e.name), matcher.all.map((p) => p.name));
        assert.deepEqual(explained.filter((e) => e.outcome === 'matched').map((e) => e.name), expected.policies.map((p) => p.name), JSON.stringify({ defs, facts }));
        assert.equal(explained.find((e) => e.outcome === 'bypass')?.name, expected.bypass?.name, JSON.stringify({ defs, facts }));
        assert.ok(explained.filter((e) => e.outcome === 'bypass').length <= 1);
        for (const e of explained) assert.ok(e.reasons.length > 0 && e.reasons.every((r) => typeof r === 'string' && r.length > 0 && !r.includes('undefined')), JSON.stringify({ e, defs, facts }));
        comparisons++;
        matchedSeen += expected.policies.length;
        if (expected.bypass) bypassSeen++;
      }
    }
    assert.equal(comparisons, 9000);
    assert.ok(matchedSeen > 1000 && bypassSeen > 100, `the facts exercise both outcomes (matched ${matchedSeen}, bypass ${bypassSeen})`);
  });

  it('a cycle of groups is a policy error, not a stack overflow', () => {
    assert.throws(
      () => new PolicyMatcher([{ name: 'p', match: { source: 'a' } }], { groups: { a: ['b'], b: ['a'] } }),
      (e: unknown) => e instanceof ThemisError && e.code === 'THEMIS_ERR_POLICY_FIELD' && /nest too deep \(a cycle\?\)/.test(e.message),
    );
  });
});
