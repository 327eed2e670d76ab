// The monitor's bounds (issue 21): whatever the traffic, the recorder holds fewer than 2 × topKeep
// candidates per top-N list and per refused/over-rate list between flushes (topKeep in the store),
// a store outage keeps no more than the retention's worth of minutes, and every key it writes is
// gone once its retention has passed. 1,000,000 distinct senders go to the recorder directly (the
// kernel would take minutes); a smaller run goes through the kernel.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from 'themis-milter';
import { createTestKernel, useTestClock } from 'themis-milter/testing';
import ratelimit from '../../ratelimit/src/index.ts';
import monitor, { Recorder, keys } from '../src/index.ts';

const START = Date.UTC(2026, 0, 1);
const HOUR = 3_600_000;

/** A memory store whose monitor writes always fail (a Redis outage). */
class DownStore extends MemoryStore {
  override async counterAdd(): Promise<void> {
    throw Object.assign(new Error('connection refused'), { code: 'THEMIS_ERR_STORE_UNAVAILABLE' });
  }
  override async rankAdd(): Promise<void> {
    throw Object.assign(new Error('connection refused'), { code: 'THEMIS_ERR_STORE_UNAVAILABLE' });
  }
}

describe('monitor bounds', () => {
  it('1,000,000 distinct senders: fewer than 2 × topKeep candidates in memory, topKeep in the store; a heavy sender stays on top', async () => {
    const store = new MemoryStore();
    const keep = 1_000;
    const r = new Recorder({ store, prefix: 'monitor:', retentionMs: HOUR, keep, onError: (err) => assert.fail(String(err)), now: () => START });
    let largest = 0;
    for (let i = 0; i < 1_000_000; i++) {
      r.rank('senders', `s${i}@example.org`);
      r.rank('senderIps', `s${i}@example.org 192.0.2.${i % 250}`);
      r.rank('subjects', `subject ${i}`);
      if (i % 100 === 0) r.rank('senders', 'heavy@example.org');
      if (i % 50_000 === 0) largest = Math.max(largest, r.sizes.largestList);
    }
    largest = Math.max(largest, r.sizes.largestList);
    assert.ok(largest < 2 * keep, `a list held ${largest} candidates`);
    assert.equal(r.sizes.lists, 3);
    await r.flush();
    const hour = Math.floor(START / HOUR);
    const lists = await store.rankRead(['senders', 'senderIps', 'subjects'].map((k) => keys.top('monitor:', k as 'senders', hour)), 1_000_000);
    for (const list of lists) assert.ok(list.length > 0 && list.length <= keep, `${list.length} members in the store`);
    assert.deepEqual(lists[0][0], ['heavy@example.org', 10_000], 'counted exactly: it never left the candidates');
    assert.equal(r.sizes.largestList, 0, 'nothing pending after the flush');
    await store.close();
  });

  it('1,000,000 distinct refused and over-rate subjects: fewer than 2 × topKeep pending, topKeep in the store, the latest kept', async () => {
    const store = new MemoryStore();
    const keep = 1_000;
    const r = new Recorder({ store, prefix: 'monitor:', retentionMs: HOUR, keep, onError: (err) => assert.fail(String(err)), now: () => START });
    let most = 0;
    for (let i = 0; i < 1_000_000; i++) {
      r.block(`p\u001fsender:s${i}@example.org\u001f3/1h`, START + 60_000 + i);
      r.overRate(`p\u001fs${i}@example.org\u001f0`, START + 60_000 + i);
      if (i % 50_000 === 0) most = Math.max(most, r.sizes.blocked, r.sizes.over);
    }
    most = Math.max(most, r.sizes.blocked, r.sizes.over);
    assert.ok(most < 2 * keep, `${most} pending`);
    await r.flush();
    const [blocked, over] = await store.rankRead([keys.blocked('monitor:'), keys.over('monitor:')], 1_000_000);
    assert.equal(blocked.length, keep);
    assert.equal(over.length, keep);
    assert.equal(blocked[0][1], START + 60_000 + 999_999, 'the longest refusal is kept');
    assert.equal(blocked[keep - 1][1], START + 60_000 + 1_000_000 - keep);
    await store.close();
  });

  it('marks whose time has passed are dropped from the pending lists', () => {
    let now = START;
    const r = new Recorder({ store: new MemoryStore(), prefix: 'm:', retentionMs: HOUR, keep: 10, onError: () => undefined, now: () => now });
    for (let i = 0; i < 15; i++) r.block(`old${i}`, START + 1_000);
    now += 2_000;
    for (let i = 0; i < 5; i++) r.block(`new${i}`, now + 1_000);
    assert.equal(r.sizes.blocked, 5, 'the 15 past marks went at the trim');
  });

  it('a store outage: pending counts stay within the retention and the list bounds, whatever the traffic', async () => {
    let now = START;
    const keep = 10;
    const store = new DownStore();
    let failures = 0;
    const r = new Recorder({ store, prefix: 'monitor:', retentionMs: HOUR, keep, onError: () => void failures++, now: () => now });
    // Four hours of traffic, a flush a minute, every flush failing.
    for (let minute = 0; minute < 240; minute++) {
      for (let i = 0; i < 200; i++) {
        const m = r.minute();
        r.add(m, 'messages');
        r.add(m, `o:accepted`);
        r.rank('senders', `m${minute}s${i}@example.org`);
        r.block(`p\u001fsender:m${minute}s${i}\u001f3/1h`, now + 600_000);
      }
      await r.flush();
      now += 60_000;
      const s = r.sizes;
      assert.ok(s.minutes <= 61, `${s.minutes} minutes pending`);
      assert.ok(s.lists <= 2, `${s.lists} lists pending: this hour's and the last, the older ones past the retention`);
      assert.ok(s.largestList < 2 * keep, `${s.largestList} candidates in a list`);
      assert.ok(s.blocked < 2 * keep, `${s.blocked} blocked pending`);
    }
    assert.ok(failures > 0);
    assert.ok(r.sizes.fields <= 61 * 2, `${r.sizes.fields} fields pending`);
    assert.equal(r.totals.size, 2, 'process totals: one per field, never per sender');
    await store.close();
  });

  it('through the kernel: lists hold topKeep members, and every key is gone after the retention', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const store = new MemoryStore({ sweepIntervalMs: 60_000 });
    const base = store.size;
    const k = await createTestKernel({
      store,
      plugins: [{ plugin: monitor, options: { topKeep: 10, retentionHours: 1, flushIntervalMs: 1_000 } }, ratelimit],
      policies: [{ name: 'limited', ratelimit: { windows: '1/1m', by: 'sender' } }],
    });
    for (let i = 0; i < 150; i++) {
      const from = `s${i % 75}@example.org`;
      await k.message({ from, rcpt: ['r@example.net'], headers: { Subject: `hello ${i}` }, client: { address: `192.0.2.${(i % 200) + 1}` } });
    }
    await clock.advance(1_000);
    const written = [];
    for await (const key of store.scanKeys('monitor:')) written.push(key);
    assert.ok(written.some((key) => key.startsWith('monitor:m:')), 'minute counters');
    assert.ok(written.includes('monitor:blocked'), 'the second message of each sender was refused');
    const tops = written.filter((key) => key.startsWith('monitor:top:'));
    assert.equal(tops.length, 4, 'senders, senderIps, subjects, blocked');
    for (const list of await store.rankRead(tops, 1_000)) assert.ok(list.length <= 10, `${list.length} members`);
    // The hour ends, then the retention: every key has expired, and the sweep took them without reads.
    await clock.advance(2 * HOUR + 120_000);
    assert.equal(store.size, base, `left: ${[...(store as unknown as { data: Map<string, unknown> }).data.keys()].join(', ')}`);
    await k.close();
  });
});
