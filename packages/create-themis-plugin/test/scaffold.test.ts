// The scaffold: names, stages and flags give the package they say, mistakes get their coded error
// before anything is written, and what it writes is a plugin that type-checks and passes its own
// tests against this checkout's Themis for any choice of stages. (test/e2e/create-plugin.test.ts
// installs the packed scaffold and its output from tarballs and runs them behind a real Postfix.)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { SCAFFOLD_ERROR_CODES, STAGES, THEMIS_RANGE, VERSION, planScaffold, pluginNames, parseStages, scaffold, type ScaffoldErrorCode } from 'create-themis-plugin';
import { main } from '../src/main.ts';

const CHECKOUT = fileURLToPath(new URL('../../..', import.meta.url)).replace(/\/$/, '');
const TSC = join(CHECKOUT, 'node_modules', 'typescript', 'bin', 'tsc');

const coded = (code: ScaffoldErrorCode) => (err: unknown) => (err as { code?: string }).code === code && (err as Error).message.startsWith(`${code}: `);

function sink(): Writable & { text: () => string } {
  let text = '';
  const w = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  });
  return Object.assign(w, { text: () => text });
}

/** Runs a command; resolves with its exit code and output. */
function exec(cmd: string, args: string[], cwd: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    // Without NODE_TEST_CONTEXT, a `node --test` child reports to its own output rather than to this run.
    const { NODE_TEST_CONTEXT: _, NODE_OPTIONS: __, ...env } = process.env;
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('close', (code) => resolve({ code, out }));
  });
}

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'themis-scaffold-'));
});
after(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('names', () => {
  it('derives package, plugin, field, types, directory and header from one name', () => {
    assert.deepEqual(pluginNames('max-recipients'), {
      packageName: 'themis-plugin-max-recipients',
      pluginName: 'max-recipients',
      field: 'maxRecipients',
      typeName: 'MaxRecipients',
      directory: 'themis-plugin-max-recipients',
      header: 'X-Max-Recipients',
    });
    assert.equal(pluginNames('themis-plugin-greylist').pluginName, 'greylist');
    assert.equal(pluginNames('themis-plugin-greylist').packageName, 'themis-plugin-greylist');
    const scoped = pluginNames('@acme/themis-plugin-greylist');
    assert.equal(scoped.packageName, '@acme/themis-plugin-greylist');
    assert.equal(scoped.pluginName, 'greylist');
    assert.equal(scoped.directory, 'themis-plugin-greylist');
    assert.equal(pluginNames('@acme/greylist').packageName, '@acme/greylist', 'a scoped name is kept as given');
    assert.equal(pluginNames('greylist', 'grey').field, 'grey');
  });

  it('refuses names npm or the kernel would refuse, with a coded error naming the flag', () => {
    for (const bad of ['Greylist', 'grey_list', 'grey--list', '-grey', 'themis-plugin-', '@/x', '@acme/', 'a b', '']) {
      assert.throws(() => planScaffold({ name: bad }), coded('THEMIS_ERR_SCAFFOLD_NAME'), bad);
    }
    assert.throws(() => pluginNames('greylist', 'Grey-list'), coded('THEMIS_ERR_SCAFFOLD_FIELD'));
  });
});

describe('stages', () => {
  it('are parsed case-insensitively, deduplicated and put in milter order', () => {
    assert.deepEqual(parseStages('endofmessage, RCPTTO,connect,rcptTo'), ['connect', 'rcptTo', 'endOfMessage']);
    assert.deepEqual(parseStages([...STAGES].reverse()), [...STAGES]);
  });

  it('refuses an unknown stage or none, naming the stages there are', () => {
    assert.throws(() => parseStages('rcpt'), (e: unknown) => coded('THEMIS_ERR_SCAFFOLD_STAGE')(e) && /"rcpt" is not a stage; expected some of connect, helo/.test((e as Error).message));
    assert.throws(() => parseStages(' , '), coded('THEMIS_ERR_SCAFFOLD_STAGE'));
  });
});

describe('the package it plans', () => {
  it('pins Node 24 for its scripts, declares Themis as a peer, builds to JavaScript with declarations', () => {
    const plan = planScaffold({ name: 'acme', cwd: root });
    assert.deepEqual([...plan.files.keys()].sort(), ['.gitignore', 'README.md', 'package.json', 'src/index.ts', 'test/plugin.test.ts', 'tsconfig.build.json', 'tsconfig.json']);
    const pkg = JSON.parse(plan.files.get('package.json')!);
    assert.equal(pkg.name, 'themis-plugin-acme');
    assert.equal(pkg.type, 'module');
    assert.deepEqual(pkg.peerDependencies, { 'themis-milter': THEMIS_RANGE });
    assert.equal(pkg.devDependencies['themis-milter'], THEMIS_RANGE);
    assert.match(pkg.devDependencies.node, /^\^24\./);
    assert.deepEqual(pkg.allowScripts, { node: true }, 'npm runs the node package’s install script without asking');
    assert.deepEqual(pkg.exports['.'], { types: './dist/index.d.ts', default: './dist/index.js' });
    assert.deepEqual(pkg.files, ['dist', 'README.md']);
    assert.equal(pkg.scripts.prepack, 'npm run build');
    assert.match(pkg.scripts.test, /^tsc --noEmit && node --test/);
    // the scaffold is released with Themis: the range it writes is Themis's own version line
    const themis = JSON.parse(readFileSync(join(CHECKOUT, 'package.json'), 'utf8'));
    assert.equal(VERSION, themis.version);
    assert.ok(THEMIS_RANGE === `^${themis.version.split('.').slice(0, 2).join('.')}.0`);
    // the checkout's own pins are what a new plugin gets
    for (const dep of ['typescript', '@types/node', 'node']) assert.equal(pkg.devDependencies[dep], themis.devDependencies[dep], dep);
    assert.equal(pkg.dependencies.zod, themis.dependencies.zod);
  });

  it('a local Themis (tarball or directory) becomes an absolute file: dependency', () => {
    const plan = planScaffold({ name: 'acme', cwd: root, themis: './themis-milter-0.1.0.tgz' });
    assert.equal(JSON.parse(plan.files.get('package.json')!).devDependencies['themis-milter'], `file:${join(root, 'themis-milter-0.1.0.tgz')}`);
  });

  it('the field holds the settings of the chosen stages only, and the README documents exactly those', () => {
    const both = planScaffold({ name: 'acme', cwd: root });
    assert.match(both.files.get('src/index.ts')!, /refuse: z\.array/);
    assert.match(both.files.get('src/index.ts')!, /header: z\.string/);
    assert.match(both.files.get('README.md')!, /\| `refuse` \|[\s\S]*\| `header` \|/);
    const tag = planScaffold({ name: 'acme', cwd: root, stages: 'endOfMessage' });
    assert.doesNotMatch(tag.files.get('src/index.ts')!, /refuse/);
    assert.doesNotMatch(tag.files.get('README.md')!, /`refuse`/);
    assert.doesNotMatch(tag.files.get('src/index.ts')!, /rcptTo\(/);
    const bare = planScaffold({ name: 'acme', cwd: root, stages: 'connect' });
    assert.doesNotMatch(bare.files.get('src/index.ts')!, /modifies/, 'no modification negotiated that no hook makes');
  });
});

describe('writing', () => {
  it('refuses a directory that is not empty unless --force, and writes nothing', async () => {
    const dir = join(root, 'taken');
    await mkdir(dir);
    await writeFile(join(dir, 'notes.txt'), 'mine');
    await assert.rejects(scaffold({ name: 'acme', dir, cwd: root }), (e: unknown) => coded('THEMIS_ERR_SCAFFOLD_DIR')(e) && (e as Error).message.includes('notes.txt'));
    assert.deepEqual(await readdir(dir), ['notes.txt']);
    await scaffold({ name: 'acme', dir, cwd: root, force: true });
    assert.ok(existsSync(join(dir, 'src', 'index.ts')));
    assert.equal(readFileSync(join(dir, 'notes.txt'), 'utf8'), 'mine');
  });
});

describe('the command line', () => {
  const run = async (argv: string[], stdin?: NodeJS.ReadableStream & { isTTY?: boolean }) => {
    const stdout = sink();
    const stderr = sink();
    const code = await main(argv, { stdout, stderr, stdin: stdin ?? Object.assign(new PassThrough(), { isTTY: false }) });
    return { code, stdout: stdout.text(), stderr: stderr.text() };
  };

  it('--help lists every stage; --version is the package version', async () => {
    const help = await run(['--help']);
    assert.equal(help.code, 0);
    for (const s of STAGES) assert.ok(help.stdout.includes(s), s);
    assert.deepEqual(await run(['--version']), { code: 0, stdout: `${VERSION}\n`, stderr: '' });
  });

  it('bad usage exits 2 with the coded error: unknown flag, two names, no name without a terminal', async () => {
    const cases: [string[], ScaffoldErrorCode][] = [
      [['acme', '--stage', 'x'], 'THEMIS_ERR_SCAFFOLD_ARG'],
      [['a', 'b'], 'THEMIS_ERR_SCAFFOLD_ARG'],
      [['a', '--name', 'b'], 'THEMIS_ERR_SCAFFOLD_ARG'],
      [['--yes'], 'THEMIS_ERR_SCAFFOLD_NAME'],
      [['acme', '--stages', 'rcptTo,eom', '--dir', join(root, 'never')], 'THEMIS_ERR_SCAFFOLD_STAGE'],
    ];
    for (const [argv, code] of cases) {
      const r = await run(argv);
      assert.equal(r.code, 2, argv.join(' '));
      assert.match(r.stderr, new RegExp(`^create-themis-plugin: ${code}: `), argv.join(' '));
      assert.ok(code in SCAFFOLD_ERROR_CODES);
    }
    assert.ok(!existsSync(join(root, 'never')), 'nothing written on a refused command');
  });

  it('on a terminal, asks for what the flags leave open', async () => {
    const stdin = Object.assign(new PassThrough(), { isTTY: true });
    const answers = ['', 'asked\n', 'connect,rcptTo\n', 'Refuses what it is asked to\n'];
    const done = run(['--dir', join(root, 'asked')], stdin);
    for (const a of answers) {
      stdin.write(a);
      await new Promise((r) => setImmediate(r));
    }
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Plugin name/);
    assert.match(r.stdout, /Created themis-plugin-asked in .*stages connect, rcptTo\./);
    const pkg = JSON.parse(readFileSync(join(root, 'asked', 'package.json'), 'utf8'));
    assert.equal(pkg.description, 'Refuses what it is asked to');
  });
});

describe('what it writes type-checks and passes its own tests against this checkout', () => {
  // Every stage alone would be eleven slow runs; these three sets cover every stage, each template
  // branch (refuse, tag, neither) and a scoped name.
  const sets: [string, string][] = [
    ['themis-plugin-every', STAGES.join(',')],
    ['@acme/themis-plugin-tagger', 'endOfMessage'],
    ['watcher', 'connect,mailFrom,abort'],
  ];
  for (const [name, stages] of sets) {
    it(`${name} (${stages})`, { timeout: 120_000 }, async () => {
      const plan = await scaffold({ name, stages, dir: join(root, 'gen', name.replace(/[@/]/g, '_')), cwd: root });
      // The checkout's node_modules stands in for `npm install` here (the e2e test does the real one);
      // the themis-source condition points themis-milter at its sources, built or not.
      await mkdir(dirname(plan.dir), { recursive: true });
      await symlink(join(CHECKOUT, 'node_modules'), join(plan.dir, 'node_modules'));
      const tsc = await exec(process.execPath, [TSC, '--noEmit', '-p', '.', '--customConditions', 'themis-source'], plan.dir);
      assert.equal(tsc.code, 0, `tsc:\n${tsc.out}`);
      const test = await exec(process.execPath, ['--conditions=themis-source', '--test', '--test-reporter=tap', 'test/plugin.test.ts'], plan.dir);
      assert.equal(test.code, 0, `node --test:\n${test.out}`);
      const pass = Number(/^# pass (\d+)/m.exec(test.out)?.[1]);
      assert.ok(pass >= 2, `its tests ran (${pass} passed)`);
      assert.match(test.out, /^# fail 0/m);
      // the plugin's version is its package's, read at load: bumping package.json is enough
      const loaded = await exec(process.execPath, ['--conditions=themis-source', '--input-type=module', '-e', "const m = await import('./src/index.ts'); console.log(m.default.version, m.default.name)"], plan.dir);
      assert.equal(loaded.out.trim(), `0.1.0 ${plan.names.pluginName}`, loaded.out);
    });
  }
});
