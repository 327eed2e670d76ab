// Policy matching, row by row from the original's checklist (themis-original.md section 12, "Policy
// model"), including each line the original got wrong — then through the kernel.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { PolicyMatcher, ThemisError, definePlugin, type PolicyDefinition } from '../../src/index.ts';
import { createTestKernel } from '../../src/testing/index.ts';

const groups = {
  internal: ['@example.com', '@sub-domain.example.com', 'first.last+tag@partner.example', '10.0.0.0/8', '192.0.2.0/28', '2001:db8::/32'],
  company: ['@company.example'],
  vip: ['boss@Example.NET', 'sasl:alice'],
  nested: ['vip', '@nested.example'],
};
const names = (m: PolicyMatcher, f: Parameters<PolicyMatcher['match']>[0]) => m.match(f).policies.map((p) => p.name);

describe('PolicyMatcher', () => {
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
    const m = new PolicyMatcher([{ name: 'global' }, { name: 'edge-only', match: { pool: 'edge' } }, { name: 'relay-only', match: { pool: 'relay' } }], { pools });
    assert.deepEqual(names(m, { mta: 'mx1.example.com' }), ['edge-only']);
    assert.deepEqual(names(m, { mta: 'out.example.com' }), ['global', 'relay-only']);
    assert.deepEqual(names(m, { mta: 'mx2.example.com' }), ['edge-only', 'global', 'relay-only'], 'in two pools: both, and global since one falls back (same priority: by name)');
    assert.deepEqual(names(m, { mta: 'elsewhere.example.com' }), ['global']);
  });

  it('null sender and connections without an IP match nothing but any', () => {
    const m = new PolicyMatcher([{ name: 'p', match: { source: 'internal' } }, { name: 'all' }], { groups });
    assert.deepEqual(names(m, { sender: '' }), ['all']);
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
    assert.deepEqual(n.noReply, ['connect', 'mailFrom', 'rcptTo']);
    const r = await t.message({ from: 'a@example.com', rcpt: ['b@x.example'] });
    assert.deepEqual(r.modifications, [{ type: 'addHeader', name: 'X-Policies', value: 'p=x' }]);
  });
});
