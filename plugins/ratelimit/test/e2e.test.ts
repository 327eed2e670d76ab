// The ratelimit plugin in `themis start`, with a real Redis: through a real Postfix (the (N+1)-th
// message refused with the configured text, hold, `themis limits show/unblock`); two daemons and 50
// concurrent milter connections on one subject (exactly N admitted); Redis killed mid-run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MilterClient } from 'themis-milter/milter';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../../../test/helpers/postfix.ts';
import { redisAvailable, startRedis, type RedisServer } from '../../../test/helpers/redis.ts';
import { THEMIS_BIN, startThemis, type ThemisProcess } from '../../../test/helpers/themis.ts';

const noRedis = redisAvailable() ? false : 'redis-server not installed';

function configFile(t: { after(fn: () => void): void }, redis: RedisServer, policies: object[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'themis-rl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'themis.config.json');
  // A generous store deadline: these tests are about exact counting, and this machine is shared.
  writeFileSync(file, JSON.stringify({ store: { type: 'redis', url: redis.url }, plugins: [{ plugin: 'themis-plugin-ratelimit', options: { storeTimeout: 2_000 } }], policies }));
  return file;
}

const limits = (file: string, args: string[]) => spawnSync(process.execPath, [THEMIS_BIN, 'limits', ...args, '--config', file], { encoding: 'utf8', timeout: 20_000 });

async function send(themis: ThemisProcess, from: string): Promise<string> {
  const client = await MilterClient.connect(`inet:${themis.port}@127.0.0.1`);
  try {
    const r = await client.sendMessage({ connect: { hostname: 'h', address: '192.0.2.1' }, helo: 'h', from, to: ['rcpt@example.test'], headers: [['Subject', 'x']], body: 'hi\r\n' });
    return r.reply.action;
  } finally {
    await client.quit().catch(() => client.destroy());
  }
}

describe('ratelimit end to end', { skip: noRedis }, () => {
  it('through Postfix: the (N+1)-th message gets the configured text, hold holds, limits show and unblock work', { skip: noRedis || (postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}`) }, async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const file = configFile(t, redis, [
      { name: 'held', priority: 1, match: { source: '@held.example' }, ratelimit: { windows: '1/1h', by: 'sender', action: 'hold' }, stopHere: true },
      { name: 'senders', priority: 2, ratelimit: { windows: '2/1h', by: 'sender', jail: '1h', reply: { code: 451, enhanced: '4.7.1', text: 'Slow down: {limit} per {window}, wait {wait} s' } } },
    ]);
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    for (let i = 0; i < 2; i++) assert.equal((await pf.swaks(['--from', 'busy@example.org', '--to', 'r@example.test'])).code, 0);
    const third = await pf.swaks(['--from', 'busy@example.org', '--to', 'r@example.test']);
    assert.match(third.stdout, /<\*\* 451 4\.7\.1 Slow down: 2 per 1h, wait \d+ s/);
    await pf.waitForDelivered(2);

    const show = limits(file, ['show', 'busy@example.org', '--policy', 'senders', '--json']);
    assert.equal(show.status, 0, show.stderr);
    const [state] = JSON.parse(show.stdout);
    assert.equal(state.windows[0].used, 2);
    assert.equal(state.windows[0].limit, 2);
    assert.ok(state.jailedForSeconds > 3000, 'the penalty block is visible');
    const list = limits(file, ['list', '--blocked']);
    assert.match(list.stdout, /senders \(sender\) busy@example\.org/);

    const unblock = limits(file, ['unblock', 'busy@example.org']);
    assert.equal(unblock.status, 0, unblock.stderr);
    assert.equal(limits(file, ['reset', 'busy@example.org']).status, 0);
    assert.equal((await pf.swaks(['--from', 'busy@example.org', '--to', 'r@example.test'])).code, 0, 'after unblock and reset the next message passes');
    await pf.waitForDelivered(3);

    assert.equal((await pf.swaks(['--from', 'a@held.example', '--to', 'r@example.test'])).code, 0);
    assert.equal((await pf.swaks(['--from', 'a@held.example', '--to', 'r@example.test'])).code, 0, 'a held message is accepted by Postfix');
    assert.equal((await pf.waitForHeld(1)).length, 1, 'and lands on the hold queue');
    const raise = limits(file, ['limit', 'busy@example.org', '1h=50', '--policy', 'senders', '--json']);
    assert.equal(raise.status, 0, raise.stderr);
    assert.equal(JSON.parse(raise.stdout)[0].windows[0].limit, 50, 'a per-subject limit in the store');
    assert.equal(limits(file, ['limit', 'busy@example.org', '1d=5', '--policy', 'senders']).status, 1, 'a window the policy does not have is refused');
    const block = limits(file, ['block', 'busy@example.org', 'on', '--policy', 'senders']);
    assert.equal(block.status, 0, block.stderr);
    const refused = await pf.swaks(['--from', 'busy@example.org', '--to', 'r@example.test']);
    assert.match(refused.stdout, /<\*\* 550 5\.7\.1 Account manually blocked, contact your administrator/);
  });

  it('two daemons, 50 concurrent connections, one subject with limit N: exactly N admitted', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const N = 17;
    const file = configFile(t, redis, [{ name: 'one', ratelimit: { windows: `${N}/1h`, by: 'sender' } }]);
    const daemons = await Promise.all([startThemis(['--config', file]), startThemis(['--config', file])]);
    t.after(() => Promise.all(daemons.map((d) => d.stop())));
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => send(daemons[i % 2], 'hammer@example.org')));
    assert.equal(answers.filter((a) => a === 'accept').length, N);
    assert.equal(answers.filter((a) => a === 'tempfail').length, 50 - N);
  });

  it('Redis killed mid-run: no crash, onStoreError decides, errors counted, limits back when Redis returns', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const file = configFile(t, redis, [{ name: 'p', ratelimit: { windows: '2/1h', by: 'sender', onStoreError: 'accept' } }]);
    const themis = await startThemis(['--config', file], {}, { http: true });
    t.after(() => themis.stop());
    assert.equal(await send(themis, 's@example.org'), 'accept');
    await redis.kill();
    for (let i = 0; i < 5; i++) assert.equal(await send(themis, 's@example.org'), 'accept', 'fail open while Redis is down');
    const metrics = await fetch(`http://127.0.0.1:${themis.http!.replace(/^inet:(\d+)@.*$/, '$1')}/metrics`).then((r) => r.text());
    assert.match(metrics, /themis_plugin_ratelimit_store_errors_total\{policy="p"\} 5/);
    await redis.start();
    // Counting resumes by itself: the store reconnects without a restart (the first message may still find it reconnecting).
    const deadline = Date.now() + 10_000;
    let answers: string[] = [];
    while (Date.now() < deadline) {
      answers = [await send(themis, 'fresh@example.org'), await send(themis, 'fresh@example.org'), await send(themis, 'fresh@example.org')];
      if (answers[2] === 'tempfail') break;
      await limitsReset(file);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(answers, ['accept', 'accept', 'tempfail']);
    assert.equal(themis.child.exitCode, null, 'still running');
  });
});

async function limitsReset(file: string): Promise<void> {
  limits(file, ['reset', 'fresh@example.org']);
}
