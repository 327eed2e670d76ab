// Daemons that share one real Redis: a resync published through the store reaches every one of
// them (the original's reached only the first), a daemon that missed the announcement catches up,
// and --workers runs several processes on one socket, each reloaded by SIGHUP.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { MilterClient } from '../../src/milter/index.ts';
import { fetchStatus } from '../../src/cli/http.ts';
import { createStore } from '../../src/store/index.ts';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis.ts';
import { THEMIS_BIN, startThemis, type ThemisProcess } from '../helpers/themis.ts';

const TAG = fileURLToPath(new URL('../fixtures/plugins/tag.ts', import.meta.url));
const skip = redisAvailable() ? false : 'redis-server not installed';

function writeConfig(file: string, value: string, redis: RedisServer, extra: object = {}): void {
  writeFileSync(file, JSON.stringify({ store: { type: 'redis', url: redis.url }, reload: { watch: false, pollInterval: 300 }, plugins: [TAG], policies: [{ name: 'every', tag: { value } }], ...extra }));
}

async function tagOf(themis: ThemisProcess): Promise<string | undefined> {
  const client = await MilterClient.connect(`inet:${themis.port}@127.0.0.1`);
  const r = await client.sendMessage({ connect: { hostname: 'h', address: '192.0.2.1' }, helo: 'h', from: 'a@example.org', to: ['b@example.test'], headers: [['Subject', 'x']], body: 'hi\r\n' });
  await client.quit();
  const m = r.modifications.find((x) => x.type === 'addHeader' && x.name === 'X-Themis-Policy');
  return m && m.type === 'addHeader' ? m.value : undefined;
}

async function eventually(what: string, fn: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('daemons sharing a Redis', { skip }, () => {
  it('themis config resync reaches every daemon; one that missed the message catches up by polling', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const dir = mkdtempSync(join(tmpdir(), 'themis-resync-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const files = [join(dir, 'a.json'), join(dir, 'b.json')];
    for (const f of files) writeConfig(f, 'v1', redis);
    const daemons = await Promise.all(files.map((f) => startThemis(['--config', f], {}, { http: true })));
    t.after(() => Promise.all(daemons.map((d) => d.stop())));
    for (const d of daemons) assert.equal(await tagOf(d), 'v1');
    const hashOf = async (d: ThemisProcess) => ((await fetchStatus(d.http!)) as { config: { hash: string } }).config.hash;
    const before = await Promise.all(daemons.map(hashOf));

    // The files change; nothing watches them (reload.watch: false), so nothing happens yet.
    for (const f of files) writeConfig(f, 'v2', redis);
    await new Promise((r) => setTimeout(r, 500));
    for (const d of daemons) assert.equal(await tagOf(d), 'v1');

    const r = spawnSync(process.execPath, [THEMIS_BIN, 'config', 'resync', '--redis-url', redis.url], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /resync 1 published/);
    await eventually('both daemons reloaded', async () => (await Promise.all(daemons.map(tagOf))).every((v) => v === 'v2'));
    const after = await Promise.all(daemons.map(hashOf));
    assert.ok(after.every((h, i) => h !== before[i]), 'each status shows the new hash');
    for (const d of daemons) assert.match(d.output(), /"trigger":"resync".*"msg":"configuration reloaded"/);

    // A version bump with no announcement (as seen by a daemon that was disconnected): caught up by polling.
    for (const f of files) writeConfig(f, 'v3', redis);
    const store = createStore({ type: 'redis', url: redis.url });
    t.after(() => store.close());
    await store.increment('config:version', 1);
    await eventually('both daemons caught up', async () => (await Promise.all(daemons.map(tagOf))).every((v) => v === 'v3'));
  });

  it('--workers 2: one socket, every worker in /status, SIGHUP reloads them all, SIGTERM drains them', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const dir = mkdtempSync(join(tmpdir(), 'themis-workers-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    writeConfig(file, 'w1', redis);
    const themis = await startThemis(['--config', file, '--workers', '2'], {}, { http: true });
    t.after(() => themis.stop());
    type Status = { mode: string; workers: { pid: number; config: { hash: string; generation: number } }[]; config: { hash: string } };
    const status = (await fetchStatus(themis.http!)) as Status;
    assert.equal(status.mode, 'cluster');
    assert.equal(status.workers.length, 2);
    assert.notEqual(status.workers[0].pid, status.workers[1].pid);
    for (let i = 0; i < 4; i++) assert.equal(await tagOf(themis), 'w1');

    writeConfig(file, 'w2', redis);
    themis.child.kill('SIGHUP');
    await eventually('every worker at generation 2', async () => ((await fetchStatus(themis.http!)) as Status).workers.every((w) => w.config.generation === 2));
    for (let i = 0; i < 4; i++) assert.equal(await tagOf(themis), 'w2');
    const metrics = await fetch(`http://127.0.0.1:${themis.http!.split(':')[1].split('@')[0]}/metrics`).then((r) => r.text());
    assert.match(metrics, /themis_config_reloads_total\{trigger="SIGHUP",result="ok"\} 2/, 'the aggregated metrics count both workers');
    // systemd stops a unit by signalling its whole control group: the primary and every worker at once.
    const pids = ((await fetchStatus(themis.http!)) as Status).workers.map((w) => w.pid);
    for (const pid of pids) process.kill(pid, 'SIGTERM');
    assert.equal(await themis.stop(), 0);
    assert.match(themis.output(), /"msg":"themis stopped"/);
    assert.doesNotMatch(themis.output(), /second signal/, 'a worker signalled directly and asked by the primary still drains');
  });

  it('a daemon starts and serves while Redis is down, and uses it once it is back', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    await redis.kill();
    const dir = mkdtempSync(join(tmpdir(), 'themis-down-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    writeConfig(file, 'd1', redis);
    const themis = await startThemis(['--config', file], {}, { http: true });
    t.after(() => themis.stop());
    assert.equal(await tagOf(themis), 'd1', 'mail flows without the store');
    assert.notEqual(((await fetchStatus(themis.http!)) as { store: { status: string } }).store.status, 'ready');
    await redis.start();
    await eventually('the store reconnected', async () => ((await fetchStatus(themis.http!)) as { store: { status: string } }).store.status === 'ready');
    writeConfig(file, 'd2', redis);
    const r = spawnSync(process.execPath, [THEMIS_BIN, 'config', 'resync', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    await eventually('the resync applied', async () => (await tagOf(themis)) === 'd2');
  });
});
