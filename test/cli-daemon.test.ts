// The daemon and the administrator's commands as a user runs them: config check, status, reload on
// SIGHUP, the second signal, --workers refusing the memory store, check with a .eml file, --help.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { NO_PLUGIN_CONFIG, THEMIS_BIN, freePort, startThemis } from './helpers/themis.ts';

const TAG = fileURLToPath(new URL('./fixtures/plugins/tag.ts', import.meta.url));
const VERDICT = fileURLToPath(new URL('./fixtures/plugins/verdict.ts', import.meta.url));
const ALLOWLIST = fileURLToPath(new URL('../examples/recipient-allowlist/src/index.ts', import.meta.url));
const run = (args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string) => spawnSync(process.execPath, [THEMIS_BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000, cwd });

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'themis-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function waitFor(what: string, predicate: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('themis config check', () => {
  it('a valid configuration: exit 0, with its hash, plugins and policies', (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'themis.config.yaml');
    writeFileSync(file, `plugins:\n  - ${TAG}\npolicies:\n  - name: every\n    tag: { value: x }\n`);
    const r = run(['config', 'check'], {}, dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`configuration ${file} is valid: hash [0-9a-f]{16}, 1 plugin\\(s\\) \\(tag\\), 1 policy, memory store`));
    const j = run(['config', 'check', '--json', '--config', file]);
    assert.deepEqual({ ...JSON.parse(j.stdout), hash: 'h' }, { valid: true, file, hash: 'h', plugins: ['tag'], policies: 1, store: 'memory' });
  });

  it('an invalid configuration: exit 1, every problem on stderr with file and path; JSON lists them', (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ plugins: [TAG], policies: [{ name: 'a', tag: { value: 3 } }, { name: 'b', spf: { mode: 'strict' } }] }));
    const r = run(['config', 'check', '--config', file]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /THEMIS_ERR_POLICIES_INVALID/);
    assert.ok(r.stderr.includes(file), 'names the file');
    assert.match(r.stderr, /policies\[0\]\.tag\.value \(a\): Invalid input: expected string, received number; found 3/);
    assert.match(r.stderr, /policies\[1\] \(b\): field spf is not claimed by any loaded plugin/);
    const j = JSON.parse(run(['config', 'check', '--config', file, '--json']).stdout);
    assert.equal(j.valid, false);
    assert.equal(j.problems.length, 2);
  });

  it('THEMIS_CONFIG names the file; a missing file is exit 1', (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'x.json');
    writeFileSync(file, '{}');
    assert.equal(run(['config', 'check'], { THEMIS_CONFIG: file }).status, 0);
    const r = run(['config', 'check', '--config', join(dir, 'nope.json')]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /THEMIS_ERR_CONFIG: configuration .*nope\.json: \(file\): no such file/);
  });

  it("the original Themis's environment names still work: THEMIS_CFG, THEMIS_REDIS, THEMIS_REDISPASSWD", async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'x.json');
    writeFileSync(file, '{}');
    const r = run(['config', 'check'], { THEMIS_CFG: file, THEMIS_CONFIG: '' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes(file));
    const { envRedisUrl, envRedisPassword, envConfigPath } = await import('../src/cli/env.ts');
    assert.equal(envRedisUrl({ THEMIS_REDIS: 'redis.example' }), 'redis://redis.example:6379/0');
    assert.equal(envRedisUrl({ THEMIS_REDIS: 'redis.example', THEMIS_REDIS_URL: 'redis://other:1' }), 'redis://other:1', 'the new name wins');
    assert.equal(envRedisPassword({ THEMIS_REDISPASSWD: 's3cret' }), 's3cret');
    assert.equal(envConfigPath({ THEMIS_CONFIG: 'a', THEMIS_CFG: 'b' }), 'a');
  });

  it('resync with the in-memory store explains that SIGHUP is the way', (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'themis.config.json'), '{}');
    const r = run(['config', 'resync'], {}, dir);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /in-memory store.*SIGHUP/);
  });
});

describe('themis start: reload, status, signals, workers', () => {
  it('SIGHUP reloads; themis status shows the hash, load time and generation; a refused reload is reported', async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'themis.config.json');
    writeFileSync(file, JSON.stringify({ reload: { watch: false }, plugins: [TAG], policies: [{ name: 'every', tag: { value: 'one' } }] }));
    const themis = await startThemis(['--config', file], {}, { http: true });
    t.after(() => themis.stop());
    const status = () => JSON.parse(run(['status', '--http', themis.http!, '--json']).stdout);
    const s1 = status();
    assert.equal(s1.config.generation, 1);
    assert.match(s1.config.hash, /^[0-9a-f]{16}$/);
    assert.match(themis.output(), new RegExp(`"hash":"${s1.config.hash}".*"msg":"themis started"`));

    writeFileSync(file, JSON.stringify({ reload: { watch: false }, plugins: [TAG], policies: [{ name: 'every', tag: { value: 'two' } }] }));
    themis.child.kill('SIGHUP');
    await waitFor('reload', () => themis.output().includes('"msg":"configuration reloaded"'));
    const s2 = status();
    assert.equal(s2.config.generation, 2);
    assert.notEqual(s2.config.hash, s1.config.hash);
    assert.ok(Date.parse(s2.config.loadedAt) >= Date.parse(s1.config.loadedAt));

    writeFileSync(file, '{ "plugins": [');
    themis.child.kill('SIGHUP');
    await waitFor('refusal', () => themis.output().includes('THEMIS_ERR_RELOAD_REFUSED'));
    const s3 = status();
    assert.equal(s3.config.hash, s2.config.hash, 'the old configuration still serves');
    assert.match(s3.config.lastReloadError.message, /cannot be read/);
    const text = run(['status', '--http', themis.http!]);
    assert.equal(text.status, 0);
    assert.match(text.stdout, new RegExp(`hash        ${s2.config.hash}, loaded .*, generation 2`));
    assert.match(text.stdout, /last reload refused at/);
    const metrics = await fetch(`http://${themis.http!.replace(/^inet:(\d+)@(.*)$/, '$2:$1')}/metrics`).then((r) => r.text());
    assert.match(metrics, new RegExp(`themis_config_info\\{hash="${s2.config.hash}"\\} 1`));
    assert.match(metrics, /themis_config_reloads_total\{trigger="SIGHUP",result="refused"\} 1/);
  });

  it("bounds V8's heap for a daemon, in the same process; the administrator's flags win; THEMIS_NODE_HEAP=v8 keeps V8's sizing", async (t) => {
    const resources = async (env: NodeJS.ProcessEnv) => {
      const themis = await startThemis(['--config', NO_PLUGIN_CONFIG], env, { http: true });
      t.after(() => themis.stop());
      const status = JSON.parse(run(['status', '--http', themis.http!, '--json']).stdout);
      // The same pid: the flags were applied by replacing the process, not by a child a supervisor would not see.
      assert.equal(status.pid, themis.child.pid);
      await themis.stop();
      return status.resources as { heapFlags: string[]; heapLimitBytes: number };
    };
    const MB = 1024 * 1024;
    const bounded = await resources({});
    assert.deepEqual(bounded.heapFlags.sort(), ['--max-old-space-size=1024', '--max-semi-space-size=16']);
    // V8's limit is the old space plus the young generation (three semi-spaces).
    assert.equal(bounded.heapLimitBytes, (1024 + 3 * 16) * MB);

    const own = await resources({ NODE_OPTIONS: '--max_old_space_size=300' });
    assert.deepEqual(own.heapFlags.sort(), ['--max-semi-space-size=16', '--max_old_space_size=300']);
    assert.equal(own.heapLimitBytes, (300 + 3 * 16) * MB);

    const v8 = await resources({ THEMIS_NODE_HEAP: 'v8' });
    assert.deepEqual(v8.heapFlags, []);
    assert.notEqual(v8.heapLimitBytes, bounded.heapLimitBytes, `V8's own limit (${v8.heapLimitBytes / MB} MB) differs from Themis's`);
  });

  it('status: exit 1 when no daemon answers', async () => {
    const r = run(['status', '--http', `inet:${await freePort()}@127.0.0.1`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /no answer from/);
  });

  it('a second signal exits at once, without waiting for open connections', async (t) => {
    const themis = await startThemis(['--config', NO_PLUGIN_CONFIG, '--drain-timeout', '60000']);
    t.after(() => themis.stop());
    // An open MTA connection keeps the first stop draining.
    const { connect } = await import('node:net');
    const socket = connect(themis.port, '127.0.0.1');
    t.after(() => socket.destroy());
    await new Promise((r) => socket.once('connect', r));
    await waitFor('the connection', () => true);
    const exited = new Promise<number | null>((r) => themis.child.once('exit', (code) => r(code)));
    themis.child.kill('SIGTERM');
    await waitFor('draining', () => themis.output().includes('"msg":"stopping: draining connections"'));
    const started = Date.now();
    themis.child.kill('SIGTERM');
    assert.equal(await exited, 1);
    assert.ok(Date.now() - started < 5_000);
    assert.match(themis.output(), /second signal: exiting now/);
  });

  it('--workers with the in-memory store is refused with a clear error', async (t) => {
    const r = run(['start', '--workers', '2', '--listen', `inet:${await freePort()}@127.0.0.1`, '--http', 'off'], {}, tempDir(t));
    assert.equal(r.status, 1);
    assert.match(r.stdout, /THEMIS_ERR_WORKERS_MEMORY_STORE/);
    assert.match(r.stdout, /needs a shared store/);
  });

  it('pretty log lines when asked (log.pretty), JSON otherwise', async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'themis.config.json'), JSON.stringify({ log: { pretty: true } }));
    const port = await freePort();
    const child = spawn(process.execPath, [THEMIS_BIN, 'start', '--listen', `inet:${port}@127.0.0.1`, '--http', 'off'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    t.after(() => child.kill('SIGKILL'));
    await waitFor('start', () => out.includes('themis started'));
    assert.match(out, /INFO.*themis started/);
    assert.doesNotMatch(out, /"msg":/);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  });
});

describe('themis check with a message file', () => {
  it('--local builds the kernel from the configuration and prints the verdict, modifications and trace', (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'themis.config.json'), JSON.stringify({ plugins: [TAG], policies: [{ name: 'local', match: { source: '@example.org' }, tag: { value: 'checked' } }, { name: 'never', match: { source: '@elsewhere.example' }, tag: { value: 'x', reject: true } }] }));
    const eml = join(dir, 'm.eml');
    writeFileSync(eml, 'From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: a folded\n subject\n\nHello\n');
    const r = run(['check', eml, '--local', '--client-ip', '192.0.2.7'], {}, dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /milter     in-process kernel/);
    assert.match(r.stdout, /decision   accept at endOfMessage/);
    assert.match(r.stdout, /modify     add header X-Themis-Policy: checked/);
    assert.match(r.stdout, /policies   local/);
    assert.match(r.stdout, /trace      endOfMessage tag \(0\) → continue/);
    const j = JSON.parse(run(['check', eml, '--local', '--json', '--from', 'x@elsewhere.example', '--to', 'y@example.net'], {}, dir).stdout);
    assert.equal(j.reply.action, 'reject');
    assert.deepEqual(j.trace.policies, ['never']);
    assert.equal(j.trace.winner.plugin, 'tag');
  });

  it('--local prints a plugin mistake with the code the harness fails on (a 550 with a tempfail); recipients refused at RCPT are not "accepted"', (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'themis.config.json'), JSON.stringify({ plugins: [VERDICT], policies: [{ name: 'odd', verdict: { action: 'tempfail', reason: 'x', reply: { code: 550, enhanced: '5.7.1', text: 'no' } } }] }));
    const r = run(['check', '--local', '--from', 'a@example.org', '--to', 'b@example.net'], {}, dir);
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stdout, /decision   tempfail at endOfMessage/);
    assert.match(r.stdout, /trace      endOfMessage verdict \(0\) → tempfail — x \[THEMIS_ERR_HOOK_BAD_REPLY\]/);
    assert.match(r.stdout, /mistake    THEMIS_ERR_HOOK_BAD_REPLY: plugin verdict answered endOfMessage with a reply the MTA would refuse \(code 550 does not fit a tempfail \(4xx\)\)/);
    const j = JSON.parse(run(['check', '--local', '--json', '--from', 'a@example.org', '--to', 'b@example.net'], {}, dir).stdout);
    assert.deepEqual(j.mistakes.map((m: { code: string }) => m.code), ['THEMIS_ERR_HOOK_BAD_REPLY']);

    writeFileSync(join(dir, 'themis.config.json'), JSON.stringify({ plugins: [ALLOWLIST], policies: [{ name: 'only-org', allowlist: { recipients: ['@example.org'] } }] }));
    const rcpt = run(['check', '--local', '--from', 'a@example.org', '--to', 'b@example.net'], {}, dir);
    assert.equal(rcpt.status, 3, rcpt.stderr);
    assert.match(rcpt.stdout, /decision   reject at rcptTo/);
    assert.match(rcpt.stdout, /winner     \(none for the message: its recipients were refused one by one at rcptTo, see the trace\)/);
    assert.doesNotMatch(rcpt.stdout, /none: accepted/);
  });

  it('usage errors: a bad client IP, --local with --server, two files', () => {
    assert.equal(run(['check', '--client-ip', 'nope']).status, 2);
    assert.equal(run(['check', '--local', '--server', 'inet:1@127.0.0.1']).status, 2);
    assert.equal(run(['check', 'a.eml', 'b.eml']).status, 2);
    assert.equal(run(['check', '/nonexistent.eml', '--local']).status, 1);
  });
});

describe('--help on every command', () => {
  for (const cmd of [['start'], ['status'], ['config'], ['config', 'check'], ['config', 'resync'], ['policy'], ['policy', 'list'], ['policy', 'test'], ['plugins'], ['check'], ['init']]) {
    it(`themis ${cmd.join(' ')} --help`, () => {
      const r = run([...cmd, '--help']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^Usage: themis /);
    });
  }
});
