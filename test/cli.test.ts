// The `themis` command as a user runs it: start, answer an MTA, stop cleanly on SIGTERM; bad usage.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { endpointUrl } from '../src/cli/http.ts';
import { findConfig, loadConfig } from '../src/config.ts';
import { MilterClient } from '../src/milter/index.ts';
import { NO_PLUGIN_CONFIG, THEMIS_BIN, freePort, startThemis } from './helpers/themis.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from './helpers/postfix.ts';

const run = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [THEMIS_BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });

describe('themis command line', () => {
  it('--version prints the package version', () => {
    const r = run(['--version']);
    assert.equal(r.status, 0);
    assert.equal(r.stdout.trim(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
  });

  it('--help lists the commands of the configured plugins with their summaries', () => {
    const ratelimitConfig = fileURLToPath(new URL('../bench/postfix-configs/ratelimit.config.ts', import.meta.url));
    const withPlugins = run(['--help'], { THEMIS_CONFIG: ratelimitConfig });
    assert.equal(withPlugins.status, 0, withPlugins.stderr);
    assert.match(withPlugins.stdout, /Commands of the configured plugins:\n\s+limits\s+rate limits on the live store.*\(ratelimit\)/);
    const without = run(['--help'], { THEMIS_CONFIG: NO_PLUGIN_CONFIG });
    assert.equal(without.status, 0);
    assert.doesNotMatch(without.stdout, /Commands of the configured plugins/);
  });

  it('an unknown command or option is a usage error (exit 2)', () => {
    const a = run(['frobnicate']);
    assert.equal(a.status, 2);
    assert.match(a.stderr, /unknown command "frobnicate"/);
    const b = run(['start', '--no-such-option']);
    assert.equal(b.status, 2);
    assert.match(b.stderr, /--no-such-option/);
  });

  it('a bad --listen spec exits 1 with a coded error naming the spec', () => {
    const r = run(['start', '--config', NO_PLUGIN_CONFIG, '--listen', 'inet:notaport@127.0.0.1']);
    assert.equal(r.status, 1);
    assert.match(r.stdout, /THEMIS_ERR_MILTER_LISTEN_SPEC/);
    assert.match(r.stdout, /inet:notaport@127\.0\.0\.1/);
  });

  it('a busy port exits 1 and says so', async () => {
    const first = await startThemis(['--config', NO_PLUGIN_CONFIG]);
    const r = run(['start', '--config', NO_PLUGIN_CONFIG, '--listen', `inet:${first.port}@127.0.0.1`, '--http', 'off']);
    assert.equal(r.status, 1);
    assert.match(r.stdout, /EADDRINUSE/);
    assert.equal(await first.stop(), 0);
  });

  it('start serves MTA connections and SIGTERM stops it with exit 0', async (t) => {
    const themis = await startThemis(['--config', NO_PLUGIN_CONFIG]);
    t.after(() => themis.stop());
    const client = await MilterClient.connect(`inet:${themis.port}@127.0.0.1`);
    const r = await client.sendMessage({ connect: { hostname: 'h', address: '192.0.2.1' }, helo: 'h', from: 'a@example.org', to: ['b@example.test', 'c@example.test'], headers: [['Subject', 'x']], body: 'hi\r\n' });
    assert.equal(r.reply.action, 'accept');
    // A configuration with no plugin: no stage is asked for, not even RCPT.
    assert.deepEqual(r.recipients.map((x) => x?.action), [undefined, undefined]);
    assert.equal(client.negotiated.protocol & 0x3f, 0x3f, 'CONNECT, HELO, MAIL, RCPT, BODY and headers switched off');
    await client.quit();
    assert.equal(await themis.stop(), 0);
    assert.match(themis.output(), /"msg":"themis stopped"/);
  });

  it('--engine-only serves the accept-all application that answers every stage', async (t) => {
    const themis = await startThemis(['--engine-only']);
    t.after(() => themis.stop());
    const client = await MilterClient.connect(`inet:${themis.port}@127.0.0.1`);
    const r = await client.sendMessage({ connect: { hostname: 'h', address: '192.0.2.1' }, helo: 'h', from: 'a@example.org', to: ['b@example.test', 'c@example.test'] });
    assert.deepEqual(r.recipients.map((x) => x?.action), ['continue', 'continue']);
    assert.equal(client.negotiated.protocol, 0);
    await client.quit();
  });

  it('THEMIS_LISTEN chooses the socket when --listen is absent', async () => {
    const port = await freePort();
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [THEMIS_BIN, 'start', '--config', NO_PLUGIN_CONFIG, '--http', 'off'], { env: { ...process.env, THEMIS_LISTEN: `inet:${port}@127.0.0.1` }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const deadline = Date.now() + 15_000;
    while (!out.includes('themis started') && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 20));
    assert.match(out, new RegExp(`inet:${port}@127\\.0\\.0\\.1`));
    const client = await MilterClient.connect(`inet:${port}@127.0.0.1`);
    await client.quit();
    child.kill('SIGTERM');
    const code = await new Promise((r) => child.once('exit', r));
    assert.equal(code, 0);
  });

  it('SIGTERM lets an open SMTP session finish within the drain timeout', async () => {
    const themis = await startThemis(['--config', NO_PLUGIN_CONFIG, '--drain-timeout', '5000']);
    const client = await MilterClient.connect(`inet:${themis.port}@127.0.0.1`);
    await client.connect('h');
    const stopping = themis.stop();
    await new Promise((r) => setTimeout(r, 100));
    const r = await client.sendMessage({ from: 'a@x', to: ['b@x'] });
    assert.equal(r.reply.action, 'accept', 'the session in flight is still served while draining');
    await client.quit();
    assert.equal(await stopping, 0);
  });
});

describe('npm start in the checkout: the repository\'s themis.config.ts', () => {
  const REPO_CONFIG = fileURLToPath(new URL('../themis.config.ts', import.meta.url));
  const startLine = (out: string) => out.split('\n').map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return undefined; } }).find((l) => typeof l?.msg === 'string' && l.msg.startsWith('themis started'));

  it('is found in the checkout, on the default sockets with the in-memory store, and passes config check', async () => {
    const root = fileURLToPath(new URL('..', import.meta.url));
    assert.equal(findConfig(undefined, root), REPO_CONFIG);
    const c = await loadConfig(REPO_CONFIG);
    assert.equal(c.listen, undefined, 'inet:8440@127.0.0.1, the default');
    assert.equal(c.http, undefined, 'inet:8441@127.0.0.1, the default');
    assert.deepEqual(c.store, { type: 'memory' });
    const r = run(['config', 'check', '--config', REPO_CONFIG]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /4 plugin\(s\) \(monitor, spf, ratelimit, headers\), 3 policies, memory store/);
  });

  it('page URLs: the bound address, a wildcard as loopback, IPv6 in brackets, a UNIX socket named', () => {
    assert.equal(endpointUrl('inet:8441@127.0.0.1', '/dashboard'), 'http://127.0.0.1:8441/dashboard');
    assert.equal(endpointUrl('inet:8441@0.0.0.0', '/dashboard'), 'http://127.0.0.1:8441/dashboard');
    assert.equal(endpointUrl('inet6:8441@[::1]', '/dashboard'), 'http://[::1]:8441/dashboard');
    assert.equal(endpointUrl('inet6:8441@[::]', '/dashboard'), 'http://[::1]:8441/dashboard');
    assert.equal(endpointUrl('unix:/run/themis/http.sock', '/dashboard'), '/dashboard on unix:/run/themis/http.sock');
  });

  // No mail goes through it here: its SPF policy would query the system's DNS.
  it('demonstrates the built-in plugins, and the start line says where the dashboard is', async (t) => {
    const themis = await startThemis(['--config', REPO_CONFIG], {}, { http: true });
    t.after(() => themis.stop());
    const port = /^inet:(\d+)@127\.0\.0\.1$/.exec(themis.http!)![1];
    const url = `http://127.0.0.1:${port}/dashboard`;
    const line = startLine(themis.output());
    assert.ok(line, themis.output());
    assert.equal(line.msg, `themis started; monitor dashboard at ${url}`);
    assert.deepEqual(line.pages, { dashboard: url });
    assert.deepEqual(line.plugins, ['monitor', 'spf', 'ratelimit', 'headers']);
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(await themis.stop(), 0);
  });

  it('with a token the start line says to add it, never what it is; with the endpoint off, that there is no dashboard', async (t) => {
    const token = 'a-secret-token-of-32-characters!';
    const a = await startThemis(['--config', REPO_CONFIG, '--http-token', token], {}, { http: true });
    t.after(() => a.stop());
    const line = startLine(a.output())!;
    assert.match(String(line.msg), /^themis started; monitor dashboard at http:\/\/127\.0\.0\.1:\d+\/dashboard \(open it once with \?token=…\)$/);
    assert.ok(!a.output().includes(token), 'the token is not logged');
    assert.equal(await a.stop(), 0);
    const b = await startThemis(['--config', REPO_CONFIG]);
    t.after(() => b.stop());
    const off = startLine(b.output())!;
    assert.equal(off.msg, 'themis started; no monitor dashboard: the status endpoint is off');
    assert.equal(off.http, false);
    assert.equal(off.pages, undefined);
    assert.equal(await b.stop(), 0);
  });
});

describe('themis plugins and configuration errors', () => {
  const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

  it('themis plugins shows which plugins run at which stage, in order, with their priority', () => {
    const r = run(['plugins', '--config', fixture('allowlist.config.ts')]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /configuration: .*allowlist\.config\.ts/);
    assert.match(r.stdout, /^rcptTo +recipient-allowlist \(50\)$/m);
    const j = JSON.parse(run(['plugins', '--config', fixture('allowlist.config.ts'), '--json']).stdout);
    assert.deepEqual(j.stages, [{ stage: 'rcptTo', plugins: [{ name: 'recipient-allowlist', priority: 50 }] }]);
  });

  it('a configuration error stops start with exit 1 and a coded message naming the policy and field', () => {
    const r = run(['start', '--config', fixture('bad.config.ts'), '--listen', 'inet:0@127.0.0.1']);
    assert.equal(r.status, 1);
    assert.match(r.stdout, /THEMIS_ERR_POLICY_UNCLAIMED/);
    assert.match(r.stdout, /policies\[1\] \(outbound\): field spf is not claimed by any loaded plugin \(claimed: allowlist\)/);
    const missing = run(['plugins', '--config', fixture('no-such.config.ts')]);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /THEMIS_ERR_CONFIG: configuration .*no-such\.config\.ts: \(file\): no such file/);
  });
});

describe('themis check', () => {
  it('prints each answer and exits 3 when the milter refuses the message', async () => {
    const { createMilterServer, Action } = await import('../src/milter/index.ts');
    const server = createMilterServer({
      negotiation: { actions: Action.ADDHDRS },
      rcptTo: (_s, e) => (e.address === 'blocked@example.net' ? { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'blocked' } } : undefined),
      endOfMessage: (s, m) => {
        m.addHeader('X-Seen-Auth', s.macros.get('{auth_authen}') ?? 'none');
        return { action: 'tempfail', reply: { code: 451, enhanced: '4.7.1', text: 'later' } };
      },
    });
    await server.listen('inet:0@127.0.0.1');
    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [THEMIS_BIN, 'check', '--milter', `inet:${server.port}@127.0.0.1`, '--to', 'blocked@example.net', '--to', 'ok@example.net', '--auth', 'alice'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise((r) => child.once('exit', r));
    await server.close({ drainTimeout: 100 });
    assert.equal(code, 3, out);
    assert.match(out, /<blocked@example\.net> → reject \(550 5\.7\.1 blocked\)/);
    assert.match(out, /<ok@example\.net> → continue/);
    assert.match(out, /decision   tempfail at endOfMessage — 451 4\.7\.1 later/);
    assert.match(out, /modify     add header X-Seen-Auth: alice/);
  });

  it('exits 1 with a clear message when nothing listens', async () => {
    const port = await freePort();
    const r = run(['check', '--milter', `inet:${port}@127.0.0.1`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot reach the milter/);
  });
});

describe('themis start behind a real Postfix', { skip: postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}` }, () => {
  it('Postfix delivers through the daemon; no milter errors in its log', async () => {
    const themis = await startThemis(['--config', NO_PLUGIN_CONFIG]);
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    try {
      const r = await pf.swaks(['--from', 'a@example.org', '--to', 'rcpt@example.test', '--header', 'Subject: via themis start']);
      assert.equal(r.code, 0, r.stdout);
      const [m] = await pf.waitForDelivered(1);
      assert.ok(m.headers.some(([n, v]) => n === 'Subject' && v === 'via themis start'));
      assert.doesNotMatch(await pf.log(), /milter/i);
    } finally {
      await pf.stop();
      assert.equal(await themis.stop(), 0);
    }
  });
});
