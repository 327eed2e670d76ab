// A plugin author's first fifteen minutes, as a user has them: the scaffold and Themis packed into
// tarballs; `npm init themis-plugin` (the packed create-themis-plugin, resolved by npm like any
// initializer) writes a plugin into an empty directory; its own `npm install`, `npm test` (on the Node
// 24 it pins, whatever Node comes first in PATH) and `npm pack` work as written; the plugin's tarball,
// installed beside a packed Themis in a fresh project, is loaded by package name into `themis start`
// behind a real Postfix, where its refusals and its header are seen in what Postfix answers and
// delivers. The time from the empty directory to a passing test, and to a loaded tarball, is printed.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildAndPack, installProject, isolatedEnv, linksOutside, npm, run, tarList, type RunResult, type Tarballs } from '../helpers/pack.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type DeliveredMessage, type PostfixInstance } from '../helpers/postfix.ts';
import { freePort, waitUntil } from '../helpers/process.ts';

const npmVersion = await run('npm', ['--version'], { env: isolatedEnv(), timeoutMs: 30_000 });
const skip = npmVersion.code !== 0 ? `npm not available: ${npmVersion.stderr.trim()}` : false;
if (skip) console.log(`# create-plugin tests skipped: ${skip}`);
const postfixSkip = postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}`;
if (!skip && postfixSkip) console.log(`# create-plugin: the Postfix part is skipped: ${postfixSkip}`);

const PLUGIN = 'themis-plugin-acme-tag';
const header = (m: DeliveredMessage, name: string): string[] => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
const ok = (what: string, r: RunResult): RunResult => {
  assert.equal(r.code, 0, `${what} exited ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  return r;
};
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

describe('npm init themis-plugin, from an empty directory to a plugin loaded behind Postfix', { skip, timeout: 420_000 }, () => {
  let root: string;
  let tarballs: Tarballs;
  let plugin: string; // the generated package's directory
  let pluginTarball: string;
  let started: number; // when the author had an empty directory
  const children = new Set<ChildProcess>();
  const cleanups: (() => Promise<void>)[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'themis-create-'));
    tarballs = await buildAndPack(join(root, 'pack'), ['packages/create-themis-plugin']);
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

  it('npm init themis-plugin writes the package into an empty directory', async () => {
    // npm resolves the initializer `themis-plugin` to the package `create-themis-plugin`; until it is on
    // the registry, npm finds it installed (from its tarball) in the project npm init runs in.
    const tools = join(root, 'tools');
    await installProject(tools, [tgz('create-themis-plugin')]);
    const work = join(root, 'work');
    await mkdir(work);
    started = Date.now();
    const init = ok('npm init themis-plugin', await npm(['init', 'themis-plugin', 'acme-tag', '--', '--stages', 'rcptTo,endOfMessage', '--description', 'Refuses listed recipients, tags the rest', '--dir', join(work, PLUGIN), '--themis', tgz('themis-milter'), '--yes'], tools));
    assert.match(init.stdout, /Created themis-plugin-acme-tag .*policy field "acmeTag", stages rcptTo, endOfMessage\./);
    plugin = join(work, PLUGIN);
    assert.deepEqual((await readdir(plugin)).sort(), ['.gitignore', 'README.md', 'package.json', 'src', 'test', 'tsconfig.build.json', 'tsconfig.json']);
    const pkg = JSON.parse(readFileSync(join(plugin, 'package.json'), 'utf8'));
    assert.equal(pkg.name, PLUGIN);
    assert.equal(pkg.description, 'Refuses listed recipients, tags the rest');
  });

  it('its npm install, then npm test — type-check and tests pass on the Node 24 it pins, with an older Node first in PATH', { timeout: 240_000 }, async () => {
    ok('npm install', await npm(['install', '--no-audit', '--no-fund', '--prefer-offline'], plugin, 240_000));
    assert.deepEqual(linksOutside(plugin, join(plugin, 'node_modules')), [], 'installed from the tarball: no link back to the checkout');
    // The machine's own Node (/usr/bin: Node 20 on these machines) first in PATH: npm scripts still run
    // on the pinned Node 24, which is what makes the TypeScript tests run at all.
    const systemFirst = isolatedEnv({ PATH: ['/usr/local/bin', '/usr/bin', '/bin', process.env.PATH ?? ''].join(':') });
    const version = ok('npm exec node --version', await run('npm', ['exec', '--', 'node', '--version'], { cwd: plugin, env: systemFirst, timeoutMs: 60_000 }));
    assert.match(version.stdout.trim(), /^v24\./, 'npm scripts run on the pinned Node 24');
    const test = ok('npm test', await run('npm', ['test'], { cwd: plugin, env: systemFirst, timeoutMs: 120_000 }));
    const pass = Number(/ℹ pass (\d+)/.exec(test.stdout)?.[1]);
    assert.equal(pass, 4, `its four tests passed:\n${test.stdout}`);
    assert.match(test.stdout, /ℹ fail 0/);
    console.log(`# create-plugin: empty directory to a passing npm test: ${seconds(Date.now() - started)}`);
  });

  it('npm pack: compiled JavaScript and declarations, no sources or tests', { timeout: 120_000 }, async () => {
    const packed = ok('npm pack', await npm(['pack', '--json', '--pack-destination', join(root, 'pack')], plugin));
    const report = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string }[];
    pluginTarball = join(root, 'pack', report[0].filename);
    const files = await tarList(pluginTarball);
    assert.deepEqual(files, ['package/README.md', 'package/dist/index.d.ts', 'package/dist/index.d.ts.map', 'package/dist/index.js', 'package/dist/index.js.map', 'package/package.json']);
  });

  it('installed beside a packed Themis, loaded by package name into themis start behind a real Postfix', { skip: postfixSkip, timeout: 180_000 }, async () => {
    const project = join(root, 'mx');
    await installProject(project, [tgz('themis-milter'), pluginTarball]);
    assert.deepEqual(linksOutside(project, join(project, 'node_modules')), []);
    const bin = join(project, 'node_modules', '.bin', 'themis');
    const config = join(project, 'themis.config.ts');
    await writeFile(
      config,
      `import { defineConfig } from 'themis-milter';

export default defineConfig({
  store: { type: 'memory' },
  plugins: [{ plugin: '${PLUGIN}', options: { logRefused: true } }],
  policies: [{ name: 'inbound', acmeTag: { refuse: ['mallory@example.test'], text: 'Mallory may not receive mail here' } }],
});
`,
    );
    const check = ok('themis config check', await run(process.execPath, [bin, 'config', 'check'], { cwd: project, env: isolatedEnv(), timeoutMs: 60_000 }));
    assert.match(check.stdout, /acme-tag/);

    const port = await freePort();
    const child = spawn(process.execPath, [bin, 'start', '--listen', `inet:${port}@127.0.0.1`], { cwd: project, env: isolatedEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
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
    assert.equal(child.exitCode, null, `themis exited:\n${out}`);
    console.log(`# create-plugin: empty directory to the plugin's tarball loaded by themis start: ${seconds(Date.now() - started)}`);

    const pf: PostfixInstance = await startPostfix({ milter: `inet:127.0.0.1:${port}`, milterDefaultAction: 'tempfail' });
    cleanups.push(() => pf.stop());
    const sent = await pf.swaks(['--helo', 'client.example.org', '--from', 'alice@example.org', '--to', 'bob@example.test,mallory@example.test', '--header', 'Subject: scaffolded']);
    assert.match(sent.stdout, /<\*\* 550 5\.7\.1 Mallory may not receive mail here/, sent.stdout);
    assert.match(sent.stdout, /<-  250 2\.0\.0 Ok: queued/, sent.stdout);
    const [m] = await pf.waitForDelivered(1);
    assert.deepEqual(m.envelopeTo, ['bob@example.test'], 'delivered to the recipient the plugin let through only');
    assert.deepEqual(header(m, 'X-Acme-Tag'), ['inbound'], "the plugin's header, naming the policy");
    assert.match(out, /"msg":"recipient refused"/, "the plugin's own log line");

    child.kill('SIGTERM');
    assert.equal(await exited, 0, `themis stopped cleanly:\n${out.split('\n').slice(-10).join('\n')}`);
  });
});
