// The configuration file: found by cosmiconfig in every supported format, validated whole — every
// problem reported at once, each naming the file, the path inside it, what was expected and what
// was found — and hashed so the daemon can say which configuration it serves.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { CONFIG_FILES, findConfig, loadConfig } from '../../src/config.ts';
import { Kernel, isThemisError } from '../../src/kernel/index.ts';
import { startThemis } from '../helpers/themis.ts';

const TAG = fileURLToPath(new URL('../fixtures/plugins/tag.ts', import.meta.url));

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'themis-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('configuration discovery', () => {
  const formats: [string, string][] = [
    ['themis.config.ts', `export default { listen: 'inet:1@127.0.0.1' } satisfies Record<string, unknown>;\n`],
    ['themis.config.mjs', `export default { listen: 'inet:1@127.0.0.1' };\n`],
    ['themis.config.json', `{ "listen": "inet:1@127.0.0.1" }\n`],
    ['themis.config.yaml', `listen: inet:1@127.0.0.1\n`],
    ['themis.config.yml', `listen: inet:1@127.0.0.1\n`],
    ['.themisrc', `listen: inet:1@127.0.0.1\n`],
    ['.themisrc.json', `{ "listen": "inet:1@127.0.0.1" }\n`],
    ['package.json', `{ "name": "x", "themis": { "listen": "inet:1@127.0.0.1" } }\n`],
  ];
  for (const [name, text] of formats) {
    it(`finds and loads ${name}`, async (t) => {
      const dir = tempDir(t);
      writeFileSync(join(dir, name), text);
      const file = findConfig(undefined, dir);
      assert.equal(file, join(dir, name));
      const c = await loadConfig(file!);
      assert.equal(c.listen, 'inet:1@127.0.0.1');
      assert.equal(c.hash, createHash('sha256').update(readFileSync(file!)).digest('hex').slice(0, 16));
      assert.deepEqual(c.store, { type: 'memory' });
    });
  }

  it('prefers themis.config.ts over the other names, in the documented order', (t) => {
    const dir = tempDir(t);
    for (const name of ['themis.config.json', 'themis.config.yaml', 'themis.config.ts']) writeFileSync(join(dir, name), name.endsWith('.ts') ? 'export default {};\n' : name.endsWith('.json') ? '{}' : 'listen: x\n');
    assert.equal(findConfig(undefined, dir), join(dir, 'themis.config.ts'));
    assert.equal(CONFIG_FILES[0], 'themis.config.ts');
  });

  it('a package.json without a themis key is not a configuration; nothing found is undefined', (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'package.json'), '{"name":"x"}');
    assert.equal(findConfig(undefined, dir), undefined);
  });

  it('an explicit path wins and is resolved from the working directory', (t) => {
    const dir = tempDir(t);
    assert.equal(findConfig('sub/x.yaml', dir), join(dir, 'sub/x.yaml'));
  });

  it('a reload sees the edited module, not the cached one', async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'themis.config.mjs');
    writeFileSync(file, `export default { listen: 'inet:1@127.0.0.1' };\n`);
    const a = await loadConfig(file);
    writeFileSync(file, `export default { listen: 'inet:2@127.0.0.1' };\n`);
    const b = await loadConfig(file);
    assert.equal(a.listen, 'inet:1@127.0.0.1');
    assert.equal(b.listen, 'inet:2@127.0.0.1');
    assert.notEqual(a.hash, b.hash);
  });

  it('a reload of unchanged bytes reuses the loaded module: Node never unloads one, so a new copy per SIGHUP would leak', async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'themis.config.mjs');
    const counter = `__themisConfigRuns_${Date.now()}`;
    const write = (port: number) => writeFileSync(file, `globalThis.${counter} = (globalThis.${counter} ?? 0) + 1;\nexport default { listen: 'inet:${port}@127.0.0.1' };\n`);
    const runs = () => (globalThis as Record<string, unknown>)[counter];
    write(1);
    await loadConfig(file);
    await loadConfig(file);
    await loadConfig(file);
    assert.equal(runs(), 1, 'evaluated once for the same bytes');
    write(2);
    assert.equal((await loadConfig(file)).listen, 'inet:2@127.0.0.1');
    assert.equal(runs(), 2, 'evaluated again once the bytes changed');
  });

  it('a themis.config.ts is an ES module even under a package.json of "type": "commonjs" (what npm init -y writes)', async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'mx', version: '1.0.0', type: 'commonjs' }));
    const file = join(dir, 'themis.config.ts');
    writeFileSync(file, `import { sep } from 'node:path';\nconst port: number = 3;\nexport default { listen: 'inet:' + port + '@127.0.0.1', http: { listen: sep === '/' ? false : false } };\n`);
    const loaded = await loadConfig(file);
    assert.equal(loaded.listen, 'inet:3@127.0.0.1');
  });
});

describe('configuration validation', () => {
  it('reports every problem at once, each with its path, what was expected and what was found', async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'themis.config.json');
    writeFileSync(file, JSON.stringify({ listen: 8440, hookTimeout: -1, mta: 'exim', workers: 0, plugins: [{ plugin: TAG, priority: 'high' }], store: { type: 'redis', url: 42 }, colour: 'blue' }));
    await assert.rejects(loadConfig(file), (err: unknown) => {
      assert.ok(isThemisError(err, 'THEMIS_ERR_CONFIG_INVALID'));
      const problems = (err.details.problems as { path: string; message: string }[]).map((p) => `${p.path}: ${p.message}`);
      const find = (path: string) => problems.find((p) => p.startsWith(`${path}:`)) ?? assert.fail(`no problem at ${path} in ${problems.join(' | ')}`);
      assert.match(find('listen'), /expected string.*found 8440/);
      assert.match(find('hookTimeout'), /found -1/);
      assert.match(find('mta'), /postfix.*sendmail.*found "exim"/);
      assert.match(find('workers'), /found 0/);
      assert.match(find('plugins[0].priority'), /expected number.*found "high"/);
      assert.match(find('store.url'), /found 42/);
      assert.match(find('(root)'), /colour/);
      assert.ok(err.message.includes(file), 'the message names the file');
      return true;
    });
  });

  it('a single problem is THEMIS_ERR_CONFIG naming file and path', async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'policies:\n  - name: a\n  - priority: 2\n');
    await assert.rejects(loadConfig(file), (err: unknown) => {
      assert.ok(isThemisError(err, 'THEMIS_ERR_CONFIG'));
      assert.equal(err.message, `configuration ${file}: policies[1].name: Invalid input: expected string, received undefined; found nothing`);
      return true;
    });
  });

  it('a syntax error names the file and the line', async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'listen: [unclosed\n');
    await assert.rejects(loadConfig(file), (err: unknown) => isThemisError(err, 'THEMIS_ERR_CONFIG') && err.message.includes(file) && /line/i.test(err.message));
  });

  it('a missing file and an unloadable plugin are coded errors with the place', async (t) => {
    const dir = tempDir(t);
    await assert.rejects(loadConfig(join(dir, 'nope.ts')), /no such file/);
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ plugins: ['./missing-plugin.ts', 'themis-plugin-that-does-not-exist'] }));
    await assert.rejects(loadConfig(file), (err: unknown) => {
      assert.ok(isThemisError(err, 'THEMIS_ERR_CONFIG_INVALID'));
      assert.match(err.message, /plugins\[0\].*missing-plugin/);
      assert.match(err.message, /plugins\[1\].*themis-plugin-that-does-not-exist/);
      return true;
    });
  });

  it('plugin fields: every unclaimed field and every invalid value, with bracketed paths and the value found', async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ plugins: [TAG], policies: [{ name: 'a', tag: { value: 'x' } }, { name: 'b', spf: {} }, { name: 'c', tag: { value: '' , extra: 1 } }] }));
    const c = await loadConfig(file);
    await assert.rejects(Kernel.create({ plugins: c.plugins, policies: c.policies }), (err: unknown) => {
      assert.ok(isThemisError(err, 'THEMIS_ERR_POLICIES_INVALID'));
      const problems = err.details.problems as { code: string; message: string }[];
      assert.deepEqual(problems.map((p) => p.code).sort(), ['THEMIS_ERR_POLICY_FIELD', 'THEMIS_ERR_POLICY_FIELD', 'THEMIS_ERR_POLICY_UNCLAIMED']);
      assert.ok(problems.some((p) => /^policies\[1\] \(b\): field spf is not claimed by any loaded plugin \(claimed: tag\)$/.test(p.message)));
      assert.ok(problems.some((p) => /^policies\[2\]\.tag\.value \(c\): .*found ""$/.test(p.message)), JSON.stringify(problems));
      assert.ok(problems.some((p) => /^policies\[2\]\.tag \(c\): .*extra/.test(p.message)), JSON.stringify(problems));
      return true;
    });
  });

  it('a field claimed by two plugins is an error naming both', async () => {
    const { default: tag } = await import(TAG);
    await assert.rejects(Kernel.create({ plugins: [{ plugin: tag }, { plugin: { ...tag, name: 'tag2' } }] }), (err: unknown) => isThemisError(err, 'THEMIS_ERR_PLUGIN_DUPLICATE_CLAIM') && /tag is claimed by both tag and tag2/.test(err.message));
  });

  it('a bad selector in a policy and an unclaimed field are both reported', async () => {
    const { default: tag } = await import(TAG);
    await assert.rejects(Kernel.create({ plugins: [{ plugin: tag }], policies: [{ name: 'x', match: { source: 'no-such-group' } }, { name: 'y', nope: 1 }] }), (err: unknown) => {
      assert.ok(isThemisError(err, 'THEMIS_ERR_POLICIES_INVALID'));
      assert.match(err.message, /THEMIS_ERR_POLICY_UNCLAIMED/);
      assert.match(err.message, /THEMIS_ERR_POLICY_FIELD: policies\[0\]\.match\.source \(x\)/);
      return true;
    });
  });
});

/** The TCP ports a process listens on (Linux: its socket inodes matched against /proc/net/tcp{,6}). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(table)) continue;
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is f[1] (HEXIP:HEXPORT), st is f[3] (0A = LISTEN), inode is f[9].
      if (f[3] === '0A' && inodes.has(f[9])) ports.push(parseInt(f[1].split(':')[1], 16));
    }
  }
  return ports;
}

describe('http: false', () => {
  it('is accepted and means no status endpoint, as http: { listen: false } does', async (t) => {
    const dir = tempDir(t);
    const off = join(dir, 'off.ts');
    writeFileSync(off, `export default { http: false };\n`);
    const c = await loadConfig(off);
    assert.equal(c.http, false);
    assert.equal(c.httpToken, undefined);
    const listenOff = join(dir, 'listen-off.json');
    writeFileSync(listenOff, JSON.stringify({ http: { listen: false, token: 'a-token-of-16-chars' } }));
    const d = await loadConfig(listenOff);
    assert.equal(d.http, false);
    assert.equal(d.httpToken, 'a-token-of-16-chars');
    const on = join(dir, 'on.yaml');
    writeFileSync(on, 'http:\n  listen: inet:1@127.0.0.1\n');
    assert.equal((await loadConfig(on)).http, 'inet:1@127.0.0.1');
  });

  it('true or a string is one problem saying what is allowed', async (t) => {
    const dir = tempDir(t);
    for (const value of [true, 'off']) {
      const file = join(dir, 'c.json');
      writeFileSync(file, JSON.stringify({ http: value }));
      await assert.rejects(loadConfig(file), (err: unknown) => {
        assert.ok(isThemisError(err, 'THEMIS_ERR_CONFIG'));
        assert.equal(err.message, `configuration ${file}: http: expected false (no status endpoint) or an object { listen, token }; found ${JSON.stringify(value)}`);
        return true;
      });
    }
  });

  it('themis start with it serves milter on its socket and no status endpoint at all', { skip: !existsSync('/proc/self/fd') && 'needs /proc' }, async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'themis.config.ts');
    writeFileSync(file, `export default { http: false };\n`);
    // No --http and no THEMIS_HTTP: the configuration alone decides.
    const themis = await startThemis(['--config', file], { THEMIS_HTTP: undefined, THEMIS_HTTP_TOKEN: undefined }, { http: 'config' });
    t.after(() => themis.stop());
    const started = themis.output().split('\n').map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return undefined; } }).find((l) => l?.msg === 'themis started');
    assert.ok(started, themis.output());
    assert.equal(started.http, false);
    assert.deepEqual(listeningPorts(themis.child.pid!), [themis.port], 'the milter socket is its only listening socket');
    assert.equal(await themis.stop(), 0);
  });
});
