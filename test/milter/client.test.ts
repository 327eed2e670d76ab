// The MTA-side client against the engine: whole transactions, NO/NR/SKIP honoured, modifications
// collected, and the client's own strictness (it is what tests and the benchmark trust).
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { Action, Decisions, MilterClient, MilterError, Protocol, createMilterServer, encodeOptionNegotiation, encodePacket, encodeStrings, type MilterApplication } from '../../src/milter/index.ts';

async function withServer(app: MilterApplication, fn: (spec: string) => Promise<void>): Promise<void> {
  const server = createMilterServer(app);
  await server.listen('inet:0@127.0.0.1');
  try {
    await fn(`inet:${server.port}@127.0.0.1`);
  } finally {
    await server.close({ drainTimeout: 200 });
  }
}

describe('MilterClient against the engine', () => {
  it('runs a transaction and collects modifications in order', async () => {
    const seen: string[] = [];
    await withServer(
      {
        negotiation: { actions: Action.ADDHDRS | Action.CHGBODY | Action.DELRCPT },
        connect: (s) => void seen.push(`j=${s.macros.get('j')}`),
        header: (_s, h) => void seen.push(`${h.name}: ${h.value}`),
        body: (_s, chunk) => void seen.push(`body ${chunk.length}`),
        endOfMessage: (_s, m) => {
          m.addHeader('X-One', '1');
          m.replaceBody(Buffer.alloc(100_000, 0x62));
          m.deleteRecipient('<b@example.test>');
          return Decisions.accept;
        },
      },
      async (spec) => {
        const client = await MilterClient.connect(spec);
        const r = await client.sendMessage({
          connect: { hostname: 'client.example.org', address: '192.0.2.7', macros: { j: 'mx' } },
          helo: 'client.example.org',
          from: 'a@example.org',
          to: ['b@example.test'],
          headers: [['Subject', 'hi']],
          body: Buffer.alloc(70_000, 0x61),
        });
        assert.equal(r.stage, 'endOfMessage');
        assert.equal(r.reply.action, 'accept');
        assert.deepEqual(r.modifications.map((m) => m.type), ['addHeader', 'replaceBody', 'deleteRecipient']);
        assert.equal((r.modifications[1] as { data: Buffer }).data.length, 100_000);
        assert.deepEqual(seen, ['j=mx', 'Subject: hi', 'body 65535', 'body 4465']);
        // HELO, MAIL, RCPT, DATA, EOH and UNKNOWN were switched off by the filter: the client sent none.
        assert.ok(client.negotiated.protocol & Protocol.NOHELO);
        await client.quit();
      },
    );
  });

  it('stops at the deciding stage and keeps per-recipient answers', async () => {
    await withServer({ rcptTo: (_s, e) => (e.address === 'no@x' ? Decisions.reject : undefined), endOfMessage: () => ({ action: 'tempfail', reply: { code: 452, enhanced: '4.2.2', text: 'full' } }) }, async (spec) => {
      const client = await MilterClient.connect(spec);
      const r = await client.sendMessage({ from: 'a@x', to: ['no@x', 'yes@x'] });
      assert.deepEqual(r.recipients.map((x) => x?.action), ['reject', 'continue']);
      assert.equal(r.reply.action, 'tempfail');
      assert.equal(r.reply.text, '452 4.2.2 full');
      const r2 = await client.sendMessage({ from: 'a@x', to: ['no@x'] });
      assert.equal(r2.stage, 'rcptTo', 'every recipient refused: the message stops at RCPT');
      await client.quit();
    });
  });

  it('stops sending body chunks after SKIP', async () => {
    let chunks = 0;
    await withServer({ negotiation: { skip: true }, body: () => (chunks++, Decisions.skip) }, async (spec) => {
      const client = await MilterClient.connect(spec);
      const r = await client.sendMessage({ from: 'a@x', to: ['b@x'], body: Buffer.alloc(200_000) });
      assert.equal(r.stage, 'endOfMessage');
      assert.equal(chunks, 1);
      await client.quit();
    });
  });

  it('pipelines no-reply headers', async () => {
    const headers: string[] = [];
    await withServer({ negotiation: { noReply: ['header'] }, header: (_s, h) => void headers.push(h.name) }, async (spec) => {
      const client = await MilterClient.connect(spec);
      assert.ok(client.negotiated.protocol & Protocol.NR_HDR);
      await client.sendMessage({ from: 'a@x', to: ['b@x'], headers: Array.from({ length: 50 }, (_, i) => [`X-${i}`, 'v'] as [string, string]) });
      assert.equal(headers.length, 50);
      await client.quit();
    });
  });
});

describe('MilterClient strictness (a fake filter misbehaving)', () => {
  /** A fake filter that answers OPTNEG with `optneg`, then writes `then` after the next packet. */
  async function fake(optneg: Buffer, then: Buffer[]): Promise<{ spec: string; close: () => void }> {
    const server = createServer((s) => {
      let n = 0;
      s.on('data', () => {
        n++;
        s.write(n === 1 ? optneg : Buffer.concat(then));
      });
      s.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    return { spec: `inet:${port}@127.0.0.1`, close: () => server.close() };
  }
  const v6 = (actions: number, protocol: number) => encodeOptionNegotiation({ version: 6, actions, protocol });
  const err = (re: RegExp) => (e: unknown) => e instanceof MilterError && re.test(e.message);

  it('refuses a filter that asks for unoffered bits', async () => {
    const f = await fake(encodeOptionNegotiation({ version: 6, actions: 0x1ff, protocol: 0x40000000 }), []);
    await assert.rejects(MilterClient.connect(f.spec), err(/beyond the offer/));
    f.close();
  });

  it('refuses a modification outside end of message', async () => {
    const f = await fake(v6(Action.ADDHDRS, 0), [encodeStrings(0x68, ['X', 'y']), encodePacket(0x63)]);
    const c = await MilterClient.connect(f.spec);
    await assert.rejects(c.connect('h'), err(/only allowed at end of message/));
    f.close();
  });

  it('refuses a modification without its negotiated action', async () => {
    const f = await fake(v6(0, 0x3f7f), [encodeStrings(0x68, ['X', 'y']), encodePacket(0x61)]);
    const c = await MilterClient.connect(f.spec);
    await assert.rejects(c.endOfMessage(), err(/SMFIF_ADDHDRS/));
    f.close();
  });

  it('refuses a malformed reply code, as Postfix does', async () => {
    const f = await fake(v6(0, 0), [encodeStrings(0x79, ['550 4.7.1 wrong class'])]);
    const c = await MilterClient.connect(f.spec);
    await assert.rejects(c.connect('h'), err(/malformed reply/));
    f.close();
  });

  it('refuses DISCARD at CONNECT', async () => {
    const f = await fake(v6(0, 0), [encodePacket(0x64)]);
    const c = await MilterClient.connect(f.spec);
    await assert.rejects(c.connect('h'), err(/not allowed/));
    f.close();
  });

  it('fails on an answer nobody asked for', async () => {
    const f = await fake(v6(0, 0), [encodePacket(0x63), encodePacket(0x63)]);
    const c = await MilterClient.connect(f.spec);
    await c.connect('h');
    await c.closed;
    assert.ok(c.isClosed);
    f.close();
  });
});
