// The Debian package, end to end on this machine: contrib/deb/build.sh builds themis_<version>_<arch>.deb;
// `dpkg -i` installs it (the `themis` user, /etc/themis, /etc/default/themis, the unit; nothing started);
// the daemon runs exactly as the unit's ExecStart would (its User=, Group=, WorkingDirectory=, UMask=,
// Environment= and EnvironmentFile=), on a UNIX socket inside a throwaway Postfix's queue directory, and
// Postfix delivers a message through it; /usr/bin/themis answers every subcommand; an upgrade keeps the
// edited conffiles; `dpkg --purge` leaves nothing behind.
//
// It installs a real package, so it only runs as root, with dpkg-deb and Postfix, and only when nothing
// named themis is on the machine yet (package, user, group or files): it never touches a Themis it did
// not install. THEMIS_SKIP_DEB=1 skips it. THEMIS_DEB_KEEP=DIR keeps the built .deb in DIR.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { appendFile, chmod, chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type DeliveredMessage, type PostfixInstance } from '../helpers/postfix.ts';
import { freePort, waitUntil } from '../helpers/process.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
const UNIT = '/lib/systemd/system/themis.service';
const CONFIG = '/etc/themis/themis.config.ts';
const DEFAULTS = '/etc/default/themis';
const SPOOL_DIR = '/var/spool/postfix/themis';
/** Everything of ours that must not exist before the test, and must be gone after the purge. */
const OURS = ['/usr/lib/themis', '/etc/themis', DEFAULTS, '/usr/bin/themis', UNIT, '/run/themis'];

const sh = (cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeout ?? 120_000, ...opts });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? `\n${r.error.message}` : '') };
};
const which = (name: string) => sh('sh', ['-c', `command -v ${name}`]).code === 0;
const getent = (db: 'passwd' | 'group', name: string) => {
  const r = sh('getent', [db, name]);
  return r.code === 0 ? r.stdout.trim().split(':') : undefined;
};
const dpkgStatus = () => sh('dpkg-query', ['-W', '-f=${Status} ${Version}', 'themis']);
const installed = () => /install ok installed/.test(dpkgStatus().stdout);
const known = () => dpkgStatus().code === 0 && !/not-installed/.test(dpkgStatus().stdout);

function skipReason(): string | undefined {
  if (process.env.THEMIS_SKIP_DEB === '1') return 'THEMIS_SKIP_DEB=1';
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return 'installing a .deb needs root on Linux';
  for (const bin of ['dpkg', 'dpkg-deb', 'dpkg-query', 'setpriv', 'getent']) if (!which(bin)) return `${bin} not found`;
  if (!postfixAvailable()) return `postfix not available: ${postfixUnavailableReason()}`;
  if (!existsSync(join(ROOT, 'node_modules/node/bin/node'))) return 'node_modules/node/bin/node (the Node.js 24 the package carries) is missing: npm install';
  if (known()) return `a package named themis is already known to dpkg (${dpkgStatus().stdout.trim()}); not touching it`;
  if (getent('passwd', 'themis') || getent('group', 'themis')) return 'a themis user or group exists already; not touching it';
  for (const p of [...OURS, SPOOL_DIR]) if (existsSync(p)) return `${p} exists already; not touching it`;
  return undefined;
}

const skip = skipReason();
if (skip) console.log(`# skipping the .deb end-to-end test: ${skip}`);

/** The [Service] section of a unit: key -> values, in order (systemd syntax: `#`/`;` comments, `\` continuations). */
function serviceSection(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const line of text.replace(/\\\n/g, ' ').split('\n')) {
    const l = line.trim();
    if (l === '' || l.startsWith('#') || l.startsWith(';')) continue;
    if (l.startsWith('[')) {
      section = l;
      continue;
    }
    if (section !== '[Service]') continue;
    const eq = l.indexOf('=');
    const key = l.slice(0, eq).trim();
    const value = l.slice(eq + 1).trim();
    out.set(key, [...(out.get(key) ?? []), value]);
  }
  return out;
}

/** Splits a command line or an Environment= value the way systemd does (whitespace, "…" and '…' quotes). */
function words(s: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (const m of s.matchAll(re)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3]));
  return out;
}

/** An EnvironmentFile=: KEY=value lines, comments, optional quotes. */
function envFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (l === '' || l.startsWith('#') || l.startsWith(';')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(l);
    if (!m) continue;
    env[m[1]] = m[2].replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
  }
  return env;
}

/** What the unit runs: argv, user, group, working directory, umask, environment — as systemd assembles them. */
function unitCommand(unitText: string) {
  const s = serviceSection(unitText);
  const one = (k: string) => s.get(k)?.at(-1);
  const execStart = one('ExecStart');
  assert.ok(execStart, 'the unit has an ExecStart=');
  const argv = words(execStart.replace(/^[-@:+!]+/, ''));
  const user = one('User') ?? 'root';
  const pw = getent('passwd', user);
  assert.ok(pw, `the unit's User=${user} exists`);
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C.UTF-8',
    USER: user,
    LOGNAME: user,
    HOME: pw[5],
    SHELL: pw[6],
  };
  for (const v of s.get('Environment') ?? []) for (const w of words(v)) env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
  for (const v of s.get('EnvironmentFile') ?? []) {
    const file = v.replace(/^-/, '');
    if (!existsSync(file)) {
      assert.ok(v.startsWith('-'), `EnvironmentFile=${v} exists`);
      continue;
    }
    Object.assign(env, envFile(readFileSync(file, 'utf8')));
  }
  return { argv, user, group: one('Group') ?? user, cwd: one('WorkingDirectory') ?? '/', umask: one('UMask') ?? '0022', env };
}

/** Runs argv as the unit's user/group (setpriv: no supplementary groups but the user's, no capabilities, no new privileges). */
function asUnit(u: ReturnType<typeof unitCommand>, argv: string[]): [string, string[]] {
  return [
    '/bin/sh',
    ['-c', 'umask "$0" && exec "$@"', u.umask, 'setpriv', `--reuid=${u.user}`, `--regid=${u.group}`, '--init-groups', '--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--', ...argv],
  ];
}

const header = (m: DeliveredMessage, name: string) => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

/** Processes running from /usr/lib/themis or /usr/bin/themis. */
function themisProcesses(): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1').replaceAll('\0', ' ');
    } catch {
      continue;
    }
    if (cmd.includes('/usr/lib/themis/') || cmd.includes('/usr/bin/themis')) out.push(`${pid}: ${cmd}`);
  }
  return out;
}

describe('the Debian package', { skip: skip ?? false }, () => {
  const work = skip ? '' : mkdtempSync(join(tmpdir(), 'themis-deb-test-'));
  let deb = '';
  let didInstall = false;
  let pf: PostfixInstance | undefined;
  let daemon: ChildProcess | undefined;
  let daemonOut = '';
  let daemonExit: Promise<number | null> | undefined;
  let httpSpec = '';
  let socketPath = '';
  /** paths of the .deb that did not exist before the install: all must be gone after the purge */
  let newPaths: string[] = [];
  const t0 = Date.now();
  const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;

  before(async () => {
    await chmod(work, 0o755);
  });

  after(async () => {
    if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGKILL');
      await daemonExit;
    }
    await pf?.stop();
    // Never leave the package behind, whatever failed, but only the one this test installed.
    if (didInstall && known()) {
      const r = sh('dpkg', ['--purge', 'themis'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
      if (r.code !== 0) console.log(`# cleanup: dpkg --purge themis failed: ${r.stdout}${r.stderr}`);
    }
    if (process.env.THEMIS_DEB_KEEP && deb) {
      execFileSync('cp', [deb, process.env.THEMIS_DEB_KEEP]);
      console.log(`# kept ${deb} in ${process.env.THEMIS_DEB_KEEP}`);
    }
    rmSync(work, { recursive: true, force: true });
  });

  it('builds themis_<version>_<arch>.deb with contrib/deb/build.sh', { timeout: 300_000 }, () => {
    const out = join(work, 'out');
    // gzip -1: the test needs a .deb, not the smallest one (xz of the Node.js binary takes a minute)
    const r = sh('bash', [join(ROOT, 'contrib/deb/build.sh'), out], {
      cwd: ROOT,
      env: { ...process.env, THEMIS_DEB_COMPRESS: 'gzip', THEMIS_DEB_LEVEL: '1' },
      timeout: 280_000,
    });
    assert.equal(r.code, 0, `build.sh failed:\n${r.stdout}\n${r.stderr}`);
    deb = r.stdout.trim().split('\n').at(-1)!;
    assert.match(deb, new RegExp(`/themis_${VERSION.replace('-', '~').replaceAll('.', '\\.')}_(amd64|arm64)\\.deb$`));
    assert.ok(existsSync(deb), deb);
    console.log(`# built ${deb} (${(statSync(deb).size / 1e6).toFixed(1)} MB) in ${elapsed()}`);

    const field = (f: string) => sh('dpkg-deb', ['-f', deb, f]).stdout.trim();
    assert.equal(field('Package'), 'themis');
    assert.equal(field('Version'), VERSION.replace('-', '~'));
    assert.match(field('Depends'), /\badduser\b/);
    const ctrl = join(work, 'control');
    execFileSync('dpkg-deb', ['-e', deb, ctrl]);
    assert.deepEqual(readFileSync(join(ctrl, 'conffiles'), 'utf8').trim().split('\n').sort(), [DEFAULTS, CONFIG].sort());

    const list = execFileSync('dpkg-deb', ['-c', deb], { encoding: 'utf8', maxBuffer: 64 << 20 })
      .trim()
      .split('\n')
      .map((l) => {
        const path = l.slice(l.indexOf('./') + 1).replace(/ -> .*$/, '');
        return path === '/' ? path : path.replace(/\/$/, '');
      });
    for (const p of ['/usr/bin/themis', UNIT, CONFIG, DEFAULTS, '/usr/lib/themis/node/bin/node', '/usr/lib/themis/node/LICENSE',
      '/usr/lib/themis/node_modules/themis-milter/bin/themis.js', '/usr/lib/themis/node_modules/themis-milter/dist/cli/main.js',
      '/usr/lib/themis/node_modules/themis-plugin-spf/package.json', '/usr/lib/themis/node_modules/pino/package.json',
      '/usr/share/doc/themis/copyright']) {
      assert.ok(list.includes(p), `the .deb holds ${p}`);
    }
    // production dependencies only
    for (const dev of ['typescript', 'playwright-core', '@types/node', 'node']) {
      assert.ok(!list.includes(`/usr/lib/themis/node_modules/${dev}`), `the .deb holds no dev dependency ${dev}`);
    }
    newPaths = list.filter((p) => !existsSync(p));
  });

  it('dpkg -i installs it: the themis user, /etc/themis, the unit, and nothing started', { timeout: 120_000 }, () => {
    assert.ok(deb, 'the .deb was built');
    didInstall = true;
    const r = sh('dpkg', ['-i', deb], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    assert.equal(r.code, 0, `dpkg -i failed:\n${r.stdout}\n${r.stderr}`);
    assert.ok(installed(), dpkgStatus().stdout);

    const pw = getent('passwd', 'themis');
    assert.ok(pw, 'the themis user exists');
    assert.ok(Number(pw[2]) < 1000, `themis is a system user (uid ${pw[2]})`);
    assert.equal(pw[6], '/usr/sbin/nologin');
    assert.ok(!existsSync(pw[5]) || pw[5] === '/nonexistent', `no home directory created (${pw[5]})`);
    assert.ok(getent('group', 'themis'), 'the themis group exists');
    const gid = Number(getent('group', 'themis')![2]);

    const etc = statSync('/etc/themis');
    assert.deepEqual([etc.uid, etc.gid, etc.mode & 0o7777], [0, gid, 0o750], '/etc/themis is root:themis 0750');
    for (const f of [CONFIG, DEFAULTS]) {
      const st = statSync(f);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [0, gid, 0o640], `${f} is root:themis 0640`);
    }
    const starter = readFileSync(CONFIG, 'utf8');
    assert.match(starter, /^\/\/ Themis configuration, written by `themis init`/, 'the starter configuration');
    assert.match(starter, /import \{ defineConfig \} from 'themis-milter'/);
    assert.match(readFileSync(UNIT, 'utf8'), /^ExecStart=\/usr\/bin\/themis start --config \/etc\/themis\/themis\.config\.ts$/m);
    assert.match(readFileSync(DEFAULTS, 'utf8'), /^#THEMIS_LISTEN=unix:\/var\/spool\/postfix\/themis\/themis\.sock$/m);
    if (existsSync('/var/spool/postfix') && getent('group', 'postfix')) {
      const st = statSync(SPOOL_DIR);
      assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [Number(pw[2]), Number(getent('group', 'postfix')![2]), 0o2750], `${SPOOL_DIR} is themis:postfix 2750`);
    }

    // Installing starts nothing.
    assert.deepEqual(themisProcesses(), [], 'no Themis process after the install');
    assert.ok(!existsSync('/run/themis'), 'no /run/themis (the unit never ran)');
    if (existsSync('/run/systemd/system')) {
      assert.notEqual(sh('systemctl', ['is-active', 'themis.service']).stdout.trim(), 'active', 'themis.service is not active');
      assert.notEqual(sh('systemctl', ['is-enabled', 'themis.service']).stdout.trim(), 'enabled', 'themis.service is not enabled');
    } else {
      console.log('# systemd is not running here: checked the processes instead of systemctl is-active');
    }
  });

  it('systemd-analyze verify accepts the installed unit', { timeout: 60_000 }, (t) => {
    assert.ok(installed(), 'installed');
    if (!which('systemd-analyze')) {
      console.log('# systemd-analyze not found (Debian package systemd): unit not verified');
      t.skip('systemd-analyze not found');
      return;
    }
    const r = sh('systemd-analyze', ['verify', UNIT], { cwd: work });
    const ours = (r.stdout + r.stderr).split('\n').filter((l) => l.includes('themis'));
    assert.equal(r.code, 0, `systemd-analyze verify ${UNIT}:\n${r.stdout}${r.stderr}`);
    assert.deepEqual(ours, [], 'no complaint about themis.service');
  });

  it('runs as the unit runs it, behind Postfix on a UNIX socket in its queue directory, and delivers', { timeout: 120_000 }, async () => {
    assert.ok(installed(), 'installed');
    // Postfix first (it connects to the milter per SMTP session): unix:themis/themis.sock is relative to
    // its queue directory, as for Debian's chrooted smtpd with /var/spool/postfix/themis.
    pf = await startPostfix({ milter: 'unix:themis/themis.sock', milterDefaultAction: 'tempfail' });
    const spool = join(pf.dir, 'spool');
    const sockDir = join(spool, 'themis');
    socketPath = join(sockDir, 'themis.sock');
    // what postinst does for /var/spool/postfix/themis
    await mkdir(sockDir);
    await chown(sockDir, Number(getent('passwd', 'themis')![2]), Number(getent('group', 'postfix')![2]));
    await chmod(sockDir, 0o2750);

    // The administrator's edit of /etc/default/themis (also what the upgrade must keep).
    httpSpec = `inet:${await freePort()}@127.0.0.1`;
    await appendFile(DEFAULTS, `\n# deb.test.ts\nTHEMIS_LISTEN=unix:${socketPath}\nTHEMIS_HTTP=${httpSpec}\n`);

    const unit = unitCommand(readFileSync(UNIT, 'utf8'));
    assert.deepEqual(unit.argv, ['/usr/bin/themis', 'start', '--config', CONFIG]);
    assert.equal(unit.user, 'themis');
    assert.equal(unit.env.THEMIS_LISTEN, `unix:${socketPath}`, 'EnvironmentFile= is read');
    assert.equal(unit.env.NODE_ENV, 'production', 'Environment= is read');
    const [cmd, args] = asUnit(unit, unit.argv);
    daemon = spawn(cmd, args, { cwd: unit.cwd, env: unit.env, stdio: ['ignore', 'pipe', 'pipe'] });
    daemonExit = new Promise((resolve) => daemon!.once('exit', (code) => resolve(code)));
    daemon.stdout!.on('data', (d) => (daemonOut += d));
    daemon.stderr!.on('data', (d) => (daemonOut += d));
    const started = await waitUntil(() => daemonOut.includes('"msg":"themis started') || daemon!.exitCode !== null, 30_000);
    assert.ok(started && daemon.exitCode === null, `themis did not start:\n${daemonOut}`);

    // The process is the themis user's, the socket Postfix's group's.
    const status = readFileSync(`/proc/${daemon.pid}/status`, 'utf8');
    const uid = getent('passwd', 'themis')![2];
    assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'), 'runs as themis');
    assert.match(status, /^CapEff:\s+0+$/m, 'without capabilities');
    const sock = lstatSync(socketPath);
    assert.ok(sock.isSocket(), `${socketPath} is a socket`);
    assert.equal(sock.gid, Number(getent('group', 'postfix')![2]), 'the socket belongs to group postfix (setgid directory)');
    assert.equal(sock.mode & 0o777, 0o660, 'the socket is mode 0660');

    const r = await pf.swaks(['--from', 'alice@example.test', '--to', 'bob@example.test', '--header', 'Subject: from the .deb', '--header', 'X-Spam-Flag: YES']);
    assert.equal(r.code, 0, `swaks:\n${r.stdout}${r.stderr}\n--- themis ---\n${daemonOut}`);
    const [m] = await pf.waitForDelivered(1, 30_000);
    // the starter configuration's `scanned` policy (themis-plugin-headers) adds this header
    assert.deepEqual(header(m, 'X-Themis-Policy'), ['scanned'], `delivered with Themis's header:\n${m.raw.slice(0, 2000)}`);
    assert.equal(header(m, 'Subject')[0], 'from the .deb');

    const healthz = await fetch(`http://127.0.0.1:${httpSpec.split(':')[1].split('@')[0]}/healthz`);
    assert.equal(healthz.status, 200, 'the status endpoint of THEMIS_HTTP answers');
  });

  it('the themis command on PATH answers every subcommand', { timeout: 120_000 }, async () => {
    assert.ok(installed() && daemon && daemon.exitCode === null, 'installed and running');
    const themis = (args: string[], opts: { cwd?: string } = {}) => sh('themis', args, { cwd: opts.cwd ?? work, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' } });
    const ok = (args: string[], re?: RegExp) => {
      const r = themis(args);
      assert.equal(r.code, 0, `themis ${args.join(' ')} exited ${r.code}:\n${r.stdout}${r.stderr}`);
      if (re) assert.match(r.stdout, re, `themis ${args.join(' ')}`);
      return r;
    };
    assert.equal(sh('sh', ['-c', 'command -v themis'], { env: { PATH: '/usr/local/bin:/usr/bin:/bin' } }).stdout.trim(), '/usr/bin/themis');
    ok(['--version'], new RegExp(`^${VERSION.replaceAll('.', '\\.')}\\n$`));
    const help = ok(['--help'], /^Usage: themis <command>/);

    // Every command of `themis --help`, and the commands of the starter configuration's plugins
    // (ratelimit: limits, monitor: stats), answer --help.
    const commands = new Set(['start', 'status', 'config', 'policy', 'group', 'pool', 'export', 'plugins', 'check', 'init', 'limits', 'stats']);
    for (const line of help.stdout.slice(help.stdout.indexOf('Commands:'), help.stdout.indexOf('Other:')).split('\n')) {
      const m = /^ {2}([a-z][a-z-]*) /.exec(line);
      if (m) commands.add(m[1]);
    }
    for (const c of commands) {
      const r = themis([c, '--help'], { cwd: '/etc/themis' });
      assert.equal(r.code, 0, `themis ${c} --help exited ${r.code}:\n${r.stdout}${r.stderr}`);
      assert.match(r.stdout + r.stderr, /Usage/i, `themis ${c} --help`);
    }

    // The real thing, for what needs no Redis: the configuration, the policies, the running daemon.
    ok(['config', 'check', '--config', CONFIG], /is valid/);
    ok(['plugins', '--config', CONFIG], /ratelimit/);
    ok(['policy', 'list', '--config', CONFIG], /scanned/);
    ok(['policy', 'test', '--config', CONFIG, '--from', 'alice@example.test', '--to', 'bob@example.test', '--client-ip', '192.0.2.1'], /spf-tag/);
    ok(['status', '--http', httpSpec], /./);
    ok(['check', '--server', `unix:${socketPath}`], /./);
    ok(['check', '--local', '--config', CONFIG], /./);
    ok(['stats', '--config', CONFIG, '--http', httpSpec], /./);
    ok(['init', '--path', join(work, 'new.config.ts')]);
    assert.equal(readFileSync(join(work, 'new.config.ts'), 'utf8'), readFileSync(CONFIG, 'utf8'), 'themis init writes the shipped starter configuration');

    // As the daemon's user, from its working directory (what a `runuser -u themis` administrator sees).
    const unit = unitCommand(readFileSync(UNIT, 'utf8'));
    const [cmd, args] = asUnit(unit, ['/usr/bin/themis', 'config', 'check', '--config', CONFIG]);
    const r = sh(cmd, args, { cwd: unit.cwd, env: unit.env });
    assert.equal(r.code, 0, `themis config check as themis:\n${r.stdout}${r.stderr}`);
  });

  it('stops on SIGTERM (KillSignal=), removing its socket', { timeout: 60_000 }, async () => {
    assert.ok(daemon, 'running');
    daemon.kill('SIGTERM');
    const code = await Promise.race([daemonExit, new Promise((r) => setTimeout(() => r('timeout'), 30_000).unref())]);
    assert.equal(code, 0, `themis exit code after SIGTERM:\n${daemonOut.slice(-3000)}`);
    assert.ok(!existsSync(socketPath), 'the socket is gone');
    assert.deepEqual(themisProcesses(), []);
  });

  it('an upgrade keeps the edited configuration (conffiles)', { timeout: 120_000 }, async () => {
    assert.ok(installed(), 'installed');
    const mark = `\n// edited by the administrator (deb.test.ts)\n`;
    await appendFile(CONFIG, mark);
    const defaultsBefore = await readFile(DEFAULTS, 'utf8');
    // The same package with a higher version, repacked without compression (fast).
    const tree = join(work, 'upgrade');
    execFileSync('dpkg-deb', ['-R', deb, tree]);
    const control = join(tree, 'DEBIAN/control');
    const newVersion = `${VERSION.replace('-', '~')}+upgradetest1`;
    await writeFile(control, (await readFile(control, 'utf8')).replace(/^Version: .*$/m, `Version: ${newVersion}`));
    const upgraded = join(work, `themis_${newVersion}.deb`);
    execFileSync('dpkg-deb', ['--root-owner-group', '-Znone', '--build', tree, upgraded], { stdio: 'ignore' });
    rmSync(tree, { recursive: true, force: true });

    const r = sh('dpkg', ['-i', upgraded], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    assert.equal(r.code, 0, `dpkg -i (upgrade) failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(dpkgStatus().stdout, new RegExp(`install ok installed ${newVersion.replaceAll('.', '\\.').replaceAll('+', '\\+')}$`));
    assert.ok((await readFile(CONFIG, 'utf8')).endsWith(mark), `${CONFIG} kept the administrator's edit`);
    assert.equal(await readFile(DEFAULTS, 'utf8'), defaultsBefore, `${DEFAULTS} kept the administrator's edit`);
    assert.ok(!existsSync(`${CONFIG}.dpkg-new`) && !existsSync(`${CONFIG}.dpkg-dist`), 'no conffile prompt leftovers');
    assert.ok(getent('passwd', 'themis'), 'the themis user is still there');
    assert.deepEqual(themisProcesses(), [], 'the upgrade started nothing');
  });

  it('dpkg --purge removes everything it created', { timeout: 120_000 }, () => {
    assert.ok(installed(), 'installed');
    const r = sh('dpkg', ['--purge', 'themis'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    assert.equal(r.code, 0, `dpkg --purge failed:\n${r.stdout}\n${r.stderr}`);
    assert.ok(!known(), `dpkg forgot themis: ${dpkgStatus().stdout}`);
    const left = [...new Set([...OURS, SPOOL_DIR, ...newPaths])].filter((p) => existsSync(p));
    assert.deepEqual(left, [], 'nothing of the package is left');
    assert.equal(getent('passwd', 'themis'), undefined, 'the themis user is gone');
    assert.equal(getent('group', 'themis'), undefined, 'the themis group is gone');
    assert.deepEqual(readdirSync('/var/lib/dpkg/info').filter((f) => f.startsWith('themis.')), [], 'no maintainer scripts or lists left');
    assert.deepEqual(themisProcesses(), []);
    console.log(`# whole .deb cycle in ${elapsed()}`);
  });
});
