// The one merge of file and live policies, the resync protocol's messages, and the typed messages
// between the cluster primary and its workers: a stray message is rejected with a coded log line.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PolicyMatcher } from '../src/kernel/policy.ts';
import { MemoryStore } from '../src/store/store.ts';
import { RESYNC, announceResync, decodeResync, encodeResync, liveOrigin, mergeLive, watchResync, type LiveItems } from '../src/live/index.ts';
import { decodePrimaryMessage, decodeWorkerMessage, receive } from '../src/cli/daemon/messages.ts';

const file = {
  plugins: [],
  policies: [
    { name: 'inbound', priority: 5, spf: { fail: 'reject' } },
    { name: 'outbound', priority: 6 },
    { name: 'trusted', priority: 1, type: 'bypass' as const },
  ],
  policySettings: { groups: { internal: ['@a.example'] }, pools: { edge: { servers: ['mx1'] } }, outboundNetworks: ['10.0.0.0/8'] },
};
const none: LiveItems = { policies: {}, groups: {}, pools: {} };
const order = (m: { policies: readonly { name: string }[]; policySettings: object }) => new PolicyMatcher(m.policies as never, m.policySettings).all.map((p) => p.name);

describe('mergeLive: the file’s policies with the live ones', () => {
  it('add: a live policy the file does not have is added after the file’s', () => {
    const merged = mergeLive(file, { ...none, policies: { extra: { name: 'extra', priority: 3 } } });
    assert.deepEqual(merged.policies.map((p) => p.name), ['inbound', 'outbound', 'trusted', 'extra']);
    assert.equal(merged.plugins, file.plugins, 'the other fields pass through');
  });

  it('set: a live policy replaces the file’s of the same name, whole (no field of the file’s survives)', () => {
    const merged = mergeLive(file, { ...none, policies: { inbound: { name: 'inbound', priority: 9 } } });
    assert.deepEqual(merged.policies.find((p) => p.name === 'inbound'), { name: 'inbound', priority: 9 });
    assert.equal(merged.policies.filter((p) => p.name === 'inbound').length, 1);
    assert.equal(liveOrigin({ ...none, policies: { inbound: { name: 'inbound' } } }, 'policies', 'inbound'), 'live');
    assert.equal(liveOrigin({ ...none, policies: { inbound: { name: 'inbound' } } }, 'policies', 'outbound'), 'file');
  });

  it('remove: once the live policy is gone, the file’s applies again; without live items the file is served as is', () => {
    const before = mergeLive(file, { ...none, policies: { outbound: { name: 'outbound', priority: 1 } } });
    assert.equal(before.policies.find((p) => p.name === 'outbound')?.priority, 1);
    const after = mergeLive(file, none);
    assert.deepEqual(after.policies, file.policies);
    const untouched = mergeLive(file, undefined);
    assert.deepEqual(untouched.policies, file.policies);
    assert.equal(untouched.policySettings, file.policySettings, 'no live items: the file’s settings, not a copy with empty groups');
    assert.deepEqual(mergeLive({}, undefined), { policies: [], policySettings: {} });
  });

  it('ordering: priorities, not the merge, decide the evaluation order (ties by name)', () => {
    const merged = mergeLive(file, { ...none, policies: { outbound: { name: 'outbound', priority: 0 }, aaa: { name: 'aaa', priority: 5 } } });
    assert.deepEqual(order(merged), ['outbound', 'trusted', 'aaa', 'inbound']);
  });

  it('disabled: a live policy with enabled: false overrides the file’s and stays in the set, disabled', () => {
    const merged = mergeLive(file, { ...none, policies: { inbound: { name: 'inbound', enabled: false } } });
    assert.deepEqual(merged.policies.find((p) => p.name === 'inbound'), { name: 'inbound', enabled: false });
    assert.ok(order(merged).includes('inbound'));
  });

  it('groups and pools merge by name too; outbound networks stay the file’s; the file is never modified', () => {
    const snapshot = structuredClone(file);
    const merged = mergeLive(file, { policies: {}, groups: { internal: ['@b.example'], vip: ['sasl:boss'] }, pools: { core: { servers: ['mx9'] } } });
    assert.deepEqual(merged.policySettings, { groups: { internal: ['@b.example'], vip: ['sasl:boss'] }, pools: { edge: { servers: ['mx1'] }, core: { servers: ['mx9'] } }, outboundNetworks: ['10.0.0.0/8'] });
    assert.deepEqual(file, snapshot);
  });
});

describe('the resync protocol', () => {
  it('an announcement is the bare version; anything else is a coded error', () => {
    assert.equal(encodeResync({ version: '42' }), '42');
    assert.deepEqual(decodeResync('42'), { version: '42' });
    for (const bad of ['', 'reload', '4 2', '{"version":1}', undefined]) assert.throws(() => decodeResync(bad), { code: 'THEMIS_ERR_IPC_MESSAGE' });
  });

  it('a watcher acts once per new version, ignores malformed announcements with a coded warning, and stops', async () => {
    const store = new MemoryStore();
    await announceResync(store); // a version from before the daemon started: already applied
    const seen: string[] = [];
    const warnings: Record<string, unknown>[] = [];
    const stop = await watchResync(store, { pollInterval: 60_000, logger: { info: () => {}, warn: (f) => warnings.push(f) }, onResync: (v) => seen.push(v) });
    assert.equal(await announceResync(store), 2);
    await store.publish(RESYNC.channel, 'not a version');
    await store.publish(RESYNC.channel, '2'); // the same version again: nothing more to do
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen, ['2']);
    assert.deepEqual(warnings.map((w) => w.code), ['THEMIS_ERR_IPC_MESSAGE']);
    stop();
    await new Promise((r) => setImmediate(r));
    await announceResync(store);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen, ['2']);
    await store.close();
  });
});

describe('messages between the cluster primary and its workers', () => {
  it('the known messages decode to their typed form, both ways', () => {
    assert.deepEqual(decodePrimaryMessage({ themis: 'status', id: 1 }), { themis: 'status', id: 1 });
    assert.deepEqual(decodePrimaryMessage({ themis: 'http', id: 2, request: { path: '/x', query: { a: 'b' } } }), { themis: 'http', id: 2, request: { path: '/x', query: { a: 'b' } } });
    assert.deepEqual(decodePrimaryMessage({ themis: 'stop' }), { themis: 'stop' });
    assert.deepEqual(decodeWorkerMessage({ themis: 'listening', address: 'inet:1@127.0.0.1' }), { themis: 'listening', address: 'inet:1@127.0.0.1' });
    assert.deepEqual(decodeWorkerMessage({ themis: 'http', id: 3, response: null, routes: ['/a'] }), { themis: 'http', id: 3, response: null, routes: ['/a'] });
    const status = { pid: 7, worker: 1 };
    assert.deepEqual(decodeWorkerMessage({ themis: 'status', id: 4, status }), { themis: 'status', id: 4, status });
  });

  it('messages that are not Themis’s (prom-client’s metrics requests) are left alone, without a log line', () => {
    const errors: unknown[] = [];
    const logger = { error: (f: unknown) => errors.push(f) };
    assert.equal(receive({ type: 'prom-client:getMetricsReq', requestId: 1 }, decodePrimaryMessage, logger), undefined);
    assert.equal(receive('hello', decodeWorkerMessage, logger), undefined);
    assert.equal(receive(null, decodeWorkerMessage, logger), undefined);
    assert.deepEqual(errors, []);
  });

  it('an unknown or malformed message is rejected with a logged THEMIS_ERR_IPC_MESSAGE, not a crash', () => {
    const bad: [unknown, (raw: unknown) => unknown][] = [
      [{ themis: 'reboot' }, decodePrimaryMessage],
      [{ themis: 'status' }, decodePrimaryMessage],
      [{ themis: 'http', id: 1, request: { path: 3 } }, decodePrimaryMessage],
      [{ themis: 'http', id: 1, request: { path: '/', query: { a: 1 } } }, decodePrimaryMessage],
      [{ themis: 42 }, decodeWorkerMessage],
      [{ themis: 'status', id: 1, status: 'fine' }, decodeWorkerMessage],
      [{ themis: 'http', id: 1, response: { body: 'x' }, routes: [] }, decodeWorkerMessage],
      [{ themis: 'http', id: 1, response: null }, decodeWorkerMessage],
      [{ themis: 'listening', address: 5 }, decodeWorkerMessage],
    ];
    for (const [raw, decode] of bad) {
      assert.throws(() => decode(raw), { code: 'THEMIS_ERR_IPC_MESSAGE' }, JSON.stringify(raw));
      const logged: { fields: Record<string, unknown>; message: string }[] = [];
      assert.equal(receive(raw, decode, { error: (fields, message) => logged.push({ fields, message }) }), undefined);
      assert.equal(logged.length, 1);
      assert.equal(logged[0].fields.code, 'THEMIS_ERR_IPC_MESSAGE');
      assert.match(logged[0].message, /ignored a malformed message on the (worker|primary) IPC channel/);
    }
  });
});
