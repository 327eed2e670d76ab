// Live policies under load: two daemons (two `themis start` processes, one configuration file) share one
// real redis-server, each behind its own real Postfix, while senders keep mail flowing through both. The
// CLI adds a live policy, is refused an invalid one, and deletes the live one again; the test measures
// when each daemon switched (a milter client probes each daemon continuously) and checks every SMTP
// session: none fails, and each carries the tag of the policies that applied when it started.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { MilterClient } from '../../src/milter/index.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../helpers/postfix.ts';
import { redisAvailable, startRedis } from '../helpers/redis.ts';
import { THEMIS_BIN, startThemis, type ThemisProcess } from '../helpers/themis.ts';

const TAG = fileURLToPath(new URL('../fixtures/plugins/tag.ts', import.meta.url));
const skip = !postfixAvailable() ? `postfix not available: ${postfixUnavailableReason()}` : !redisAvailable() ? 'redis-server not installed' : false;
if (skip) console.log(`# live-policies e2e skipped: ${skip}`);

/** How long after the command exits every daemon must serve the change. */
const WITHIN_MS = 1000;

interface Cli {
  code: number | null;
  stdout: string;
  stderr: string;
  startedAt: number;
  exitedAt: number;
}

/** Runs the `themis` bin asynchronously (the probes and senders go on meanwhile); resolves when it exits. */
function themis(args: string[]): Promise<Cli> {
  return new Promise((resolve, reject) => {
    const startedAt = Date.now();
    const child = spawn(process.execPath, [THEMIS_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, startedAt, exitedAt: Date.now() }));
  });
}

/** One milter session straight to a daemon: the X-Themis-Policy value it adds. */
async function tagOf(port: number): Promise<string | undefined> {
  const client = await MilterClient.connect(`inet:${port}@127.0.0.1`);
  try {
    const r = await client.sendMessage({ connect: { hostname: 'probe', address: '192.0.2.1' }, helo: 'probe', from: 'probe@example.org', to: ['rcpt@example.test'], headers: [['Subject', 'probe']], body: 'probe\r\n' });
    const m = r.modifications.find((x) => x.type === 'addHeader' && x.name === 'X-Themis-Policy');
    return m && m.type === 'addHeader' ? m.value : undefined;
  } finally {
    await client.quit();
  }
}

interface Sample {
  at: number;
  done: number;
  tag: string | undefined;
}

/**
 * When a daemon switched to `tag` after a command that ran from `started` to `exited`: between the
 * start of the last probe that still saw the old tag (`after`) and the completion of the first probe
 * from which on every probe (up to `until`) saw the new one (`by`), both in ms after the command
 * exited (negative: before it exited — the daemons reload while the command closes its connection).
 */
function switchWindow(samples: Sample[], started: number, exited: number, until: number, tag: string): { after: number; by: number } {
  const window = samples.filter((s) => s.at >= started && s.at < until);
  const lastOld = window.findLastIndex((s) => s.tag !== tag);
  const first = window.slice(lastOld + 1).find((s) => s.done >= exited);
  if (first === undefined) throw new Error(`never switched to ${tag}`);
  return { after: lastOld < 0 ? started - exited : window[lastOld].at - exited, by: first.done - exited };
}

interface Session {
  pf: number;
  id: string;
  start: number;
  end: number;
  code: number;
  out: string;
}

const header = (m: { headers: [string, string][] }, name: string) => m.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];

async function waitFor(what: string, predicate: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('live policies: two daemons, two Postfix, one Redis, under load', { skip }, () => {
  it('themis policy add/delete reach both daemons within a second with zero failed sessions; an invalid policy is refused and changes nothing', { timeout: 240_000 }, async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const dir = mkdtempSync(join(tmpdir(), 'themis-live-e2e-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    // pollInterval 30 s: a switch within a second can only come from the resync message.
    writeFileSync(
      file,
      JSON.stringify({ store: { type: 'redis', url: redis.url }, reload: { watch: false, pollInterval: 30_000 }, plugins: [TAG, 'themis-plugin-ratelimit'], policies: [{ name: 'every', tag: { value: 'v1' } }] }, null, 2),
    );
    const cfg = ['--config', file];

    const daemons: ThemisProcess[] = await Promise.all([startThemis(cfg, {}, { http: true }), startThemis(cfg, {}, { http: true })]);
    t.after(() => Promise.all(daemons.map((d) => d.stop())));
    const postfixes: PostfixInstance[] = await Promise.all(daemons.map((d) => startPostfix({ milter: `inet:127.0.0.1:${d.port}`, milterDefaultAction: 'tempfail' })));
    t.after(() => Promise.all(postfixes.map((p) => p.stop())));

    const generation = async (d: ThemisProcess): Promise<number> => {
      const r = await themis(['status', '--http', d.http!, '--json']);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { config: { generation: number } }).config.generation;
    };
    assert.deepEqual(await Promise.all(daemons.map(generation)), [1, 1]);

    // Load: two swaks loops per Postfix; a direct milter probe per daemon.
    let running = true;
    const sessions: Session[] = [];
    const sender = async (pf: number, loop: number) => {
      for (let n = 0; running; n++) {
        const id = `${pf}-${loop}-${n}`;
        const start = Date.now();
        const r = await postfixes[pf].swaks(['--from', `load${loop}@example.org`, '--to', 'rcpt@example.test', '--header', `Subject: load ${id}`]);
        sessions.push({ pf, id, start, end: Date.now(), code: r.code, out: r.stdout.slice(-400) + r.stderr.slice(-400) });
      }
    };
    const samples: Sample[][] = daemons.map(() => []);
    const probeErrors: string[] = [];
    const probe = async (i: number) => {
      while (running) {
        const at = Date.now();
        try {
          const tag = await tagOf(daemons[i].port);
          samples[i].push({ at, done: Date.now(), tag });
        } catch (err) {
          probeErrors.push(`daemon ${i}: ${(err as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const load = [...[0, 1].flatMap((pf) => [0, 1].map((loop) => sender(pf, loop))), probe(0), probe(1)];
    const startedAfter = (pf: number, since: number) => sessions.filter((s) => s.pf === pf && s.start >= since).length;
    try {
      await waitFor('traffic through both Postfix', () => startedAfter(0, 0) >= 5 && startedAfter(1, 0) >= 5, 60_000);

      // (a) a live policy, before the file's, with its own tag.
      const add = await themis(['policy', 'add', 'live', '--priority', '1', '--stop-here', '--field', 'tag={"value":"live"}', ...cfg]);
      assert.equal(add.code, 0, add.stderr);
      assert.match(add.stdout, /policy live added \(change 1\)/);
      await waitFor('both daemons serving the live policy', () => samples.every((s) => s.at(-1)?.tag === 'live' && s.at(-1)!.at > add.exitedAt), 10_000);
      await waitFor('sessions started a second after the command', () => startedAfter(0, add.exitedAt + WITHIN_MS) >= 5 && startedAfter(1, add.exitedAt + WITHIN_MS) >= 5, 60_000);
      const generationLive = await Promise.all(daemons.map(generation));
      assert.deepEqual(generationLive, [2, 2], 'one reload each');

      // (c) invalid policies: refused with a coded error, nothing written, no reload.
      const bad1 = await themis(['policy', 'add', 'bad', '--ratelimit', 'lots', ...cfg]);
      assert.equal(bad1.code, 1, bad1.stdout);
      assert.match(bad1.stderr, /THEMIS_ERR_POLICY_FIELD: .*ratelimit\.windows \(bad\)/);
      const bad2 = await themis(['policy', 'add', 'bad2', '--priority', '0', '--field', 'tag={}', ...cfg]);
      assert.equal(bad2.code, 1, bad2.stdout);
      assert.match(bad2.stderr, /THEMIS_ERR_POLICY_FIELD: .*tag\.value \(bad2\)/);
      const refusedAt = Date.now();
      await new Promise((r) => setTimeout(r, 1500));
      await waitFor('sessions after the refusals', () => startedAfter(0, refusedAt) >= 3 && startedAfter(1, refusedAt) >= 3, 60_000);
      assert.deepEqual(await Promise.all(daemons.map(generation)), generationLive, 'no reload after a refused change');
      for (const s of samples) assert.ok(s.filter((x) => x.at >= add.exitedAt + WITHIN_MS).every((x) => x.tag === 'live'), 'the live policy still applies');

      // (d) deleting the live policy brings the file's back.
      const del = await themis(['policy', 'delete', 'live', '--yes', ...cfg]);
      assert.equal(del.code, 0, del.stderr);
      assert.match(del.stdout, /policy live deleted \(change 2\)/);
      await waitFor('both daemons back on the file', () => samples.every((s) => s.at(-1)?.tag === 'v1' && s.at(-1)!.at > del.exitedAt), 10_000);
      await waitFor('sessions started a second after the delete', () => startedAfter(0, del.exitedAt + WITHIN_MS) >= 5 && startedAfter(1, del.exitedAt + WITHIN_MS) >= 5, 60_000);
      assert.deepEqual(await Promise.all(daemons.map(generation)), [3, 3]);

      running = false;
      await Promise.all(load);

      // The switch times, per daemon, measured by the probes.
      const toLive = samples.map((s) => switchWindow(s, add.startedAt, add.exitedAt, del.startedAt, 'live'));
      const toFile = samples.map((s) => switchWindow(s, del.startedAt, del.exitedAt, Infinity, 'v1'));
      const text = (w: { after: number; by: number }[]) => w.map((x, i) => `daemon ${i + 1} between ${x.after} and ${x.by} ms`).join(', ');
      t.diagnostic(`switch after policy add, relative to the command's exit: ${text(toLive)} (the command ran ${add.exitedAt - add.startedAt} ms)`);
      t.diagnostic(`switch after policy delete, relative to the command's exit: ${text(toFile)} (the command ran ${del.exitedAt - del.startedAt} ms)`);
      for (const w of [...toLive, ...toFile]) assert.ok(w.by <= WITHIN_MS, `switched within ${WITHIN_MS} ms of the command's exit (by ${w.by} ms)`);
      assert.deepEqual(probeErrors, []);

      // (b) every SMTP session succeeded.
      const failed = sessions.filter((s) => s.code !== 0);
      t.diagnostic(`${sessions.length} SMTP sessions (${startedAfter(0, 0)} + ${startedAfter(1, 0)}), ${failed.length} failed`);
      assert.ok(sessions.length > 0);
      assert.deepEqual(failed, [], 'no SMTP session failed');

      // Each delivered message carries the tag of the policies applying when its session started.
      for (const pf of [0, 1]) {
        const mine = sessions.filter((s) => s.pf === pf);
        const delivered = await postfixes[pf].waitForDelivered(mine.length, 120_000);
        assert.equal(delivered.length, mine.length);
        const tagBy = new Map(delivered.map((m) => [header(m, 'Subject')?.replace(/^load /, ''), header(m, 'X-Themis-Policy')]));
        const expect = (s: Session): string | undefined =>
          s.end < add.startedAt ? 'v1' : s.start >= add.exitedAt + WITHIN_MS && s.end < del.startedAt ? 'live' : s.start >= del.exitedAt + WITHIN_MS ? 'v1' : undefined;
        const checked = mine.filter((s) => expect(s) !== undefined);
        for (const s of checked) assert.equal(tagBy.get(s.id), expect(s), `session ${s.id} through Postfix ${pf + 1} (started ${s.start - add.exitedAt} ms after the add)`);
        assert.ok(mine.every((s) => ['v1', 'live'].includes(tagBy.get(s.id)!)), 'every message went through one set of policies');
        for (const tag of ['v1', 'live']) assert.ok(checked.some((s) => expect(s) === tag), `Postfix ${pf + 1} has ${tag} sessions to check`);
      }

      // The audit log has the two changes, none of the refused ones; the daemons logged the resyncs.
      const history = await themis(['policy', 'history', '--json', ...cfg]);
      assert.equal(history.code, 0, history.stderr);
      const entries = JSON.parse(history.stdout) as { seq: number; name: string; before: unknown; after: unknown }[];
      assert.deepEqual(entries.map((e) => [e.seq, e.name, e.before === null ? 'added' : e.after === null ? 'deleted' : 'changed']), [[2, 'live', 'deleted'], [1, 'live', 'added']]);
      for (const d of daemons) {
        assert.equal(d.output().split('"msg":"resync requested through the store"').length - 1, 2);
        assert.doesNotMatch(d.output(), /THEMIS_ERR_RELOAD_REFUSED/);
      }
    } finally {
      running = false;
      await Promise.allSettled(load);
    }
  });
});
