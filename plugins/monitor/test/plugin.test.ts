// The monitor through the kernel harness: what a store outage does (counts kept and written later,
// nothing lost), the in-memory bound of the top lists, connection-level refusals, and its routes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore, definePlugin } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import monitor, { Recorder } from '../src/index.ts';

/** A memory store whose writes fail while `down` is true. */
class FlakyStore extends MemoryStore {
  down = false;
  override async counterAdd(...args: Parameters<MemoryStore['counterAdd']>) {
    if (this.down) throw Object.assign(new Error('connection refused'), { code: 'THEMIS_ERR_STORE_UNAVAILABLE' });
    return super.counterAdd(...args);
  }
  override async rankAdd(...args: Parameters<MemoryStore['rankAdd']>) {
    if (this.down) throw Object.assign(new Error('connection refused'), { code: 'THEMIS_ERR_STORE_UNAVAILABLE' });
    return super.rankAdd(...args);
  }
}

const json = async (t: Awaited<ReturnType<typeof createTestKernel>>, path: string, query: Record<string, string> = {}) => {
  const r = await t.kernel.handleHttp({ path, query });
  assert.ok(r, `no route ${path}`);
  return { status: r.status ?? 200, body: JSON.parse(r.body) };
};

describe('monitor plugin', () => {
  it('a store outage loses no count: writes fail, are counted, kept and written once the store is back', async () => {
    const store = new FlakyStore();
    const t = await createTestKernel({ plugins: [{ plugin: monitor, options: { flushIntervalMs: 100_000 } }], store });
    store.down = true;
    for (let i = 0; i < 3; i++) await t.message({ from: `s${i}@example.org`, rcpt: ['r@example.net'] });
    const failed = await t.kernel.handleHttp({ path: '/api/stats', query: { minutes: '5' } });
    assert.equal(JSON.parse(failed!.body).totals.messages, 0, 'nothing reached the store');
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_monitor_store_errors_total'), / [1-9]\d*$/m);
    store.down = false;
    const back = await json(t, '/api/stats', { minutes: '5' });
    assert.equal(back.body.totals.messages, 3);
    assert.equal(back.body.totals.connections, 3);
    assert.deepEqual((await json(t, '/api/top', { minutes: '60', limit: '5' })).body.senders.length, 3);
    await t.close();
  });

  it("counts the authentication results the spf, dkim and dmarc notes hold: known results only, unverified left out", async () => {
    // Stand-ins named like the plugins: a note is keyed by its plugin's name.
    const noting = (name: string, notes: unknown[]) => {
      let i = 0;
      return definePlugin({ name, version: '1.0.0', kernel: '^1', setup: () => ({ endOfMessage: (ctx) => void ctx.message!.notes.set(notes[i++ % notes.length]) }) });
    };
    const t = await createTestKernel({
      plugins: [
        noting('spf', [{ result: 'pass' }, { result: 'fail' }, { result: 'pass' }, { result: '<script>' }]),
        noting('dkim', [{ result: 'pass', verified: true }, { result: 'none', verified: true }, { result: 'none', verified: false }, { result: 'permerror', verified: true }]),
        noting('dmarc', [{ result: 'pass' }, { result: 'fail' }, { result: 'fail' }, { result: 42 }]),
        monitor,
      ],
    });
    for (let i = 0; i < 4; i++) await t.message({ from: `s${i}@example.org`, rcpt: ['r@example.net'] });
    const { body } = await json(t, '/api/stats', { minutes: '5' });
    assert.deepEqual(body.authentication, [
      { method: 'spf', checked: 3, results: { pass: 2, fail: 1 } },
      { method: 'dkim', checked: 3, results: { pass: 1, none: 1, permerror: 1 } },
      { method: 'dmarc', checked: 3, results: { pass: 1, fail: 2 } },
    ]);
    const history = await json(t, '/api/history', { minutes: '5' });
    assert.equal(history.body.series.at(-1).auth['spf:pass'], 2);
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_monitor_auth_results_total'), /themis_plugin_monitor_auth_results_total\{method="dmarc",result="fail"\} 2/);
    await t.close();
  });

  it('counts connections refused before any message, apart from messages', async () => {
    const bouncer = definePlugin({ name: 'bouncer', version: '1.0.0', kernel: '^1', setup: () => ({ connect: (_ctx, e) => (e.address === '203.0.113.9' ? { action: 'reject', reason: 'listed' } : undefined) }) });
    const t = await createTestKernel({ plugins: [bouncer, monitor] });
    const c = await t.connect({ address: '203.0.113.9' });
    await c.close();
    await t.message({ from: 'a@example.org', rcpt: ['r@example.net'] });
    const stats = (await json(t, '/api/stats', { minutes: '5' })).body;
    assert.deepEqual(stats.totals, { messages: 1, recipients: 1, connections: 2, outcomes: { accepted: 1, 'connection-rejected': 1 } });
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_monitor_connections_refused_total'), /outcome="rejected"\} 1/);
    await t.close();
  });

  it('top-N candidates stay bounded in memory between flushes', async () => {
    const store = new MemoryStore();
    const r = new Recorder({ store, prefix: 'm:', retentionMs: 3_600_000, keep: 10, onError: () => assert.fail('no error expected') });
    for (let i = 0; i < 10_000; i++) r.rank('senders', `s${i}@example.org`, i === 42 ? 1_000 : 1);
    const pending = (r as unknown as { tops: Map<string, { members: Map<string, number> }> }).tops;
    assert.ok([...pending.values()].every((t) => t.members.size < 20), 'never more than twice keep');
    await r.flush();
    const hour = Math.floor(Date.now() / 3_600_000);
    const [rows] = await store.rankRead([`m:top:senders:${hour}`], 100);
    assert.ok(rows.length <= 10);
    assert.deepEqual(rows[0], ['s42@example.org', 1000], 'the heavy hitter survives the trimming');
    await store.close();
  });

  it('routes answer 400 for bad windows and limits', async () => {
    const t = await createTestKernel({ plugins: [{ plugin: monitor, options: { retentionHours: 1, topKeep: 50 } }] });
    assert.equal((await json(t, '/api/stats', { minutes: '61' })).status, 400);
    assert.match((await json(t, '/api/history', { minutes: '0' })).body.error, /from 1 to 60/);
    assert.match((await json(t, '/api/top', { limit: '51' })).body.error, /limit must be a whole number from 1 to 50/);
    assert.deepEqual(t.kernel.routePaths(), ['/api/history', '/api/stats', '/api/top', '/dashboard', '/dashboard/app.js', '/dashboard/style.css']);
    await t.close();
  });
});
