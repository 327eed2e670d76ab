// Two daemons sharing one real Redis (a pool): the history and the top lists are the sum of both; a
// daemon stopped with counts not yet flushed writes them on the way out, so restarting it loses
// nothing; with --workers, the primary hands the API to a worker and answers the same numbers.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { eventually, redisAvailable, startRedis } from '../../../test/helpers/redis.ts';
import { startThemis } from '../../../test/helpers/themis.ts';
import { TRAFFIC, getJson, send, writeConfig } from './helpers.ts';

const skip = redisAvailable() ? false : 'redis-server not installed';

describe('monitor across a pool sharing Redis', { skip }, () => {
  it('two daemons: the history is the sum; a restart loses nothing; --workers answers the same', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const dir = mkdtempSync(join(tmpdir(), 'themis-monitor-pool-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    // A long flush interval: only the shutdown flush and the API's own flush write the counts.
    writeConfig(file, { store: { type: 'redis', url: redis.url }, plugins: [{ plugin: 'themis-plugin-monitor', options: { flushIntervalMs: 600_000 } }, 'themis-plugin-ratelimit'] });
    const a = await startThemis(['--config', file], {}, { http: true });
    const b = await startThemis(['--config', file], {}, { http: true });
    t.after(() => Promise.all([a.stop(), b.stop()]));

    // The busy sender's 5 messages go through A, the quiet sender's 4 through B.
    for (const m of TRAFFIC) await send(m.from.startsWith('a@') ? a.port : b.port, m);
    // B's counts are still in B's memory: asking A does not flush them. Stopping B writes them out.
    assert.equal(await b.stop(), 0);
    for (const daemon of [a]) {
      const stats = await getJson(daemon.http!, '/api/stats?minutes=10');
      assert.deepEqual(stats.totals, { messages: 9, recipients: 13, connections: 9, outcomes: { accepted: 7, tempfailed: 2 } });
      assert.deepEqual(stats.servers.map((s: { name: string; messages: number }) => [s.name, s.messages]), [['mx1.test', 5], ['mx2.test', 4]]);
    }

    // B comes back (a new process): the history it reads still has everything, and adds to it.
    const b2 = await startThemis(['--config', file], {}, { http: true });
    t.after(() => b2.stop());
    await send(b2.port, { from: 'c@new.example', to: ['r@example.test'], ip: '192.0.2.30', mta: 'mx2.test', subject: 'after restart' });
    // B2 first: its API read flushes its count, which A then reads from the store.
    for (const daemon of [b2, a]) {
      const stats = await getJson(daemon.http!, '/api/stats?minutes=10');
      assert.equal(stats.totals.messages, 10, daemon.http);
      const top = await getJson(daemon.http!, '/api/top?minutes=60&limit=3');
      assert.deepEqual(top.senders, [{ key: 'a@busy.example', count: 5 }, { key: 'b@quiet.example', count: 4 }, { key: 'c@new.example', count: 1 }]);
    }

    // --workers 2: the primary serves the status endpoint and hands the API to a worker. Each worker
    // flushes its own counts (here every 200 ms): a count shows pool-wide within one interval.
    const fast = join(dir, 'fast.json');
    writeConfig(fast, { store: { type: 'redis', url: redis.url }, plugins: [{ plugin: 'themis-plugin-monitor', options: { flushIntervalMs: 200 } }, 'themis-plugin-ratelimit'] });
    const w = await startThemis(['--config', fast, '--workers', '2'], {}, { http: true });
    t.after(() => w.stop());
    await send(w.port, { from: 'd@workers.example', to: ['r@example.test'], ip: '192.0.2.40', mta: 'mx3.test', subject: 'through a worker' });
    await eventually(async () => (await getJson(w.http!, '/api/stats?minutes=10')).totals.messages === 11, 5_000, 'the worker count to show');
    for (let i = 0; i < 2; i++) assert.equal((await getJson(w.http!, '/api/stats?minutes=10')).totals.messages, 11, 'both workers answer the same');
  });
});
