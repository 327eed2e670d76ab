// Long-lived connections (issue 21). An MTA keeps a milter connection for as long as its SMTP process
// lives and sends it message after message; idle ones wait, open, between clients. Over real sockets,
// with the kernel and plugins serving: 1,000 messages on one connection leave its state (the engine's
// session, the kernel's per-connection state, the heap) the size it had after the first 100, and 1,000
// idle connections held for an hour of simulated time (mock timers: the engine's idle sweep runs on
// setInterval and Date.now) keep their memory flat until the idle timeout (default 1 h) closes them.
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, it } from 'node:test';
import { definePlugin, Kernel } from '../../src/index.ts';
import { MilterClient, createMilterServer, type MilterLogger, type MilterServer } from '../../src/milter/index.ts';
import { useTestClock } from '../../src/testing/clock.ts';
import tag from '../fixtures/plugins/tag.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Heap used after full collections (a few, with the event loop turning in between, until it settles). */
async function heapAfterGc(): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage().heapUsed;
}

const KB = (n: number) => `${(n / 1024).toFixed(1)} KB`;

/** A plugin on every stage, with session and message notes and a `decision` hook: as much per-connection state as a plugin can make. */
function probePlugin() {
  const seen = { decisions: 0, entries: [] as number[] };
  const plugin = definePlugin({
    name: 'probe',
    version: '1.0.0',
    kernel: '^1',
    setup() {
      return {
        connect(ctx) {
          ctx.session.notes.set({ since: Date.now() });
        },
        helo: () => undefined,
        mailFrom(ctx) {
          ctx.message!.notes.set({ from: ctx.message!.sender?.address });
        },
        rcptTo: () => undefined,
        header: () => undefined,
        endOfHeaders: () => undefined,
        body: () => undefined,
        endOfMessage: () => undefined,
        decision(_ctx, trace) {
          seen.decisions++;
          seen.entries.push(trace.entries.length);
        },
      };
    },
  });
  return { plugin, seen };
}

type Internals = {
  recipients: unknown[];
  queue: unknown[];
  macros: { toObject(): Record<string, string> };
  state: {
    trace: unknown[];
    notes: Map<string, unknown>;
    contexts: unknown[];
    sessionViews: unknown[];
    applied: unknown[];
    message: unknown;
    lastMessage?: { trace: unknown[]; headers: unknown[]; recipients: unknown[]; notes: Map<string, unknown> };
  };
};
const connectionsOf = (server: MilterServer) => [...(server as unknown as { connections: Set<Internals> }).connections];

/** The sizes of everything a connection keeps between messages. */
function footprint(c: Internals) {
  const s = c.state;
  return {
    engineRecipients: c.recipients.length,
    engineQueue: c.queue.length,
    macros: Object.keys(c.macros.toObject()).length,
    connectionTrace: s.trace.length,
    connectionNotes: s.notes.size,
    contexts: s.contexts.length,
    sessionViews: s.sessionViews.length,
    appliedLists: s.applied.length,
    openMessage: s.message !== undefined,
    lastMessage: s.lastMessage && { trace: s.lastMessage.trace.length, headers: s.lastMessage.headers.length, recipients: s.lastMessage.recipients.length, notes: s.lastMessage.notes.size },
  };
}

const WARM = 500;

const policies = [{ name: 'every', tag: { value: 'long-lived' } }];

const postfixLike = (i: number) => ({
  // Postfix's macros at each stage, with a queue id per message (the engine keeps one packet per stage).
  from: { address: `sender${i % 7}@example.org`, macros: { i: `Q${i}`, '{auth_authen}': '', '{mail_addr}': `sender${i % 7}@example.org` } },
  to: [{ address: 'rcpt@example.test', macros: { i: `Q${i}`, '{rcpt_addr}': 'rcpt@example.test' } }],
  headers: [
    ['From', `sender${i % 7}@example.org`],
    ['Subject', `message ${i}`],
    ['Message-ID', `<${i}@example.org>`],
  ] as [string, string][],
  body: `message ${i}\r\n`.repeat(20),
  eomMacros: { i: `Q${i}` },
});

describe('long-lived milter connections', () => {
  it('1,000 messages on one connection: its state and the heap stay the size they had after 100', { timeout: 120_000 }, async (t) => {
    const { plugin, seen } = probePlugin();
    const kernel = await Kernel.create({ plugins: [{ plugin: tag }, { plugin }], policies });
    const server = createMilterServer(kernel.application);
    await server.listen('inet:0@127.0.0.1');
    t.after(async () => {
      await server.close({ drainTimeout: 0 });
      await kernel.shutdown();
    });
    const open = async () => {
      const client = await MilterClient.connect(`inet:${server.port}@127.0.0.1`);
      await client.connect('mta.example.org', '4', 25, '192.0.2.1', { j: 'mx.example.test', '{daemon_name}': 'smtpd', v: 'Postfix 3.8' });
      return client;
    };
    const send = async (client: MilterClient, i: number) => {
      // A client that says EHLO before each message (Postfix passes each one on).
      await client.helo('mta.example.org', { '{tls_version}': 'TLSv1.3' });
      const r = await client.sendMessage(postfixLike(i));
      assert.ok(['continue', 'accept'].includes(r.reply.action), `message ${i}: ${r.reply.action}`);
      assert.ok(r.modifications.some((m) => m.type === 'addHeader' && m.value === 'long-lived'));
    };
    // A first connection warms the code up (optimised code and its feedback take heap too), then goes.
    const warm = await open();
    for (let i = 1; i <= WARM; i++) await send(warm, i);
    await warm.quit();
    seen.decisions = 0;
    seen.entries.length = 0;

    const client = await open();
    t.after(() => client.quit());
    for (let i = 1; i <= 100; i++) await send(client, i);
    const [conn] = connectionsOf(server);
    const at100 = footprint(conn);
    const heap100 = await heapAfterGc();
    for (let i = 101; i <= 1000; i++) await send(client, i);
    const at1000 = footprint(conn);
    const heap1000 = await heapAfterGc();

    t.diagnostic(`per-connection state after 100 messages: ${JSON.stringify(at100)}`);
    t.diagnostic(`heap after GC: ${KB(heap100)} after 100 messages, ${KB(heap1000)} after 1,000 (${KB(heap1000 - heap100)}, ${((heap1000 - heap100) / 900).toFixed(0)} B per message)`);
    assert.equal(connectionsOf(server).length, 1, 'one connection all along');
    assert.deepEqual(at1000, at100, 'nothing the connection keeps grows with the messages it carried');
    assert.equal(seen.decisions, 1000);
    assert.equal(Math.max(...seen.entries), Math.min(...seen.entries), 'every message’s decision trace has the same length (the connection’s part does not pile up)');
    // After a full GC the heap of a warm test process moves by some tens of KB per thousand messages.
    // 256 KB over 900 messages: anything kept per message (a trace entry, a message's state, a macro
    // packet, a view) of more than ~290 bytes fails this.
    assert.ok(heap1000 - heap100 < 256 * 1024, `heap grew by ${KB(heap1000 - heap100)} over 900 messages`);
  });

  it('1,000 QUIT_NC sessions on one connection: the kernel’s state is made anew each time and nothing piles up', { timeout: 120_000 }, async (t) => {
    const { plugin, seen } = probePlugin();
    const kernel = await Kernel.create({ plugins: [{ plugin: tag }, { plugin }], policies });
    const server = createMilterServer(kernel.application);
    await server.listen('inet:0@127.0.0.1');
    t.after(async () => {
      await server.close({ drainTimeout: 0 });
      await kernel.shutdown();
    });
    const client = await MilterClient.connect(`inet:${server.port}@127.0.0.1`);
    t.after(() => client.quit());
    const session = async (i: number) => {
      const r = await client.sendMessage({ connect: { hostname: `client${i}.example.org`, address: `192.0.2.${1 + (i % 200)}`, macros: { j: 'mx.example.test' } }, helo: `client${i}.example.org`, ...postfixLike(i) });
      assert.ok(['continue', 'accept'].includes(r.reply.action), r.reply.action);
      client.quitNewConnection();
    };
    for (let i = 1; i <= 100; i++) await session(i);
    const heap100 = await heapAfterGc();
    for (let i = 101; i <= 1000; i++) await session(i);
    // The last QUIT_NC is processed once a later packet is answered: one more message, then measure.
    await session(1001);
    const heap1000 = await heapAfterGc();
    t.diagnostic(`heap after GC: ${KB(heap100)} after 100 sessions, ${KB(heap1000)} after 1,000 (${KB(heap1000 - heap100)})`);
    assert.equal(seen.decisions, 1001);
    assert.equal(Math.max(...seen.entries), Math.min(...seen.entries));
    assert.ok(heap1000 - heap100 < 512 * 1024, `heap grew by ${KB(heap1000 - heap100)} over 900 sessions`);
  });

  it('1,000 idle connections held for an hour of simulated time: memory per connection flat; the idle timeout (1 h) closes them', { timeout: 120_000 }, async (t) => {
    const clock = useTestClock(t.mock.timers);
    const lines: { level: string; code?: unknown }[] = [];
    const log: MilterLogger = {
      debug() {},
      info() {},
      warn: (f: { code?: unknown }) => void lines.push({ level: 'warn', code: f.code }),
      error: (f: { code?: unknown }) => void lines.push({ level: 'error', code: f.code }),
      child: () => log,
    };
    const { plugin } = probePlugin();
    const kernel = await Kernel.create({ plugins: [{ plugin: tag }, { plugin }], policies });
    // Defaults: idleTimeout 3,600,000 ms, swept every second.
    const server = createMilterServer(kernel.application, { logger: log });
    assert.equal(server.sessionOptions.idleTimeout, 3_600_000);
    await server.listen('inet:0@127.0.0.1');
    const spec = `inet:${server.port}@127.0.0.1`;
    const clients: MilterClient[] = [];
    t.after(async () => {
      for (const c of clients) c.destroy();
      await server.close({ drainTimeout: 0 });
      await kernel.shutdown();
    });

    const heapEmpty = await heapAfterGc();
    const COUNT = 1000;
    for (let batch = 0; batch < COUNT / 100; batch++) {
      await Promise.all(
        Array.from({ length: 100 }, async (_, k) => {
          const i = batch * 100 + k;
          const c = await MilterClient.connect(spec);
          clients.push(c);
          // One message, then the connection waits for the next client of its SMTP process.
          const r = await c.sendMessage({ connect: { hostname: `client${i}.example.org`, address: '192.0.2.7', macros: { j: 'mx.example.test' } }, helo: `client${i}.example.org`, ...postfixLike(i) });
          assert.ok(['continue', 'accept'].includes(r.reply.action), r.reply.action);
        }),
      );
    }
    assert.equal(server.connectionCount, COUNT);
    const footprints = () => new Set(connectionsOf(server).map((c) => JSON.stringify(footprint(c))));
    const shapes = footprints();
    const heapOpen = await heapAfterGc();

    // The first sweep notes the messages' activity (the engine reads the clock once per sweep, not
    // per packet); then 59 minutes and 58 seconds more, a minute at a time (a sweep every second).
    const started = clock.now();
    await clock.advance(1_000);
    let heapMax = heapOpen;
    for (let m = 1; m < 60; m++) {
      await clock.advance(60_000);
      if (m % 10 === 0) heapMax = Math.max(heapMax, await heapAfterGc());
    }
    await clock.advance(58_000);
    const heapHour = await heapAfterGc();
    heapMax = Math.max(heapMax, heapHour);
    assert.equal(server.connectionCount, COUNT, `all open after ${(clock.now() - started) / 60_000} simulated minutes`);
    assert.equal(clients.filter((c) => c.isClosed).length, 0);
    assert.deepEqual(footprints(), shapes, 'each connection keeps what it kept after its message');

    const perConnection = (heapOpen - heapEmpty) / COUNT;
    t.diagnostic(`heap after GC: ${KB(heapEmpty)} with no connection, ${KB(heapOpen)} with ${COUNT} idle ones (${perConnection.toFixed(0)} B each, both ends of the socket in this process), ${KB(heapHour)} an hour later (at most ${KB(heapMax)} on the way)`);
    // Flat: an hour of sweeps adds nothing per connection. 1 MB for the lot (1 KB each) covers the
    // noise of a full GC; anything kept per connection and sweep (3.6 million) or per connection and
    // minute (60,000 objects of 20 bytes or more) would not fit.
    assert.ok(heapMax - heapOpen < 1024 * 1024, `heap grew by ${KB(heapMax - heapOpen)} while ${COUNT} connections idled for an hour`);

    // Past the hour: the sweep closes every one of them, with a coded warning each.
    await clock.advance(5_000);
    // Date is simulated: wait on the sockets (setImmediate is real), up to 10 s of real time.
    const deadline = performance.now() + 10_000;
    while ((clients.some((c) => !c.isClosed) || server.connectionCount > 0) && performance.now() < deadline) await new Promise((r) => setImmediate(r));
    assert.equal(server.connectionCount, 0, 'the idle timeout closed every connection');
    assert.equal(clients.filter((c) => !c.isClosed).length, 0, 'and the MTA side saw each close');
    const idle = lines.filter((l) => l.code === 'THEMIS_ERR_MILTER_TIMEOUT');
    assert.equal(idle.length, COUNT, 'one THEMIS_ERR_MILTER_TIMEOUT warning per connection');
    const heapClosed = await heapAfterGc();
    t.diagnostic(`heap after GC once they closed: ${KB(heapClosed)}`);
  });
});
