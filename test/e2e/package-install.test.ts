// The packages as users get them: every package of the checkout is built and packed; the tarballs hold
// only what a user needs (no tests, benchmarks, fixtures or TypeScript sources); installed from those
// tarballs into a fresh project (no link back to the checkout), the installed `themis` runs `init`,
// `config check` and `start` behind a real Postfix — a message delivered with the headers the plugins
// add, recipients refused by the example third-party plugin, loaded by package name from its tarball;
// installed globally (`npm install -g`, isolated prefix), `themis` checks a configuration kept in a
// directory without node_modules (like /etc/themis) whose plugins resolve from the global install, or
// from that directory when a third-party plugin is installed there.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, realpathSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CHECKOUT, buildAndPack, hiddenLockfile, installGlobal, installProject, isolatedEnv, linksOutside, npm, run, tarList, tarRead, type Tarballs } from '../helpers/pack.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type DeliveredMessage, type PostfixInstance } from '../helpers/postfix.ts';
import { freePort, waitUntil } from '../helpers/process.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns.ts';

const ROOT = 'themis-milter';
const EXAMPLE = 'themis-plugin-recipient-allowlist';
const BUILTIN = ['themis-plugin-dkim', 'themis-plugin-dmarc', 'themis-plugin-headers', 'themis-plugin-monitor', 'themis-plugin-predict', 'themis-plugin-ratelimit', 'themis-plugin-spf'];
// also packed and installed: the second example plugin and the scaffold (npm init themis-plugin)
const OTHERS = ['themis-plugin-greylist', 'create-themis-plugin'];
const ALL = [ROOT, ...BUILTIN, EXAMPLE, ...OTHERS];

const npmVersion = await run('npm', ['--version'], { env: isolatedEnv(), timeoutMs: 30_000 });
const skip = npmVersion.code !== 0 ? `npm not available: ${npmVersion.stderr.trim()}` : false;
if (skip) console.log(`# package-install tests skipped: ${skip}`);
const postfixSkip = postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}`;
if (!skip && postfixSkip) console.log(`# package-install: the Postfix part is skipped: ${postfixSkip}`);

const header = (m: DeliveredMessage, name: string): string[] => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

/** Runs an installed `themis` bin with this Node (not the checkout's bin, nothing inherited from npm test). */
function themis(bin: string, args: string[], cwd: string) {
  return run(process.execPath, [bin, ...args], { cwd, env: isolatedEnv(), timeoutMs: 60_000 });
}

describe('packages installed from their tarballs', { skip, timeout: 240_000 }, () => {
  let root: string;
  let tarballs: Tarballs;
  const children = new Set<ChildProcess>();
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'themis-pkg-'));
    tarballs = await buildAndPack(join(root, 'pack'));
  }, { timeout: 180_000 });

  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
    if (root && process.env.THEMIS_KEEP_TMP !== '1') await rm(root, { recursive: true, force: true });
    else if (root) console.log(`# THEMIS_KEEP_TMP=1: kept ${root}`);
  });

  const tgz = (name: string): string => {
    const t = tarballs.get(name);
    assert.ok(t && existsSync(t), `a tarball of ${name} (packed: ${[...tarballs.keys()].join(', ')})`);
    return t;
  };

  it('every package is packed, and its tarball holds only what a user needs', async () => {
    assert.deepEqual([...tarballs.keys()].sort(), [...ALL].sort());
    for (const name of ALL) {
      const files = await tarList(tgz(name));
      const pkg = JSON.parse(await tarRead(tgz(name), 'package/package.json')) as { name: string; exports?: unknown; bin?: Record<string, string>; types?: string };
      assert.equal(pkg.name, name);
      const allowed = /^package\/(package\.json|README\.md|LICENSE|dist\/.+|bin\/.+|contrib\/.+|dashboard\/.+|docs\/.+\.md)$/;
      const stray = files.filter((f) => !allowed.test(f));
      assert.deepEqual(stray, [], `${name}: files outside dist/, bin/, contrib/, dashboard/, docs/*.md, README.md, package.json`);
      const dev = files.filter((f) => /(^|\/)(test|tests|__tests__|bench|fixtures?|src|coverage)\//.test(f) || /\.test\.[cm]?[jt]s$/.test(f) || /\.tsbuildinfo$/.test(f));
      assert.deepEqual(dev, [], `${name}: tests, benchmarks, fixtures or sources in the tarball`);
      const ts = files.filter((f) => /\.[cm]?ts$/.test(f) && !/\.d\.[cm]?ts$/.test(f));
      assert.deepEqual(ts, [], `${name}: TypeScript sources in the tarball (only compiled JS and .d.ts belong there)`);
      // every file the package's exports, types and bin point at (bar the `themis-source` condition, which
      // selects the sources inside a checkout) is in the tarball
      const targets = new Set<string>();
      const collect = (v: unknown, condition?: string): void => {
        if (typeof v === 'string') {
          if (condition !== 'themis-source') targets.add(v);
        } else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) collect(x, k.startsWith('.') ? condition : k);
      };
      collect(pkg.exports);
      collect(pkg.bin);
      if (pkg.types) targets.add(pkg.types);
      for (const t of targets) assert.ok(files.includes(join('package', t)), `${name}: ${t} (named in package.json) is not in the tarball`);
      assert.ok(files.includes('package/dist/index.js'), `${name}: dist/index.js`);
      assert.ok(files.includes('package/README.md'), `${name}: README.md`);
    }
    const root = await tarList(tgz(ROOT));
    // The README links into docs/: they ship with it, so the links work in the installed package too.
    for (const f of ['package/bin/themis.js', 'package/dist/cli/main.js', 'package/contrib/systemd/themis.service', 'package/docs/README.md', 'package/docs/errors.md', 'package/docs/reference/store.md']) assert.ok(root.includes(f), `${ROOT}: ${f}`);
    const monitor = await tarList(tgz('themis-plugin-monitor'));
    assert.ok(monitor.includes('package/dashboard/index.html'), 'the monitor dashboard is in its tarball');
  });

  describe('installed into a fresh project', () => {
    let project: string;
    let bin: string;
    let pf: PostfixInstance | undefined;
    let dns: DnsServer | undefined;

    before(async () => {
      project = join(root, 'project');
      await installProject(project, ALL.map(tgz));
      bin = join(project, 'node_modules', '.bin', 'themis');
      cleanups.push(async () => {
        await pf?.stop();
        await dns?.close();
      });
    }, { timeout: 180_000 });

    it('is a copy: real directories inside the project, no link or path back to the checkout', () => {
      for (const name of ALL) {
        const dir = join(project, 'node_modules', name);
        assert.ok(lstatSync(dir).isDirectory() && !lstatSync(dir).isSymbolicLink(), `${dir} is a real directory`);
        const real = realpathSync(dir);
        assert.ok(!relative(realpathSync(project), real).startsWith('..'), `${real} is inside the project`);
      }
      assert.deepEqual(linksOutside(project, join(project, 'node_modules')), []);
      assert.ok(!realpathSync(bin).startsWith(CHECKOUT + '/'), `the themis bin ${realpathSync(bin)} is not the checkout's`);
      assert.equal(realpathSync(bin), realpathSync(join(project, 'node_modules', ROOT, 'bin', 'themis.js')));
      const lock = hiddenLockfile(join(project, 'node_modules'));
      assert.ok(lock.length > 0, 'npm wrote node_modules/.package-lock.json');
      assert.ok(!lock.includes(CHECKOUT), `the installed tree names no path of the checkout (${CHECKOUT})`);
      assert.ok(!existsSync(join(project, 'node_modules', ROOT, 'src')), 'no sources installed');
    });

    it('themis --version, init and config check work from the installed copy', async () => {
      const version = JSON.parse(readFileSync(join(CHECKOUT, 'package.json'), 'utf8')).version as string;
      const v = await themis(bin, ['--version'], project);
      assert.equal(v.code, 0, v.stderr);
      assert.equal(v.stdout.trim(), version);

      const init = await themis(bin, ['init'], project);
      assert.equal(init.code, 0, init.stderr);
      const config = join(project, 'themis.config.ts');
      assert.ok(existsSync(config), 'themis init wrote themis.config.ts');
      assert.match(readFileSync(config, 'utf8'), /from 'themis-milter'/);

      const check = await themis(bin, ['config', 'check'], project);
      assert.equal(check.code, 0, `themis config check of the starter configuration:\n${check.stdout}${check.stderr}`);
      assert.match(check.stdout, /is valid/);
    });

    it('themis start behind a real Postfix: a message delivered with the plugins’ headers, recipients refused by the example plugin', { skip: postfixSkip, timeout: 120_000 }, async () => {
      // SPF looks the sender's domain up on a loopback DNS server: nothing leaves 127.0.0.0/8.
      dns = await startDnsServer({ 'good.example': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] } });
      const dir = join(project, 'etc');
      await mkdir(dir);
      const config = join(dir, 'themis.config.ts');
      // every plugin by package name, as a user writes it; the example third-party plugin among them
      await writeFile(
        config,
        `import { defineConfig } from 'themis-milter';

export default defineConfig({
  store: { type: 'memory' },
  plugins: [
    { plugin: 'themis-plugin-spf', options: { dnsServers: [${JSON.stringify(dns.address)}], dnsTimeout: 300, deadline: 2_000, authservId: 'mx.themis.test' } },
    'themis-plugin-ratelimit',
    'themis-plugin-headers',
    'themis-plugin-monitor',
    'themis-plugin-predict',
    { plugin: '${EXAMPLE}', options: { logRefused: true } },
  ],
  policies: [
    { name: 'blocked', priority: 1, match: { source: '@blocked.example' }, ratelimit: { windows: '0/1m', by: 'sender' }, stopHere: true },
    {
      name: 'installed',
      priority: 5,
      spf: { mailFrom: { fail: 'reject' } },
      ratelimit: { windows: '1000/1m', by: 'sender' },
      allowlist: { recipients: ['bob@example.test', 'postmaster@example.test'], text: 'Not on the installed allowlist' },
      headers: [{ name: 'mark', then: [{ add: 'X-Themis-Installed', value: '{policy} spf={spf.result}' }] }],
    },
  ],
});
`,
      );
      // config check from elsewhere: the plugins resolve from the configuration's directory upwards
      const check = await themis(bin, ['config', 'check', '--config', config], root);
      assert.equal(check.code, 0, `${check.stdout}${check.stderr}`);
      assert.match(check.stdout, /6 plugin\(s\)/);

      const port = await freePort();
      const http = await freePort();
      const child = spawn(process.execPath, [bin, 'start', '--config', config, '--listen', `inet:${port}@127.0.0.1`, '--http', `inet:${http}@127.0.0.1`], {
        cwd: dir,
        env: isolatedEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.add(child);
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (out += d));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      cleanups.push(async () => {
        if (child.exitCode === null) child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      });
      assert.ok(await waitUntil(() => out.includes('"msg":"themis started') || child.exitCode !== null, 20_000), `themis did not start:\n${out}`);
      assert.equal(child.exitCode, null, `the installed themis exited:\n${out}`);

      pf = await startPostfix({ milter: `inet:127.0.0.1:${port}`, milterDefaultAction: 'tempfail' });
      const swaks = (args: string[]) => pf!.swaks(['--helo', 'client.example.org', ...args]);

      // (Postfix relays only to example.test: every recipient is there, the allowlist tells them apart)
      // delivered: one recipient on the allowlist, one refused at RCPT, the message goes on to the first
      const ok = await swaks(['--from', 'alice@good.example', '--to', 'bob@example.test,stranger@example.test', '--header', 'Subject: installed delivery']);
      assert.match(ok.stdout, /<\*\* 550 5\.7\.1 Not on the installed allowlist/, ok.stdout);
      assert.match(ok.stdout, /<-  250 2\.0\.0 Ok: queued/, ok.stdout);
      const [m] = await pf.waitForDelivered(1);
      assert.deepEqual(header(m, 'Subject'), ['installed delivery']);
      assert.deepEqual(m.envelopeTo, ['bob@example.test']);
      assert.deepEqual(header(m, 'X-Themis-Installed'), ['installed spf=pass'], 'the headers plugin, reading the spf plugin’s note');
      assert.equal(header(m, 'Received-SPF').length, 1, 'the spf plugin added Received-SPF');
      assert.match(header(m, 'Received-SPF')[0], /^pass\b/);

      // refused: the only recipient is off the allowlist
      const refused = await swaks(['--from', 'alice@good.example', '--to', 'stranger@example.test', '--header', 'Subject: installed refusal']);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stdout, /<\*\* 550 5\.7\.1 Not on the installed allowlist/);
      // refused: a rate limit of 0
      const limited = await swaks(['--from', 'someone@blocked.example', '--to', 'bob@example.test', '--header', 'Subject: installed limit']);
      assert.notEqual(limited.code, 0);
      assert.match(limited.stdout, /<\*\* [45]\d\d /);

      await new Promise((r) => setTimeout(r, 1000));
      const delivered = await pf.delivered();
      assert.deepEqual(delivered.map((x) => header(x, 'Subject')[0]), ['installed delivery'], 'nothing refused was delivered');
      assert.match(out, /"msg":"decision"/, 'the installed daemon logged its decisions');
      assert.match(out, /recipient not on the allowlist of policy installed/);
      assert.match(out, /"msg":"recipient refused"/, 'the example plugin’s own log line (logRefused)');

      // the monitor plugin's dashboard is served from the installed package (its dashboard/ directory)
      const dash = await fetch(`http://127.0.0.1:${http}/dashboard`);
      assert.equal(dash.status, 200, 'the monitor dashboard is served');
      assert.match(await dash.text(), /<html/i);

      child.kill('SIGTERM');
      assert.equal(await exited, 0, `the installed themis stopped cleanly:\n${out.split('\n').slice(-10).join('\n')}`);
    });
  });

  describe('a third-party plugin made the way docs/reference/plugin-api.md teaches', () => {
    it('installs from its tarball beside themis-milter alone and loads by package name', { timeout: 120_000 }, async () => {
      const project = join(root, 'third-party');
      await installProject(project, [tgz(ROOT), tgz(EXAMPLE)]);
      assert.deepEqual(linksOutside(project, join(project, 'node_modules')), []);
      const bin = join(project, 'node_modules', '.bin', 'themis');
      await writeFile(
        join(project, 'themis.config.ts'),
        `import { defineConfig } from 'themis-milter';\nexport default defineConfig({ plugins: ['${EXAMPLE}'], policies: [{ name: 'only', allowlist: { recipients: ['@example.test'] } }] });\n`,
      );
      const check = await themis(bin, ['config', 'check'], project);
      assert.equal(check.code, 0, `${check.stdout}${check.stderr}`);
      assert.match(check.stdout, /recipient-allowlist/);
      const refused = await themis(bin, ['check', '--local', '--to', 'stranger@example.net', '--json'], project);
      assert.equal(refused.code, 3, `themis check --local of a recipient off the list: exit 3 (refused)\n${refused.stdout}${refused.stderr}`);
      const accepted = await themis(bin, ['check', '--local', '--to', 'bob@example.test', '--json'], project);
      assert.equal(accepted.code, 0, `${accepted.stdout}${accepted.stderr}`);
    });
  });

  describe('installed globally (npm install -g, isolated prefix)', () => {
    let prefix: string;
    let bin: string;

    before(async () => {
      prefix = join(root, 'global');
      await installGlobal(prefix, ALL.map(tgz));
      bin = join(prefix, 'bin', 'themis');
    }, { timeout: 180_000 });

    it('gives a themis command, a copy with no link back to the checkout', async () => {
      assert.ok(existsSync(bin), `${bin} exists`);
      const lib = join(prefix, 'lib', 'node_modules');
      assert.deepEqual((await readdir(lib)).filter((n) => !n.startsWith('.')).sort(), [...ALL].sort());
      assert.deepEqual(linksOutside(prefix, lib), []);
      assert.equal(realpathSync(bin), realpathSync(join(lib, ROOT, 'bin', 'themis.js')));
      const v = await run(bin, ['--version'], { cwd: prefix, env: isolatedEnv() });
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stdout, /^\d+\.\d+\.\d+/);
    });

    it('a configuration in a directory without node_modules (like /etc/themis) imports themis-milter and names globally installed plugins', async () => {
      const etc = join(root, 'etc-themis');
      await mkdir(etc);
      const config = join(etc, 'themis.config.ts');
      await writeFile(
        config,
        `import { defineConfig } from 'themis-milter';

export default defineConfig({
  store: { type: 'memory' },
  plugins: ['themis-plugin-ratelimit', 'themis-plugin-spf', 'themis-plugin-headers', 'themis-plugin-monitor', 'themis-plugin-predict', '${EXAMPLE}'],
  policies: [
    { name: 'limits', ratelimit: { windows: '100/1m', by: 'sender' } },
    { name: 'allow', allowlist: { recipients: ['@example.test'] } },
  ],
});
`,
      );
      assert.ok(!existsSync(join(etc, 'node_modules')));
      const check = await themis(bin, ['config', 'check', '--config', config], etc);
      assert.equal(check.code, 0, `themis config check with plugins from the global install:\n${check.stdout}${check.stderr}`);
      assert.match(check.stdout, /6 plugin\(s\)/);
      const refused = await themis(bin, ['check', '--local', '--config', config, '--to', 'stranger@example.net'], etc);
      assert.equal(refused.code, 3, `${refused.stdout}${refused.stderr}`);

      // also through the bin as a user calls it: PATH, the global prefix's bin first
      const viaPath = await run('themis', ['config', 'check', '--config', config], { cwd: etc, env: isolatedEnv({ PATH: `${join(prefix, 'bin')}:${isolatedEnv().PATH}` }) });
      assert.equal(viaPath.code, 0, `${viaPath.stdout}${viaPath.stderr}`);
    });

    it('a third-party plugin installed in the configuration’s directory loads with the global themis', { timeout: 120_000 }, async () => {
      const etc = join(root, 'etc-third-party');
      await mkdir(etc);
      await writeFile(join(etc, 'package.json'), JSON.stringify({ name: 'etc-themis', private: true, type: 'module' }) + '\n');
      // only the plugin here: its peer themis-milter is the global one (not fetched from a registry)
      const r = await npm(['install', '--no-audit', '--no-fund', '--prefer-offline', '--legacy-peer-deps', '--no-save', tgz(EXAMPLE)], etc);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(!existsSync(join(etc, 'node_modules', ROOT)), 'no second themis-milter in the configuration’s directory');
      const config = join(etc, 'themis.config.ts');
      await writeFile(
        config,
        `import { defineConfig } from 'themis-milter';\nexport default defineConfig({ plugins: ['themis-plugin-ratelimit', '${EXAMPLE}'], policies: [{ name: 'allow', allowlist: { recipients: ['@example.test'] } }] });\n`,
      );
      const check = await themis(bin, ['config', 'check', '--config', config], etc);
      assert.equal(check.code, 0, `${check.stdout}${check.stderr}`);
    });
  });
});
