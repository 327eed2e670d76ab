// The original `tmscli` examples (reference §9.2, and the original README's `default`) translated as the table
// "From tmscli" of docs/guides/migrating.md says, run against a real redis-server with the `themis` bin; each
// translation is then checked for what the original rule meant (reference §2.3, its bugs fixed) with
// `themis policy test --json`, and for the ratelimit field it maps to with `themis policy get --json`.
// Then the behaviour of the live commands themselves: --json, exit codes, refusals, history, export.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { PolicyTestResult } from '../src/cli/policy.ts';
import { redisAvailable, startRedis, type RedisServer } from './helpers/redis.ts';
import { THEMIS_BIN } from './helpers/themis.ts';

const TAG = fileURLToPath(new URL('./fixtures/plugins/tag.ts', import.meta.url));
const skip = redisAvailable() ? false : 'redis-server not installed';
if (skip) console.log(`# tmscli translation tests skipped: ${skip}`);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

// The environment must not point the commands elsewhere.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('THEMIS_')));

let dir: string;
let redis: RedisServer;
let prefixes = 0;

/** Runs `themis ARGS --config FILE` (stdin not a terminal); resolves with its exit code and output. */
function themis(file: string | undefined, ...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [THEMIS_BIN, ...args, ...(file ? ['--config', file] : [])], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir, env: ENV });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs a command that must succeed. */
async function ok(file: string, ...args: string[]): Promise<Run> {
  const r = await themis(file, ...args);
  assert.equal(r.code, 0, `themis ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r;
}

/**
 * A configuration on the shared redis-server, in a key space of its own (keyPrefix): every example
 * starts from an empty store. Plugins: ratelimit, headers and the tag fixture.
 */
function configFile(extra: object = {}): string {
  const n = ++prefixes;
  const file = join(dir, `themis-${n}.config.json`);
  writeFileSync(file, JSON.stringify({ store: { type: 'redis', url: redis.url, keyPrefix: `tmscli${n}:` }, reload: { watch: false }, plugins: ['themis-plugin-ratelimit', 'themis-plugin-headers', TAG], policies: [], ...extra }, null, 2));
  return file;
}

/** `themis policy test --json` with these flags. */
async function policyTest(file: string, ...args: string[]): Promise<PolicyTestResult> {
  return JSON.parse((await ok(file, 'policy', 'test', ...args, '--json')).stdout) as PolicyTestResult;
}

const outcome = (r: PolicyTestResult, name: string) => r.policies.find((p) => p.name === name)?.outcome;

/** The live policy as `themis policy get NAME --json` shows it. */
async function getPolicy(file: string, name: string): Promise<Record<string, unknown>> {
  const doc = JSON.parse((await ok(file, 'policy', 'get', name, '--json')).stdout) as { source: string; policy: Record<string, unknown> };
  assert.equal(doc.source, 'live');
  return doc.policy;
}

describe('tmscli, translated, against a real redis-server', { skip }, () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'themis-tmscli-'));
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe('the original tmscli examples', { concurrency: 4 }, () => {

    it('tmscli -a --policy default Source any Destination any (the original README): every message, monitor, sender+, 720 per 500 s', async () => {
      const file = configFile();
      await ok(file, 'policy', 'add', 'default', '--source', 'any', '--destination', 'any', '--ratelimit', '720/500s', '--jail-by', 'sender+', '--jail-action', 'monitor');
      assert.deepEqual(await getPolicy(file, 'default'), { name: 'default', match: { source: 'any', destination: 'any' }, ratelimit: { windows: '720/500s', by: 'sender+', action: 'monitor' } });
      // any matches every sender — the null sender and a local submission too — and every recipient.
      for (const args of [['--from', 'alice@example.com', '--to', 'bob@example.net', '--client-ip', '192.0.2.1'], ['--from', '', '--to', 'postmaster@example.net'], ['--from', 'cron@localhost.example', '--to', 'root@example.net', '--auth', 'cron']]) {
        assert.deepEqual((await policyTest(file, ...args)).applies, ['default'], args.join(' '));
      }
    });

    it('tmscli -a --policy mypolicy JailBy SASLUsername JailSpec 1:1000: one message per 1000 s per SASL login', async () => {
      const file = configFile();
      await ok(file, 'policy', 'add', 'mypolicy', '--jail-by', 'saslUser', '--ratelimit', '1/1000s', '--jail-action', 'monitor');
      assert.deepEqual((await getPolicy(file, 'mypolicy')).ratelimit, { windows: '1/1000s', by: 'saslUser', action: 'monitor' });
      // No Source/Destination: any. The policy matches authenticated and unauthenticated mail alike (its
      // stopHere and other fields apply); the ratelimit plugin skips the limit when there is no login.
      assert.deepEqual((await policyTest(file, '--from', 'alice@example.com', '--to', 'bob@example.net', '--auth', 'alice')).applies, ['mypolicy']);
      assert.deepEqual((await policyTest(file, '--from', 'alice@example.com', '--to', 'bob@example.net', '--client-ip', '192.0.2.1')).applies, ['mypolicy']);
    });

    it("tmscli -a --group default '@domina.com @inova.net 192.168.6.0/24': domains, any case, and the network", async () => {
      const file = configFile();
      await ok(file, 'group', 'add', 'default', '@domina.com', '@inova.net', '192.168.6.0/24');
      const got = JSON.parse((await ok(file, 'group', 'get', 'default', '--json')).stdout) as { source: string; members: string[] };
      assert.deepEqual(got, { name: 'default', source: 'live', members: ['@domina.com', '@inova.net', '192.168.6.0/24'] });
      // What the group selects, seen through a policy that uses it as its source.
      await ok(file, 'policy', 'add', 'uses-default', '--source', 'default');
      const applies = async (...args: string[]) => outcome(await policyTest(file, '--to', 'x@example.net', ...args), 'uses-default') === 'matched';
      assert.equal(await applies('--from', 'joao@domina.com'), true);
      assert.equal(await applies('--from', 'Maria@INOVA.NET'), true, 'domains compare without regard to case (the original did not)');
      assert.equal(await applies('--from', 'x@other.example', '--client-ip', '192.168.6.77'), true, 'a client in the network');
      assert.equal(await applies('--from', 'x@other.example', '--client-ip', '192.168.7.1'), false);
      assert.equal(await applies('--from', 'x@sub.domina.com'), false, 'a subdomain is another domain');
    });

    it("tmscli -a --pool inbound 'mtain-01.domain.tld mtain-02.domain.tld' and -a --policy inbound:default Source any Destination any JailSpec 1:1000: only on those MTAs", async () => {
      const file = configFile();
      await ok(file, 'pool', 'add', 'inbound', 'mtain-01.domain.tld', 'mtain-02.domain.tld');
      const pool = JSON.parse((await ok(file, 'pool', 'get', 'inbound', '--json')).stdout) as { source: string; pool: unknown };
      assert.deepEqual(pool, { name: 'inbound', source: 'live', pool: { servers: ['mtain-01.domain.tld', 'mtain-02.domain.tld'] } });
      await ok(file, 'policy', 'add', 'inbound-default', '--pool', 'inbound', '--source', 'any', '--destination', 'any', '--ratelimit', '1/1000s', '--jail-action', 'monitor');
      const policy = await getPolicy(file, 'inbound-default');
      assert.deepEqual(policy.match, { source: 'any', destination: 'any', pool: 'inbound' });
      assert.deepEqual(policy.ratelimit, { windows: '1/1000s', action: 'monitor' });
      const message = ['--from', 'alice@example.com', '--to', 'bob@example.net', '--client-ip', '192.0.2.1'];
      assert.deepEqual((await policyTest(file, ...message, '--mta', 'mtain-01.domain.tld')).applies, ['inbound-default']);
      assert.deepEqual((await policyTest(file, ...message, '--mta', 'MTAIN-02.domain.tld')).applies, ['inbound-default']);
      assert.deepEqual((await policyTest(file, ...message, '--mta', 'mtaout-01.domain.tld')).applies, [], 'another MTA does not run the pool’s policies');
      assert.deepEqual((await policyTest(file, ...message)).applies, [], 'nor does an unknown one');
    });

    it("tmscli -m --features global global_conditions '[[5,10], [25,100]]': no global default; each policy states the windows", async () => {
      // There is no features hash: global_conditions was the JailSpec of the policies that said 0:0. The
      // replacement is those windows on each such policy, which the ratelimit plugin accepts as given.
      const file = configFile();
      await ok(file, 'policy', 'add', 'default', '--source', 'any', '--destination', 'any', '--ratelimit', '720/500s', '--jail-action', 'monitor');
      await ok(file, 'policy', 'set', 'default', '--ratelimit', '5/10s,25/100s');
      assert.deepEqual((await getPolicy(file, 'default')).ratelimit, { windows: '5/10s,25/100s', action: 'monitor' });
      await ok(file, 'policy', 'add', 'other', '--ratelimit', '5/10s,25/100s');
      assert.deepEqual((await getPolicy(file, 'other')).ratelimit, { windows: '5/10s,25/100s' });
    });

    it("tmscli -a --policy default JailBy Sender JailSpec 2:100 Source '!source_test_group' Destination any JailAction block: everyone but the group", async () => {
      const file = configFile();
      await ok(file, 'group', 'add', 'source_test_group', '@test.example', 'boss@corp.example', '10.1.0.0/16');
      await ok(file, 'policy', 'add', 'default', '--jail-by', 'sender', '--ratelimit', '2/100s', '--source', '!source_test_group', '--destination', 'any', '--jail-action', 'block');
      const policy = await getPolicy(file, 'default');
      assert.deepEqual(policy.match, { source: '!source_test_group', destination: 'any' });
      assert.deepEqual(policy.ratelimit, { windows: '2/100s', by: 'sender', action: 'block' });
      const applies = async (...args: string[]) => outcome(await policyTest(file, '--to', 'rcpt@example.net', ...args), 'default') === 'matched';
      assert.equal(await applies('--from', 'alice@test.example', '--client-ip', '192.0.2.1'), false, 'a sender of the group is not limited');
      assert.equal(await applies('--from', 'boss@corp.example', '--client-ip', '192.0.2.1'), false);
      assert.equal(await applies('--from', 'clerk@corp.example', '--client-ip', '192.0.2.1'), true, 'another address of the same domain is');
      assert.equal(await applies('--from', 'someone@elsewhere.example', '--client-ip', '192.0.2.1'), true, 'a sender outside the group is limited');
      // The original never excluded the group's networks (IPs stored as /32 CIDRs, compared as strings).
      assert.equal(await applies('--from', 'someone@elsewhere.example', '--client-ip', '10.1.2.3'), false, 'a client in the group’s network is not limited');
      const r = await policyTest(file, '--from', 'alice@test.example', '--to', 'rcpt@example.net');
      assert.match(r.policies[0].reasons.join(' '), /source/);
      // The original's permanent refusal (550 5.7.1, where Themis defaults to 450 4.7.1): the whole field.
      await ok(file, 'policy', 'set', 'default', '--field', 'ratelimit={"windows":"2/100s","by":"sender","action":"block","reply":{"code":550,"enhanced":"5.7.1"}}');
      assert.deepEqual((await getPolicy(file, 'default')).ratelimit, { windows: '2/100s', by: 'sender', action: 'block', reply: { code: 550, enhanced: '5.7.1' } });
    });

    it('tmscli -a --policy default … Source src Destination dst Type bypass+: from src to a dst recipient, accepted without any check', async () => {
      const file = configFile({ policies: [{ name: 'limits', priority: 9, ratelimit: { windows: '100/1h' } }] });
      await ok(file, 'group', 'add', 'src', '@src.example');
      await ok(file, 'group', 'add', 'dst', '@dst.example', 'partner@other.example');
      await ok(file, 'policy', 'add', 'default', '--source', 'src', '--destination', 'dst', '--type', 'bypass');
      assert.deepEqual(await getPolicy(file, 'default'), { name: 'default', match: { source: 'src', destination: 'dst' }, type: 'bypass' });
      const bypass = async (...args: string[]) => (await policyTest(file, '--client-ip', '192.0.2.1', ...args)).bypass;
      assert.equal(await bypass('--from', 'a@src.example', '--to', 'b@dst.example'), 'default');
      assert.equal(await bypass('--from', 'a@src.example', '--to', 'c@else.example', '--to', 'b@DST.example'), 'default', 'one recipient in dst is enough, as in the original');
      assert.equal(await bypass('--from', 'a@src.example', '--to', 'partner@other.example'), 'default', 'an address in dst counts (the original compared domains only)');
      assert.equal(await bypass('--from', 'a@src.example', '--to', 'c@else.example'), null);
      assert.equal(await bypass('--from', 'x@else.example', '--to', 'b@dst.example'), null);
      const notBypassed = await policyTest(file, '--from', 'a@src.example', '--to', 'c@else.example');
      assert.deepEqual(notBypassed.applies, ['limits'], 'the other policies apply as usual');
      // bypass+ with Destination any never bypassed in the original; here it does.
      await ok(file, 'policy', 'add', 'default', '--source', 'src', '--destination', 'any', '--type', 'bypass', '--yes');
      assert.equal(await bypass('--from', 'a@src.example', '--to', 'c@else.example'), 'default');
    });

    it('tmscli -a --policy default JailBy Sender+ JailSpec 2:100 Source any Destination any CountRCPT TRUE JailAction block: recipients counted', async () => {
      const file = configFile();
      await ok(file, 'policy', 'add', 'default', '--jail-by', 'sender+', '--ratelimit', '2/100s', '--source', 'any', '--destination', 'any', '--count-rcpt', '--jail-action', 'block');
      assert.deepEqual((await getPolicy(file, 'default')).ratelimit, { windows: '2/100s', by: 'sender+', action: 'block', cost: 'recipient' });
      assert.deepEqual((await policyTest(file, '--from', 'alice@example.com', '--to', 'a@example.net', '--to', 'b@example.net', '--auth', 'alice')).applies, ['default']);
    });

    it("tmscli -a --actionheaders inbound X-CMAE-Score '(9[6-9]|100).*' X-Spam-Flag YES: the headers field; --clear is --unset headers", async () => {
      const file = configFile();
      await ok(file, 'policy', 'add', 'inbound', '--direction', 'inbound');
      const rules = [{ name: 'cmae-score', if: { header: 'X-CMAE-Score', regex: '^(9[6-9]|100)' }, then: [{ add: 'X-Spam-Flag', value: 'YES' }] }];
      await ok(file, 'policy', 'set', 'inbound', '--field', `headers=${JSON.stringify(rules)}`);
      assert.deepEqual((await getPolicy(file, 'inbound')).headers, rules);
      const bad = await themis(file, 'policy', 'set', 'inbound', '--field', 'headers=[{"if":{"header":"X-CMAE-Score","regex":"("},"then":[]}]');
      assert.equal(bad.code, 1, 'the headers plugin checks the rules');
      assert.match(bad.stderr, /THEMIS_ERR_POLICY_FIELD/);
      await ok(file, 'policy', 'set', 'inbound', '--unset', 'headers');
      assert.equal((await getPolicy(file, 'inbound')).headers, undefined);
    });

    it('tmscli -m --metadata AI:metadata:OBJ manual_block TRUE / bypass TRUE: themis limits block|bypass OBJ on', async () => {
      const file = configFile({ policies: [{ name: 'default', ratelimit: { windows: '2/100s', by: 'sender' } }] });
      await ok(file, 'limits', 'block', 'spammer@example.com', 'on');
      await ok(file, 'limits', 'bypass', 'vip@example.com', 'on');
      type Shown = { policy: string; value: string; blocked: boolean; bypass: boolean };
      const blocked = JSON.parse((await ok(file, 'limits', 'list', '--blocked', '--json')).stdout) as Shown[];
      assert.deepEqual(blocked.map((b) => [b.policy, b.value, b.blocked]), [['default', 'spammer@example.com', true]]);
      const vip = JSON.parse((await ok(file, 'limits', 'show', 'vip@example.com', '--json')).stdout) as Shown[];
      assert.deepEqual(vip.map((b) => [b.policy, b.bypass, b.blocked]), [['default', true, false]]);
      await ok(file, 'limits', 'block', 'spammer@example.com', 'off');
      assert.deepEqual(JSON.parse((await ok(file, 'limits', 'list', '--blocked', '--json')).stdout), []);
    });

    it('themis limits block|bypass also sees the ratelimit policies that are live (added with themis policy add)', async () => {
      const file = configFile();
      await ok(file, 'policy', 'add', 'default', '--jail-by', 'sender', '--ratelimit', '2/100s');
      await ok(file, 'limits', 'block', 'spammer@example.com', 'on');
    });

    it('tmscli -a --resync: themis config resync', async () => {
      const file = configFile();
      assert.match((await ok(file, 'config', 'resync')).stdout, /resync 1 published/);
      await ok(file, 'policy', 'add', 'p', '--ratelimit', '1/1s');
      assert.match((await ok(file, 'config', 'resync')).stdout, /resync 3 published/, 'a live change publishes a resync itself');
    });
  });

  describe('the live commands', { concurrency: 4 }, () => {

    it('add --json prints the audit entry and the resync version', async () => {
      const file = configFile();
      const r = await ok(file, 'policy', 'add', 'p', '--priority', '3', '--source', '@example.com', '--source', '10.0.0.0/8', '--stop-here', '--field', 'tag={"value":"p"}', '--json');
      const entry = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(entry.seq, 1);
      assert.equal(entry.version, 1);
      assert.equal(entry.kind, 'policy');
      assert.equal(entry.name, 'p');
      assert.equal(entry.before, null);
      assert.deepEqual(entry.after, { name: 'p', priority: 3, match: { source: ['@example.com', '10.0.0.0/8'] }, stopHere: true, tag: { value: 'p' } });
      assert.match(String(entry.who), /.+@.+/);
      assert.ok(Date.parse(String(entry.at)) > 0);
      assert.match(String(entry.command), /^themis policy add p --priority 3 /);
    });

    it('bad usage exits 2 and writes nothing: no NAME, a bad --priority, a bad --field, an unknown flag', async () => {
      const file = configFile();
      for (const args of [['policy', 'add'], ['policy', 'add', 'p', '--priority', 'high'], ['policy', 'add', 'p', '--field', 'tag'], ['policy', 'add', 'p', '--field', 'tag={'], ['policy', 'add', 'p', '--bogus'], ['group', 'add', 'g'], ['group', 'frobnicate', 'g', 'x']]) {
        const r = await themis(file, ...args);
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /Usage: themis/);
      }
      const r = await themis(file, 'policy', 'add');
      assert.match(r.stderr, /needs a NAME/);
      assert.match((await themis(file, 'policy', 'add', 'p', '--priority', 'high')).stderr, /--priority expects a number/);
      assert.equal((await themis(file, 'policy', 'get', 'p')).code, 1, 'nothing was written');
      assert.deepEqual(JSON.parse((await ok(file, 'policy', 'history', '--json')).stdout), []);
    });

    it('a group or pool in use cannot be deleted (exit 1); once unused it can', async () => {
      const file = configFile();
      await ok(file, 'group', 'add', 'src', '@src.example');
      await ok(file, 'group', 'add', 'outer', '!src', '@outer.example');
      await ok(file, 'pool', 'add', 'edge', 'mx1.example.com');
      await ok(file, 'policy', 'add', 'p', '--source', '!src', '--pool', 'edge');
      const g = await themis(file, 'group', 'delete', 'src', '--yes');
      assert.equal(g.code, 1);
      assert.match(g.stderr, /src is still used by policy p, group outer/);
      const p = await themis(file, 'pool', 'delete', 'edge', '--yes');
      assert.equal(p.code, 1);
      assert.match(p.stderr, /edge is still used by policy p/);
      assert.deepEqual(JSON.parse((await ok(file, 'group', 'get', 'src', '--json')).stdout).members, ['@src.example']);
      await ok(file, 'policy', 'delete', 'p', '--yes');
      await ok(file, 'group', 'delete', 'outer', '--yes');
      await ok(file, 'group', 'delete', 'src', '--yes');
      await ok(file, 'pool', 'delete', 'edge', '--yes');
      assert.equal((await themis(file, 'group', 'get', 'src')).code, 1);
    });

    it('delete, and add over a live policy, without --yes and without a terminal refuse (exit 1) and change nothing', async () => {
      const file = configFile();
      await ok(file, 'policy', 'add', 'p', '--field', 'tag={"value":"one"}');
      const del = await themis(file, 'policy', 'delete', 'p');
      assert.equal(del.code, 1);
      assert.match(del.stderr, /not confirmed: run again with --yes/);
      const add = await themis(file, 'policy', 'add', 'p', '--field', 'tag={"value":"two"}');
      assert.equal(add.code, 1);
      assert.match(add.stderr, /live policy p exists: replace it\? — not confirmed/);
      await ok(file, 'group', 'add', 'g', '@g.example');
      assert.equal((await themis(file, 'group', 'delete', 'g')).code, 1);
      assert.deepEqual((await getPolicy(file, 'p')).tag, { value: 'one' });
      assert.equal((await themis(file, 'group', 'get', 'g')).code, 0);
      assert.equal(JSON.parse((await ok(file, 'policy', 'history', '--json')).stdout).length, 2, 'only the two additions are recorded');
      assert.equal((await themis(file, 'policy', 'delete', 'nothere', '--yes')).code, 1);
    });

    it('policy history lists every change, newest first, with who, when, the command, before and after', async () => {
      const file = configFile({ policies: [{ name: 'every', tag: { value: 'file' } }] });
      await ok(file, 'policy', 'add', 'p', '--field', 'tag={"value":"one"}');
      await ok(file, 'policy', 'set', 'p', '--field', 'tag={"value":"two"}', '--priority', '2');
      await ok(file, 'group', 'add', 'g', '@g.example');
      await ok(file, 'policy', 'set', 'every', '--disabled');
      await ok(file, 'policy', 'delete', 'p', '--yes');
      type Entry = { seq: number; at: string; who: string; command: string; kind: string; name: string; before: unknown; after: unknown };
      const all = JSON.parse((await ok(file, 'policy', 'history', '--json')).stdout) as Entry[];
      assert.deepEqual(all.map((e) => [e.seq, e.kind, e.name]), [[5, 'policy', 'p'], [4, 'policy', 'every'], [3, 'group', 'g'], [2, 'policy', 'p'], [1, 'policy', 'p']]);
      for (const e of all) {
        assert.match(e.who, /.+@.+/);
        assert.ok(Date.parse(e.at) > 0);
        assert.match(e.command, /^themis (policy|group) /);
      }
      assert.deepEqual([all[0].before, all[0].after], [{ name: 'p', tag: { value: 'two' }, priority: 2 }, null]);
      assert.deepEqual([all[3].before, all[3].after], [{ name: 'p', tag: { value: 'one' } }, { name: 'p', tag: { value: 'two' }, priority: 2 }]);
      assert.deepEqual(all[1].before, null, 'the file’s policy was not live before');
      assert.deepEqual(all[1].after, { name: 'every', tag: { value: 'file' }, enabled: false }, 'set on a file policy makes a live copy');
      const p = JSON.parse((await ok(file, 'policy', 'history', 'p', '--limit', '2', '--json')).stdout) as Entry[];
      assert.deepEqual(p.map((e) => e.seq), [5, 2]);
      const text = (await ok(file, 'policy', 'history', 'p')).stdout;
      assert.match(text, /^#5 \S+ \S+@\S+ policy p: deleted\n {2}themis policy delete p --yes --config \S+\n {2}before: \{"name":"p"/m);
      assert.match(text, /^#1 .* policy p: added\n.*\n {2}before: null\n {2}after: {2}\{"name":"p","tag":\{"value":"one"\}\}$/m);
      assert.equal((await themis(file, 'policy', 'history', '--limit', '0')).code, 2);
    });

    it('export prints a fragment whose values parse back (JSON) to the live items, and which imports as a module', async () => {
      const file = configFile();
      await ok(file, 'group', 'add', 'internal', '@example.com', '10.0.0.0/8');
      await ok(file, 'pool', 'add', 'edge', 'mx1.example.com', '--fallback-to-global');
      await ok(file, 'policy', 'add', 'out', '--source', 'internal', '--pool', 'edge', '--ratelimit', '100/1m,1000/1h', '--jail-by', 'sender+', '--count-rcpt', '--reply', 'slow down: {wait} s');
      await ok(file, 'policy', 'add', 'tagged', '--field', 'tag={"value":"quote \\" and \\\\ backslash"}');
      const r = await ok(file, 'export');
      assert.match(r.stdout, /^\/\/ Live policies exported from the store/);
      const body = r.stdout
        .replace(/^\/\/.*\n/gm, '')
        .replace(/^export const live = /m, '')
        .replace(/;\s*$/, '')
        .replace(/^ {2}(groups|pools|policies):/gm, '  "$1":')
        .replace(/,\n\}$/, '\n}');
      const parsed = JSON.parse(body) as { groups: unknown; pools: unknown; policies: { name: string }[] };
      assert.deepEqual(parsed.groups, { internal: ['@example.com', '10.0.0.0/8'] });
      assert.deepEqual(parsed.pools, { edge: { servers: ['mx1.example.com'], fallbackToGlobal: true } });
      const byName = Object.fromEntries(parsed.policies.map((p) => [p.name, p]));
      assert.deepEqual(byName, { out: await getPolicy(file, 'out'), tagged: await getPolicy(file, 'tagged') });
      assert.deepEqual(byName.out, { name: 'out', match: { source: 'internal', pool: 'edge' }, ratelimit: { windows: '100/1m,1000/1h', by: 'sender+', cost: 'recipient', reply: { text: 'slow down: {wait} s' } } });
      assert.deepEqual((byName.tagged as { tag?: unknown }).tag, { value: 'quote " and \\ backslash' });
      // As written, the fragment is a module that themis.config.ts can take the keys from.
      const module = join(dir, 'fragment.mjs');
      writeFileSync(module, r.stdout);
      const { live } = (await import(pathToFileURL(module).href)) as { live: unknown };
      assert.deepEqual(live, parsed);
    });

    it('with the in-memory store the commands refuse (exit 1): no daemon shares it', async () => {
      const file = join(dir, 'memory.config.json');
      writeFileSync(file, JSON.stringify({ plugins: [TAG], policies: [{ name: 'every', tag: { value: 'v1' } }] }));
      for (const args of [['policy', 'add', 'p', '--field', 'tag={"value":"x"}'], ['policy', 'history'], ['group', 'add', 'g', '@g.example'], ['pool', 'list'], ['export']]) {
        const r = await themis(file, ...args);
        assert.equal(r.code, 1, args.join(' '));
        assert.match(r.stderr, /in-memory store, which no daemon shares/);
      }
    });
  });
});

describe('policy flags that plugins add to themis policy add|set', { skip }, () => {
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'themis-policy-flags-'));
    redis = await startRedis();
  });
  after(async () => {
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the help lists each loaded plugin flag with its plugin; a plugin flag edits that plugin field', async () => {
    const file = configFile({ plugins: ['themis-plugin-ratelimit', 'themis-plugin-recipient-allowlist'] });
    const help = await ok(file, 'policy', 'add', '--help');
    assert.match(help.stdout, /Policy flags of the configuration's plugins:/);
    assert.match(help.stdout, /--ratelimit WINDOWS\s+the ratelimit field: windows such as 100\/1m,1000\/1h \(ratelimit\)/);
    assert.match(help.stdout, /--allow LIST\s+the allowlist field: recipients or @domains, comma-separated \(recipient-allowlist\)/);
    await ok(file, 'policy', 'add', 'inbound', '--allow', '@example.net, postmaster@example.com', '--ratelimit', '100/1m', '--count-rcpt');
    const p = await getPolicy(file, 'inbound');
    assert.deepEqual(p.allowlist, { recipients: ['@example.net', 'postmaster@example.com'] });
    assert.deepEqual(p.ratelimit, { windows: '100/1m', cost: 'recipient' });
    await ok(file, 'policy', 'set', 'inbound', '--allow', '@example.org');
    assert.deepEqual((await getPolicy(file, 'inbound')).allowlist, { recipients: ['@example.org'] }, 'set edits the field, keeping what it does not change');
  });

  it('a plugin flag whose plugin is not loaded is unknown (exit 2); an invalid value is refused as a daemon would (exit 1, nothing written)', async () => {
    const file = configFile({ plugins: ['themis-plugin-ratelimit'] });
    const unknown = await themis(file, 'policy', 'add', 'x', '--allow', '@example.net');
    assert.equal(unknown.code, 2, unknown.stderr);
    assert.match(unknown.stderr, /Unknown option '--allow'/);
    const bad = await themis(file, 'policy', 'add', 'x', '--ratelimit', 'lots', '--yes');
    assert.equal(bad.code, 1, bad.stderr);
    assert.match(bad.stderr, /ratelimit/);
    const none = await themis(file, 'policy', 'get', 'x', '--json');
    assert.notEqual(none.code, 0, 'nothing was written');
  });
});

