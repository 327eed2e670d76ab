// The headers plugin's bounds (issue 21): it keeps nothing between messages — its working state is
// the message's note, dropped with the message — writes no store key, and its metrics are labelled
// by policy and rule (configuration), never by a header's value.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import headers from '../src/index.ts';

describe('headers bounds', () => {
  it('500 messages with distinct senders and subjects: no store key, metric series by rule only', async () => {
    const store = new MemoryStore();
    await store.set('other:plugin', 'kept');
    const base = store.size;
    const k = await createTestKernel({
      store,
      plugins: [headers],
      policies: [{ name: 'tagging', headers: [{ name: 'mark', if: { header: 'Subject', regex: '^offer' }, then: [{ add: 'X-Offer', value: 'yes' }] }] }],
    });
    for (let i = 0; i < 500; i++) await k.message({ from: `s${i}@example.org`, rcpt: ['r@example.net'], headers: [['Subject', `${i % 2 ? 'offer' : 'hello'} ${i}`]] });
    assert.equal(store.size, base);
    const series = (await k.kernel.registry.getSingleMetricAsString('themis_plugin_headers_rules_applied_total')).split('\n').filter((l) => l && !l.startsWith('#'));
    assert.deepEqual(series.map((l) => l.replace(/ \d+$/, '')), ['themis_plugin_headers_rules_applied_total{policy="tagging",rule="mark"}']);
    await k.close();
  });
});
