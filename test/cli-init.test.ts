// `themis init`: writes the starter configuration, which Node 24 can import as it is; refuses to
// overwrite without --force; usage errors exit 2. The command is not routed by main.ts yet, so the
// tests call init() directly, always with --path into a temporary directory (never the cwd).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { init } from '../src/cli/init.ts';
import { STARTER_CONFIG } from '../src/cli/init-template.ts';
import { kernelOptionsOf, loadConfig, type LoadedConfig } from '../src/config.ts';
import { Kernel } from '../src/kernel/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'themis-init-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs init(args), capturing what it prints. */
async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = process.stdout.write;
  const err = process.stderr.write;
  process.stdout.write = ((chunk: string | Uint8Array) => ((stdout += String(chunk)), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += String(chunk)), true)) as typeof process.stderr.write;
  try {
    return { code: await init(args), stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

describe('themis init', () => {
  it('writes the starter configuration and prints the next steps', async () => {
    const file = join(dir, 'themis.config.ts');
    const r = await run(['--path', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.equal(readFileSync(file, 'utf8'), STARTER_CONFIG);
    assert.ok(r.stdout.includes(file), 'names the file it wrote');
    for (const step of ['themis config check', 'themis start', "resolves to itself", 'smtpd_milters = inet:127.0.0.1:8440', 'non_smtpd_milters', 'milter_protocol = 6', 'postfix reload']) {
      assert.ok(r.stdout.includes(step), `next steps mention ${step}`);
    }
  });

  it('the file is a module Node 24 imports: listen, the memory store, and the demonstration of the built-in plugins', async () => {
    const file = join(dir, 'importable.config.ts');
    assert.equal((await run(['--path', file])).code, 0);
    // Inside the repository, where 'themis-milter' resolves (node_modules/themis-milter links to the root).
    const copy = fileURLToPath(new URL(`fixtures/.init-${process.pid}-${randomBytes(4).toString('hex')}.config.ts`, import.meta.url));
    copyFileSync(file, copy);
    let config: Record<string, unknown>;
    let loaded: LoadedConfig;
    try {
      config = ((await import(pathToFileURL(copy).href)) as { default: Record<string, unknown> }).default;
      loaded = await loadConfig(copy);
    } finally {
      unlinkSync(copy);
    }
    assert.equal(config.listen, 'inet:8440@127.0.0.1');
    assert.deepEqual(config.plugins, ['themis-plugin-monitor', 'themis-plugin-spf', 'themis-plugin-ratelimit', 'themis-plugin-headers']);
    assert.deepEqual(config.store, { type: 'memory' });
    // Everything else is a commented example.
    assert.deepEqual(Object.keys(config).sort(), ['listen', 'plugins', 'policies', 'store']);
    // It passes \`themis config check\`: the plugins load and claim every policy field.
    const kernel = await Kernel.create(kernelOptionsOf(loaded));
    try {
      assert.deepEqual(kernel.pages(), [{ plugin: 'monitor', name: 'dashboard', path: '/dashboard' }]);
    } finally {
      await kernel.shutdown();
    }
    // What \`themis init\` offers is what \`npm start\` runs: the repository's themis.config.ts.
    const repo = await loadConfig(fileURLToPath(new URL('../themis.config.ts', import.meta.url)));
    assert.deepEqual(repo.plugins.map((p) => p.plugin.name), loaded.plugins.map((p) => p.plugin.name));
    assert.deepEqual(repo.policies, loaded.policies);
  });

  it('the demonstration refuses no legitimate mail: SPF tags, the rate limit is far above any real sender, header rules only add', () => {
    const policies = STARTER_CONFIG.split('\n').filter((l) => /^ {4}\{ name: /.test(l));
    assert.deepEqual(policies.map((l) => /name: '([^']+)'/.exec(l)?.[1]), ['spf-tag', 'sender-rate', 'scanned']);
    for (const l of policies) assert.doesNotMatch(l, /'reject'|'tempfail'|'quarantine'|'hold'|verdict|change:|delete:/, l);
    assert.ok(policies[0].includes("mailFrom: { fail: 'tag', softfail: 'tag' }"));
    assert.ok(policies[1].includes("windows: '1000/1m'"));
    assert.match(STARTER_CONFIG, /http:\/\/127\.0\.0\.1:8441\/dashboard/);
  });

  it('the template documents every section, with the commented examples', () => {
    assert.match(STARTER_CONFIG, /^import \{ defineConfig \} from 'themis-milter';$/m);
    assert.match(STARTER_CONFIG, /^export default defineConfig\(\{$/m);
    for (const line of [
      "// store: { type: 'redis', url: 'redis://127.0.0.1:6379', keyPrefix: 'themis:' },",
      "sentinel: { name: 'mymaster', nodes: ['10.0.0.1:26379'] }",
      "cluster: { nodes: ['10.0.0.1:7000'] }",
      "// log: { level: 'info' },",
      '// reload: { watch: true },',
      "// http: { listen: 'inet:8441@127.0.0.1', token: '…16+ characters…' },",
      '// http: false,',
      "// 'themis-plugin-predict',",
      "// { name: 'scanned-strict', priority: 6, match: { direction: 'inbound' }, headers: [",
      '// groups: {',
      '// pools: {',
      '// outboundNetworks: [',
      "// { name: 'trusted', priority: 1, type: 'bypass', match: { source: 'vip' } },",
      "match: { direction: 'outbound' }",
      "match: { direction: 'inbound'",
      '// hookTimeout: 10_000,',
      "// onError: 'tempfail',",
      "// mta: 'postfix',",
    ]) assert.ok(STARTER_CONFIG.includes(line), `template has ${line}`);
  });

  it('refuses to overwrite an existing file (exit 1, file unchanged, message names it)', async () => {
    const file = join(dir, 'existing.config.ts');
    writeFileSync(file, '// mine\n');
    const r = await run(['--path', file]);
    assert.equal(r.code, 1);
    assert.equal(readFileSync(file, 'utf8'), '// mine\n');
    assert.ok(r.stderr.includes(file), r.stderr);
    assert.match(r.stderr, /already exists/);
    assert.match(r.stderr, /--force/);
    assert.equal(r.stdout, '');
  });

  it('--force overwrites it', async () => {
    const file = join(dir, 'forced.config.ts');
    writeFileSync(file, '// mine\n');
    const r = await run(['--force', '--path', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(file, 'utf8'), STARTER_CONFIG);
    assert.match(r.stdout, /^Replaced /);
  });

  it('an unknown flag, a stray argument or a missing --path value is a usage error (exit 2)', async () => {
    for (const args of [['--frobnicate'], ['somefile.ts'], ['--path']]) {
      const r = await run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /Usage: themis init/);
      assert.equal(r.stdout, '');
    }
  });

  it('a file that cannot be written exits 1 and names it', async () => {
    const file = join(dir, 'no-such-dir', 'themis.config.ts');
    const r = await run(['--path', file]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(file), r.stderr);
  });

  it('a directory as --path exits 1 and says so', async () => {
    const r = await run(['--path', dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is a directory/);
  });

  it('--help prints the usage (exit 0)', async () => {
    const r = await run(['--help']);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: themis init \[--force\] \[--path FILE\]/);
  });
});
