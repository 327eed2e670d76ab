// `themis policy list` and `themis policy test`, called in-process with captured output, against
// test/fixtures/policies.config.ts (groups vip and internal, pool edge, six policies, no plugin).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { POLICY_LIST_USAGE, POLICY_TEST_USAGE, POLICY_USAGE, policyCommand, type PolicyListEntry, type PolicyTestResult } from '../src/cli/policy.ts';

const FIXTURE = fileURLToPath(new URL('./fixtures/policies.config.ts', import.meta.url));

async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await policyCommand(args, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

const policyTest = (...args: string[]) => run('test', '--config', FIXTURE, ...args);

async function testJson(...args: string[]): Promise<PolicyTestResult> {
  const r = await policyTest(...args, '--json');
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as PolicyTestResult;
}

const reasonsOf = (r: PolicyTestResult) => Object.fromEntries(r.policies.map((p) => [p.name, p.reasons]));
const outcomesOf = (r: PolicyTestResult) => Object.fromEntries(r.policies.map((p) => [p.name, p.outcome]));

const tmp = mkdtempSync(join(tmpdir(), 'themis-policy-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('themis policy', () => {
  it('--help on policy, policy list and policy test prints the usage (exit 0)', async () => {
    for (const [args, usage] of [[['--help'], POLICY_USAGE], [['help'], POLICY_USAGE], [['list', '--help'], POLICY_LIST_USAGE], [['test', '-h'], POLICY_TEST_USAGE]] as const) {
      const r = await run(...args);
      assert.equal(r.code, 0);
      assert.equal(r.out, usage);
      assert.equal(r.err, '');
    }
  });

  it('an unknown or missing subcommand prints the usage on stderr (exit 2)', async () => {
    const r = await run('frobnicate');
    assert.equal(r.code, 2);
    assert.match(r.err, /unknown command "frobnicate"/);
    assert.ok(r.err.includes(POLICY_USAGE));
    assert.equal(r.out, '');
    const none = await run();
    assert.equal(none.code, 2);
    assert.ok(none.err.includes(POLICY_USAGE));
  });
});

describe('themis policy list', () => {
  it('prints every policy in evaluation order (priority, then name), disabled ones included', async () => {
    const r = await run('list', '--config', FIXTURE);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trimEnd().split('\n');
    assert.equal(lines[0], `configuration: ${FIXTURE}`);
    assert.match(lines[1], /^PRIORITY\s+NAME\s+TYPE\s+ENABLED\s+MATCH\s+STOPHERE\s+FIELDS$/);
    const rows = lines.slice(2).map((l) => l.split(/\s{2,}/));
    assert.deepEqual(rows.map((c) => c[1]), ['trusted', 'disabled', 'inbound', 'outbound', 'edge', 'late']);
    assert.deepEqual(rows[0], ['1', 'trusted', 'bypass', 'yes', 'source vip', '-', '-']);
    assert.deepEqual(rows[1], ['5', 'disabled', 'regular', 'no', 'any', '-', '-']);
    assert.deepEqual(rows[2], ['5', 'inbound', 'regular', 'yes', 'destination internal; direction inbound', 'yes', '-']);
    assert.deepEqual(rows[4], ['8', 'edge', 'regular', 'yes', 'pool edge', '-', '-']);
  });

  it('--json prints an array of { priority, name, type, enabled, match, stopHere, fields, description, source }', async () => {
    const r = await run('list', '--config', FIXTURE, '--json');
    assert.equal(r.code, 0, r.err);
    const list = JSON.parse(r.out) as PolicyListEntry[];
    assert.ok(Array.isArray(list));
    assert.deepEqual(list.map((p) => p.name), ['trusted', 'disabled', 'inbound', 'outbound', 'edge', 'late']);
    assert.deepEqual(list[0], { priority: 1, name: 'trusted', type: 'bypass', enabled: true, match: { source: ['vip'], destination: ['any'], direction: 'any', pool: null }, stopHere: false, fields: {}, description: null, source: 'file' });
    assert.deepEqual(list[2].match, { source: ['any'], destination: ['internal'], direction: 'inbound', pool: null });
    assert.equal(list[2].stopHere, true);
    assert.equal(list[1].enabled, false);
    assert.equal(list[4].match.pool, 'edge');
  });

  it('shows the plugin fields a policy carries (every key but the reserved ones)', async () => {
    const file = join(tmp, 'fields.json');
    writeFileSync(file, JSON.stringify({ policies: [{ name: 'limits', description: 'outbound limits', ratelimit: { perHour: 100 }, spf: { enabled: true }, match: { direction: 'outbound' } }] }));
    const r = await run('list', '--config', file);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\n5\s+limits\s+regular\s+yes\s+direction outbound\s+-\s+ratelimit, spf\n/);
    const [entry] = JSON.parse((await run('list', '--config', file, '--json')).out) as PolicyListEntry[];
    assert.deepEqual(entry.fields, { ratelimit: { perHour: 100 }, spf: { enabled: true } });
    assert.equal(entry.description, 'outbound limits');
  });

  it('with no configuration file found, says so and lists nothing (exit 0); THEMIS_CONFIG is used when given', async () => {
    const empty = mkdtempSync(join(tmp, 'empty-'));
    const cwd = process.cwd();
    const saved = process.env.THEMIS_CONFIG;
    delete process.env.THEMIS_CONFIG;
    process.chdir(empty);
    try {
      const r = await run('list');
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /^no configuration file found .*: no policies\n$/);
      assert.deepEqual(JSON.parse((await run('list', '--json')).out), []);
      const t = await run('test', '--from', 'a@example.org');
      assert.equal(t.code, 0, t.err);
      assert.match(t.out, /^no configuration file found/);
      assert.match(t.out, /\nno policy applies\n$/);
      process.env.THEMIS_CONFIG = FIXTURE;
      const env = await run('list', '--json');
      assert.equal((JSON.parse(env.out) as PolicyListEntry[]).length, 6);
    } finally {
      process.chdir(cwd);
      if (saved === undefined) delete process.env.THEMIS_CONFIG;
      else process.env.THEMIS_CONFIG = saved;
    }
  });

  it('a configuration error exits 1 with the coded error on stderr', async () => {
    const missing = await run('list', '--config', join(tmp, 'no-such.config.ts'));
    assert.equal(missing.code, 1);
    assert.match(missing.err, /THEMIS_ERR_CONFIG: .*no such file/);
    assert.equal(missing.out, '');
    const file = join(tmp, 'bad-group.json');
    writeFileSync(file, JSON.stringify({ groups: { vip: ['sasl:alice'] }, policies: [{ name: 'p', match: { source: 'viip' } }] }));
    const bad = await run('list', '--config', file);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /THEMIS_ERR_POLICY_FIELD: policies\[0\]\.match\.source \(p\): "viip" is neither a group/);
  });

  it('bad usage exits 2', async () => {
    assert.equal((await run('list', '--config', FIXTURE, '--frobnicate')).code, 2);
    assert.equal((await run('list', 'extra')).code, 2);
  });
});

describe('themis policy test', () => {
  it('an authenticated sender: outbound applies; inbound does not, and says why', async () => {
    const r = await policyTest('--from', 'alice@example.org', '--auth', 'bob', '--client-ip', '192.0.2.1', '--to', 'bob@example.net');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\nApplies, in order:\n {2}outbound \(priority 5\)\n {4}- direction: outbound \(authenticated as bob\)\n {2}late \(priority 9\)\n/);
    assert.match(r.out, /\n {2}inbound \(priority 5\)\n {4}- direction: inbound required, but client authenticated \(as bob\)\n {4}- destination: none of recipient bob@example\.net is in \[internal\]\n/);
    assert.match(r.out, /\n {2}trusted \(priority 1, bypass\)\n {4}- source: none of sender alice@example\.org, domain example\.org, login bob, client 192\.0\.2\.1 is in \[vip\]\n/);
    assert.match(r.out, /\n {2}edge \(priority 8, pool edge\)\n {4}- pool edge: MTA \(unknown\) is not in it\n/);
    assert.match(r.out, /\n {2}disabled \(priority 5\)\n {4}- disabled\n/);
    assert.ok(r.out.endsWith('\napplies: outbound, late\n'), r.out);

    const j = await testJson('--from', 'alice@example.org', '--auth', 'bob', '--client-ip', '192.0.2.1', '--to', 'bob@example.net');
    assert.deepEqual(j.applies, ['outbound', 'late']);
    assert.equal(j.bypass, null);
    assert.equal(j.summary, 'applies: outbound, late');
    assert.deepEqual(j.facts, { sender: 'alice@example.org', recipients: ['bob@example.net'], clientIp: '192.0.2.1', auth: 'bob' });
    assert.deepEqual(j.policies.map((p) => p.name), ['trusted', 'disabled', 'inbound', 'outbound', 'edge', 'late']);
    assert.deepEqual(j.policies[4], { name: 'edge', priority: 8, type: 'regular', pool: 'edge', enabled: true, outcome: 'skipped', reasons: ['pool edge: MTA (unknown) is not in it'] });
  });

  it('sasl:alice: the bypass policy accepts, and everything after it is not evaluated', async () => {
    const r = await policyTest('--from', 'alice@example.org', '--auth', 'alice', '--client-ip', '192.0.2.1', '--to', 'bob@example.com');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\nApplies, in order:\n {2}trusted \(priority 1, bypass\)\n {4}- source: login alice is in group vip \(via sasl:alice\)\n {4}- bypass: the message is accepted without asking any plugin\n/);
    assert.ok(r.out.endsWith('\nbypass: trusted (the message is accepted without asking any plugin)\n'), r.out);
    const j = await testJson('--from', 'alice@example.org', '--auth', 'alice', '--to', 'bob@example.com');
    assert.equal(j.bypass, 'trusted');
    assert.deepEqual(j.applies, []);
    assert.deepEqual(outcomesOf(j), { trusted: 'bypass', disabled: 'skipped', inbound: 'skipped', outbound: 'skipped', edge: 'skipped', late: 'skipped' });
    const reasons = reasonsOf(j);
    assert.deepEqual(reasons.disabled, ['disabled']);
    for (const name of ['inbound', 'outbound', 'edge', 'late']) assert.deepEqual(reasons[name], ['not evaluated: bypass policy "trusted" accepted the message'], name);
  });

  it('an inbound message to @example.com: inbound applies, and its stopHere stops the later policies', async () => {
    const j = await testJson('--from', 'x@outside.example', '--client-ip', '203.0.113.5', '--to', 'nobody@else.example', '--to', 'Bob@Example.com');
    assert.deepEqual(j.applies, ['inbound']);
    assert.equal(j.summary, 'applies: inbound');
    const reasons = reasonsOf(j);
    assert.deepEqual(reasons.inbound, [
      'direction: inbound (not authenticated, and client 203.0.113.5 is not in outboundNetworks)',
      'destination: recipient Bob@Example.com is in group internal (via @example.com)',
      'stopHere: later policies are not evaluated',
    ]);
    for (const name of ['outbound', 'edge', 'late']) assert.deepEqual(reasons[name], ['not evaluated: policy "inbound" above has stopHere'], name);
    assert.deepEqual(reasons.trusted, ['source: none of sender x@outside.example, domain outside.example, login (none), client 203.0.113.5 is in [vip]']);
  });

  it('--mta mx1.example.com: edge applies; a member of a pool without fallbackToGlobal runs no policy that names no pool — not even the bypass', async () => {
    const j = await testJson('--from', 'x@outside.example', '--auth', 'alice', '--to', 'a@example.com', '--mta', 'mx1.example.com');
    assert.deepEqual(j.applies, ['edge']);
    assert.equal(j.bypass, null);
    assert.deepEqual(j.facts.mta, 'mx1.example.com');
    const reasons = reasonsOf(j);
    assert.deepEqual(reasons.edge, ['pool edge: MTA mx1.example.com is in it']);
    const noPool = ['pool: the policy names no pool, and MTA mx1.example.com is in pool edge, which does not fall back to global policies'];
    assert.deepEqual(reasons.trusted, noPool);
    assert.deepEqual(reasons.late, noPool);
    assert.equal(reasons.outbound[0], noPool[0]);
    // Another MTA, in no pool: the global policies run, edge does not.
    const other = await testJson('--from', 'x@outside.example', '--auth', 'bob', '--mta', 'mx9.example.com');
    assert.deepEqual(other.applies, ['outbound', 'late']);
    assert.deepEqual(reasonsOf(other).edge, ['pool edge: MTA mx9.example.com is not in it']);
  });

  it("--from '' is the null sender: it matches only any", async () => {
    const r = await policyTest('--from', '', '--client-ip', '203.0.113.5', '--to', 'a@example.com');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\nmessage: from <> \(null sender\), to a@example\.com, client 203\.0\.113\.5,/);
    const j = await testJson('--from', '', '--client-ip', '203.0.113.5', '--to', 'a@example.com');
    assert.equal(j.facts.sender, '');
    assert.deepEqual(j.applies, ['inbound']);
    assert.deepEqual(reasonsOf(j).trusted, ['source: none of sender <> (null sender), domain (none), login (none), client 203.0.113.5 is in [vip]']);
    assert.equal((await testJson('--from', '<>')).facts.sender, '', '<> too');
  });

  it('no --client-ip is a local submission: inbound unless authenticated; no --to is as at MAIL, before any recipient', async () => {
    const j = await testJson('--from', 'x@outside.example', '--to', 'a@example.com');
    assert.equal(j.facts.clientIp, undefined);
    assert.deepEqual(j.applies, ['inbound']);
    assert.equal(reasonsOf(j).inbound[0], 'direction: inbound (not authenticated, and no client IP (local submission))');
    const noRcpt = await testJson('--from', '<x@outside.example>');
    assert.equal(noRcpt.facts.sender, 'x@outside.example', 'angle brackets are stripped');
    assert.deepEqual(noRcpt.applies, ['late']);
    assert.deepEqual(reasonsOf(noRcpt).inbound, ['destination: no recipients yet (a destination criterion matches only once recipients are known)']);
    const r = await policyTest('--from', 'x@outside.example');
    assert.match(r.out, /to \(no recipients yet\), client \(none: local submission\), login \(not authenticated\), MTA \(not given\)\n/);
  });

  it('bad usage exits 2 with the usage on stderr: bad IP, missing --from, unknown option, positional', async () => {
    for (const args of [
      ['--from', 'a@example.org', '--client-ip', '999.1.1.1'],
      ['--from', 'a@example.org', '--client-ip', 'mx.example.com'],
      ['--to', 'b@example.com'],
      ['--from', 'a@example.org', '--to', ''],
      ['--from', 'a@example.org', '--auth', ''],
      ['--from', 'a@example.org', '--frobnicate'],
      ['--from', 'a@example.org', 'extra'],
    ]) {
      const r = await policyTest(...args);
      assert.equal(r.code, 2, args.join(' '));
      assert.ok(r.err.includes(POLICY_TEST_USAGE), args.join(' '));
      assert.equal(r.out, '');
    }
    assert.match((await policyTest('--from', 'a@example.org', '--client-ip', '999.1.1.1')).err, /--client-ip expects an IPv4 or IPv6 address, got "999\.1\.1\.1"/);
    assert.match((await policyTest('--to', 'b@example.com')).err, /--from is required/);
  });

  it('a configuration error exits 1 with the coded error on stderr', async () => {
    const missing = await run('test', '--config', join(tmp, 'no-such.config.ts'), '--from', 'a@example.org');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /^themis policy test: THEMIS_ERR_CONFIG: /);
    const file = join(tmp, 'bad-pool.json');
    writeFileSync(file, JSON.stringify({ policies: [{ name: 'p', match: { pool: 'edge' } }] }));
    const bad = await run('test', '--config', file, '--from', 'a@example.org');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /THEMIS_ERR_POLICY_FIELD: policies\[0\]\.match\.pool \(p\): no pool named "edge"/);
    assert.equal(bad.out, '');
  });
});
