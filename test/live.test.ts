// The live items in the store: writing, reading, the audit log, and how they merge over the file.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStore } from '../src/store/store.ts';
import { mergeLive, readAudit, readLive, writeLive, hasLive, LIVE_AUDIT_KEEP, LIVE_KEYS } from '../src/live/index.ts';
import { redact } from '../src/cli/live-cmd.ts';

describe('live policies in the store', () => {
  it('write, read, delete, with an audit entry per change (who, when, command, before, after)', async () => {
    const store = new MemoryStore();
    assert.equal(hasLive(await readLive(store)), false);
    await writeLive(store, 'policy', 'default', { name: 'default', match: { source: 'any' } }, 'themis policy add default --source any');
    await writeLive(store, 'group', 'internal', ['@example.com'], 'themis group add internal @example.com');
    await writeLive(store, 'policy', 'default', { name: 'default', match: { source: 'internal' } }, 'themis policy set default --source internal');
    await writeLive(store, 'pool', 'edge', { servers: ['mx1.example.com'] }, 'themis pool add edge mx1.example.com');
    const live = await readLive(store);
    assert.deepEqual(live, { policies: { default: { name: 'default', match: { source: 'internal' } } }, groups: { internal: ['@example.com'] }, pools: { edge: { servers: ['mx1.example.com'] } } });
    await writeLive(store, 'pool', 'edge', null, 'themis pool delete edge --yes');
    assert.deepEqual((await readLive(store)).pools, {});
    const audit = await readAudit(store, 10);
    assert.deepEqual(audit.map((e) => [e.seq, e.kind, e.name]), [[5, 'pool', 'edge'], [4, 'pool', 'edge'], [3, 'policy', 'default'], [2, 'group', 'internal'], [1, 'policy', 'default']]);
    assert.deepEqual([audit[0].before, audit[0].after], [{ servers: ['mx1.example.com'] }, null]);
    assert.deepEqual(audit[2].before, { name: 'default', match: { source: 'any' } });
    assert.match(audit[2].who, /.+@.+/);
    assert.ok(Date.parse(audit[2].at) > 0);
    assert.deepEqual((await readAudit(store, 10, 'default')).map((e) => e.seq), [3, 1]);
    assert.deepEqual((await readAudit(store, 1)).map((e) => e.seq), [5]);
    await store.close();
  });

  it('the audit log keeps its newest LIVE_AUDIT_KEEP entries: its keys have no expiry, so it is bounded by count', async () => {
    const store = new MemoryStore();
    const changes = LIVE_AUDIT_KEEP + 25;
    for (let i = 1; i <= changes; i++) await writeLive(store, 'group', 'g', [`@d${i}.example`], `themis group set g @d${i}.example`);
    let auditKeys = 0;
    for await (const _ of store.scanKeys('live:audit:')) auditKeys++;
    assert.equal(auditKeys, LIVE_AUDIT_KEEP, 'one key per kept entry, the oldest deleted');
    assert.equal(await store.get(LIVE_KEYS.audit(25)), undefined);
    assert.ok((await store.get(LIVE_KEYS.audit(26))) !== undefined);
    const all = await readAudit(store, Number.MAX_SAFE_INTEGER);
    assert.equal(all.length, LIVE_AUDIT_KEEP);
    assert.deepEqual([all[0].seq, all.at(-1)!.seq], [changes, 26]);
    await store.close();
  });

  it('a value nobody could have written through the command is skipped, the others still apply', async () => {
    const store = new MemoryStore();
    await store.set(LIVE_KEYS.item('policy', 'broken'), '{not json');
    await writeLive(store, 'policy', 'ok', { name: 'ok' }, 'x');
    assert.deepEqual(Object.keys((await readLive(store)).policies), ['ok']);
    await store.close();
  });

  it('merges over the file by name: a live item replaces the file’s, the others are added', () => {
    const base = { plugins: [], policies: [{ name: 'inbound', priority: 5 }, { name: 'outbound', priority: 6 }], policySettings: { groups: { internal: ['@a.example'], vip: ['sasl:boss'] }, pools: { edge: { servers: ['mx1'] } }, outboundNetworks: ['10.0.0.0/8'] } };
    const merged = mergeLive(base, { policies: { outbound: { name: 'outbound', priority: 1 }, extra: { name: 'extra' } }, groups: { internal: ['@b.example'] }, pools: { core: { servers: ['mx9'] } } });
    assert.deepEqual(merged.policies, [{ name: 'inbound', priority: 5 }, { name: 'outbound', priority: 1 }, { name: 'extra' }]);
    assert.deepEqual(merged.policySettings, { groups: { internal: ['@b.example'], vip: ['sasl:boss'] }, pools: { edge: { servers: ['mx1'] }, core: { servers: ['mx9'] } }, outboundNetworks: ['10.0.0.0/8'] });
    assert.deepEqual(base.policies.length, 2, 'the file’s list is not changed');
  });

  it('the audit log never keeps the store’s password (flag or URL)', () => {
    assert.deepEqual(redact(['add', 'p', '--redis-password', 's3cret', '--redis-password=s3cret', '--redis-url', 'redis://u:s3cret@db:6379', '--redis-url=rediss://:s3cret@db']), ['add', 'p', '--redis-password', '***', '--redis-password=***', '--redis-url', 'redis://***@db:6379', '--redis-url=rediss://***@db']);
  });
});
