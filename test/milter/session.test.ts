// The filter side over real sockets: the scripted exchange of the reference, reply discipline,
// state machine, bad input on one connection leaving the others alone, timeouts and handler failures.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  Action,
  Command,
  Decisions,
  MilterError,
  Response,
  createMilterServer,
  encodeConnect,
  encodeMacros,
  encodeOptionNegotiation,
  encodePacket,
  encodeStrings,
  readOptionNegotiation,
  readStrings,
  type MilterApplication,
  type MilterLogger,
  type MilterServer,
  type MilterSession,
  type MilterServerOptions as ServerOptions,
} from '../../src/milter/index.ts';
import { RawConnection, hex, toHex } from '../helpers/raw.ts';

type Server = MilterServer;

/** A logger that records what it is given, so tests can assert on coded errors. */
function recordingLogger(): MilterLogger & { lines: { level: string; fields: Record<string, unknown>; message?: string }[] } {
  const lines: { level: string; fields: Record<string, unknown>; message?: string }[] = [];
  const make = (bindings: object): MilterLogger => {
    const at = (level: string) => (fields: object, message?: string) => lines.push({ level, fields: { ...bindings, ...fields }, message });
    return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (b: object) => make({ ...bindings, ...b }) };
  };
  return Object.assign(make({}), { lines });
}

async function serve(app: MilterApplication, options: ServerOptions = {}): Promise<{ server: Server; port: number }> {
  const server = createMilterServer(app, options);
  await server.listen('inet:0@127.0.0.1');
  return { server, port: server.port! };
}

const N1 = hex('00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 1f ff ff');
const V1 = hex('00 00 00 20 43 6d 61 69 6c 2e 65 78 61 6d 70 6c 65 2e 6f 72 67 00 34 c3 50 31 39 32 2e 30 2e 32 2e 31 30 00');
const D1 = hex('00 00 00 24 44 43 6a 00 6d 78 2e 65 78 61 6d 70 6c 65 2e 6e 65 74 00 7b 64 61 65 6d 6f 6e 5f 6e 61 6d 65 7d 00 6d 78 00');
const D3 = hex('00 00 00 46 44 4d 7b 61 75 74 68 5f 74 79 70 65 7d 00 50 4c 41 49 4e 00 7b 61 75 74 68 5f 61 75 74 68 65 6e 7d 00 61 6c 69 63 65 00 7b 6d 61 69 6c 5f 61 64 64 72 7d 00 61 6c 69 63 65 40 65 78 61 6d 70 6c 65 2e 6f 72 67 00');
const D4 = hex('00 00 00 0a 44 4c 69 00 34 58 79 5a 31 00');
const D5 = hex('00 00 00 0a 44 45 69 00 34 58 79 5a 31 00');
const V7 = hex('00 00 00 1f 4d 3c 61 6c 69 63 65 40 65 78 61 6d 70 6c 65 2e 6f 72 67 3e 00 53 49 5a 45 3d 31 30 32 34 00');
const V10 = hex('00 00 00 13 52 3c 62 6f 62 40 65 78 61 6d 70 6c 65 2e 63 6f 6d 3e 00');
const V12 = hex('00 00 00 0c 4c 53 75 62 6a 65 63 74 00 48 69 00');
const V13 = hex('00 00 00 0d 4c 58 2d 4c 6f 6e 67 00 61 0a 09 62 00');
const V15 = hex('00 00 00 01 4e');
const V16 = hex('00 00 00 08 42 48 65 6c 6c 6f 0d 0a');
const V17 = hex('00 00 00 01 45');
const ABORT = hex('00 00 00 01 41');
const QUIT = hex('00 00 00 01 51');

/** Opens a raw connection and completes OPTNEG with the Postfix offer. */
async function negotiated(port: number): Promise<RawConnection> {
  const c = await RawConnection.open(port);
  c.write(N1);
  const o = await c.next();
  assert.equal(o.code, Command.OPTNEG);
  return c;
}

describe('the scripted exchange of the reference (section 9.5)', () => {
  let server: Server;
  let port: number;
  const seen: string[] = [];
  before(async () => {
    const app: MilterApplication = {
      // answerData: false reproduces the reference's negotiation (DATA switched off) byte for byte.
      negotiation: { noReply: ['header'], actions: Action.ADDHDRS | Action.CHGHDRS, skip: true, answerData: false },
      connect: (s, e) => void seen.push(`connect ${e.hostname} ${e.address}:${e.port} j=${s.macros.get('j')}`),
      mailFrom: (s, e) => void seen.push(`mail ${e.address} ${e.args.join(',')} auth=${s.macros.get('{auth_authen}')}`),
      rcptTo: (_s, e) => (e.address === 'bob@example.com' ? { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'Denied' } } : undefined),
      header: (s, e) => void seen.push(`header ${e.name}=${JSON.stringify(e.value)} i=${s.macros.get('i')}`),
      endOfHeaders: () => undefined,
      body: () => Decisions.skip,
      endOfMessage: (s, m) => {
        seen.push(`eom rcpts=${s.recipients.map((r) => r.address).join(',')} i=${s.macros.get('{i}')}`);
        m.addHeader('X-Spam', 'yes');
        m.changeHeader('Subject', 1, 'New');
        return Decisions.accept;
      },
      abort: () => void seen.push('abort'),
    };
    ({ server, port } = await serve(app));
  });
  after(() => server.close());

  it('produces exactly the reference bytes', async () => {
    const c = await RawConnection.open(port);
    c.write(N1);
    assert.equal(toHex((await c.next()).bytes), toHex(hex('00 00 00 0d 4f 00 00 00 06 00 00 00 11 00 00 07 82')));
    c.write(D1, V1);
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.write(encodeMacros(Command.HELO, {})); // HELO is switched off; its macros may still come
    c.write(D3, V7);
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.write(V10);
    const r8 = await c.next();
    assert.equal(toHex(r8.bytes), toHex(hex('00 00 00 12 79 35 35 30 20 35 2e 37 2e 31 20 44 65 6e 69 65 64 00')));
    c.write(encodeStrings(Command.RCPT, ['<carol@example.com>']));
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.write(D4, V12, D4, V13);
    assert.ok(await c.silentFor(50), 'no answer to NR headers');
    c.write(V15);
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.write(V16);
    assert.equal((await c.next()).code, Response.SKIP);
    c.write(D5, V17);
    assert.equal(toHex((await c.next()).bytes), toHex(hex('00 00 00 0c 68 58 2d 53 70 61 6d 00 79 65 73 00')));
    assert.equal(toHex((await c.next()).bytes), toHex(hex('00 00 00 11 6d 00 00 00 01 53 75 62 6a 65 63 74 00 4e 65 77 00')));
    assert.equal((await c.next()).code, Response.ACCEPT);
    c.write(ABORT, ABORT);
    assert.ok(await c.silentFor(50));
    c.write(QUIT);
    assert.ok(await c.closedWithin(1000), 'QUIT closes the connection');
    assert.deepEqual(seen, [
      'connect mail.example.org 192.0.2.10:50000 j=mx.example.net',
      'mail alice@example.org SIZE=1024 auth=alice',
      // The reference sends `i` only in a `D L` before each header: libmilter drops those packets
      // (test/milter/libmilter-macros.test.ts), and so does the engine. Postfix also sends `i` at DATA.
      'header Subject="Hi" i=undefined',
      'header X-Long="a\\n\\tb" i=undefined',
      'eom rcpts=bob@example.com,carol@example.com i=4XyZ1',
    ]);
  });
});

describe('state machine and reply discipline', () => {
  let server: Server;
  let port: number;
  const log = recordingLogger();
  const events: string[] = [];
  before(async () => {
    const app: MilterApplication = {
      negotiation: { actions: Action.ADDHDRS },
      connect: (s) => void (s.state = { n: 0 }),
      helo: (s, e) => void events.push(`helo ${e.hostname} client=${s.client?.address}`),
      mailFrom: (s, e) => {
        events.push(`mail ${e.address} client=${s.client?.address} helo=${s.helo} j=${s.macros.get('j')}`);
        if (e.address === 'async@example.org') return new Promise((r) => setTimeout(() => r(Decisions.continue), 30));
        if (e.address === 'throw@example.org') throw new Error('boom');
        if (e.address === 'reject@example.org') return Decisions.reject;
        return undefined;
      },
      rcptTo: async (_s, e) => {
        await new Promise((r) => setTimeout(r, e.address.startsWith('slow') ? 40 : 1));
        return e.address.startsWith('no') ? Decisions.tempfail : undefined;
      },
      endOfMessage: (_s, m) => {
        m.addHeader('X-Ok', '1');
        return undefined;
      },
      unknown: () => Decisions.reject,
      abort: () => void events.push('abort'),
      close: () => void events.push('close'),
    };
    ({ server, port } = await serve(app, { logger: log }));
  });
  after(() => server.close());

  it('keeps answers in command order when handlers are async and the MTA pipelines', async () => {
    const c = await negotiated(port);
    c.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.HELO, ['h']), encodeStrings(Command.MAIL, ['<async@example.org>']), encodeStrings(Command.RCPT, ['<slow@x>']), encodeStrings(Command.RCPT, ['<no@x>']), encodeStrings(Command.RCPT, ['<fast@x>']));
    const codes = [];
    for (let i = 0; i < 6; i++) codes.push((await c.next()).code);
    assert.deepEqual(codes, [Response.CONTINUE, Response.CONTINUE, Response.CONTINUE, Response.CONTINUE, Response.TEMPFAIL, Response.CONTINUE]);
    // EOH has no handler: switched off with a NO bit. DATA has none either but is answered (see
    // negotiate's answerData), then EOM.
    c.write(encodePacket(Command.DATA), encodePacket(Command.EOH), encodePacket(Command.BODYEOB));
    assert.equal((await c.next()).code, Response.CONTINUE);
    assert.equal((await c.next()).code, Response.ADDHEADER);
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.close();
  });

  it('a RCPT rejection refuses one recipient and the transaction goes on', async () => {
    const c = await negotiated(port);
    c.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }));
    await c.next();
    c.write(encodeStrings(Command.MAIL, ['<a@x>']), encodeStrings(Command.RCPT, ['<no1@x>']), encodeStrings(Command.RCPT, ['<ok@x>']), encodePacket(Command.DATA));
    assert.deepEqual([(await c.next()).code, (await c.next()).code, (await c.next()).code, (await c.next()).code], [Response.CONTINUE, Response.TEMPFAIL, Response.CONTINUE, Response.CONTINUE]);
    assert.ok(!c.isClosed, 'the transaction went on to DATA, which is answered although no handler listens to it');
    c.close();
  });

  it('keeps connection data and macros across ABORT and new messages; a new MAIL ends the open one', async () => {
    await new Promise((r) => setTimeout(r, 50)); // let earlier tests' connections finish closing
    events.length = 0;
    const c = await negotiated(port);
    c.write(encodeMacros(Command.CONNECT, { j: 'mx.test' }), encodeConnect({ hostname: 'h', family: '6', port: 25, address: '2001:db8::1' }), encodeStrings(Command.HELO, ['first']));
    await c.next();
    await c.next();
    c.write(encodeStrings(Command.MAIL, ['<a@x>']));
    await c.next();
    c.write(ABORT, ABORT); // Postfix sends it twice: the second is harmless
    c.write(encodeStrings(Command.MAIL, ['<b@x>']));
    await c.next();
    c.write(encodeStrings(Command.MAIL, ['<c@x>'])); // no ABORT in between (Sendmail after a decided message)
    await c.next();
    c.write(encodeStrings(Command.HELO, ['second']));
    await c.next();
    c.write(QUIT);
    assert.ok(await c.closedWithin(1000));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(events, [
      'helo first client=2001:db8::1',
      'mail a@x client=2001:db8::1 helo=first j=mx.test',
      'abort',
      'mail b@x client=2001:db8::1 helo=first j=mx.test',
      'abort',
      'mail c@x client=2001:db8::1 helo=first j=mx.test',
      'abort',
      'helo second client=2001:db8::1',
      'close',
    ]);
  });

  it('a rejected MAIL ends the message: a following RCPT is out of order', async () => {
    const c = await negotiated(port);
    c.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.MAIL, ['<reject@example.org>']));
    await c.next();
    assert.equal((await c.next()).code, Response.REJECT);
    c.write(ABORT, encodeStrings(Command.MAIL, ['<a@x>']));
    assert.equal((await c.next()).code, Response.CONTINUE, 'a new message may start after the rejection');
    c.close();
  });

  it('a handler that throws is answered with tempfail and logged with a code', async () => {
    const c = await negotiated(port);
    c.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.MAIL, ['<throw@example.org>']));
    await c.next();
    assert.equal((await c.next()).code, Response.TEMPFAIL);
    assert.ok(log.lines.some((l) => l.fields.code === 'THEMIS_ERR_MILTER_HANDLER' && l.fields.stage === 'mailFrom'));
    c.close();
  });

  it('UNKNOWN gets the handler answer; its empty macro packet is accepted', async () => {
    const c = await negotiated(port);
    c.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), hex('00 00 00 02 44 55'), hex('00 00 00 06 55 48 45 4c 50 00'));
    await c.next();
    assert.equal((await c.next()).code, Response.REJECT);
    c.close();
  });

  it('QUIT_NC keeps the negotiated options and expects a new CONNECT', async () => {
    const c = await negotiated(port);
    c.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }));
    await c.next();
    c.write(encodePacket(Command.QUIT_NC), encodeConnect({ hostname: 'h2', family: 'L', port: 0, address: '/run/s' }), encodeStrings(Command.MAIL, ['<a@x>']));
    assert.equal((await c.next()).code, Response.CONTINUE);
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.close();
  });
});

describe('bad input closes only the offending connection', () => {
  let server: Server;
  let port: number;
  const log = recordingLogger();
  before(async () => {
    ({ server, port } = await serve({ mailFrom: () => undefined, helo: () => undefined }, { logger: log, maxPacketSize: 4096, readTimeout: 200, idleTimeout: 1500 }));
  });
  after(() => server.close());

  async function expectClosedWith(bytes: Buffer[], code: string, negotiate = true) {
    const healthy = await negotiated(port);
    const bad = negotiate ? await negotiated(port) : await RawConnection.open(port);
    const before = log.lines.length;
    bad.write(...bytes);
    assert.ok(await bad.closedWithin(2000), `connection should close for ${code}`);
    assert.ok(log.lines.slice(before).some((l) => l.fields.code === code), `logged ${code}; got ${JSON.stringify(log.lines.slice(before).map((l) => l.fields.code))}`);
    // CONNECT has no handler (switched off); HELO is answered.
    healthy.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.HELO, ['still-here']));
    assert.equal((await healthy.next()).code, Response.CONTINUE);
    healthy.close();
  }

  it('zero-length packet', () => expectClosedWith([hex('00 00 00 00')], 'THEMIS_ERR_MILTER_ZERO_LENGTH'));
  it('oversize packet', () => expectClosedWith([hex('00 10 00 00 4c')], 'THEMIS_ERR_MILTER_OVERSIZE'));
  it('unknown command byte', () => expectClosedWith([hex('00 00 00 01 5a')], 'THEMIS_ERR_MILTER_UNKNOWN_COMMAND'));
  it('a command before OPTNEG', () => expectClosedWith([encodeStrings(Command.HELO, ['x'])], 'THEMIS_ERR_MILTER_OUT_OF_ORDER', false));
  it('OPTNEG twice', () => expectClosedWith([N1], 'THEMIS_ERR_MILTER_OUT_OF_ORDER'));
  it('RCPT with no open message', () => expectClosedWith([encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.RCPT, ['<x@y>'])], 'THEMIS_ERR_MILTER_OUT_OF_ORDER'));
  it('a header after end of headers', () => expectClosedWith([encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.MAIL, ['<a@b>']), encodePacket(Command.EOH), encodeStrings(Command.HEADER, ['A', 'b'])], 'THEMIS_ERR_MILTER_OUT_OF_ORDER'));
  it('a header without its NUL terminator', () => expectClosedWith([encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.MAIL, ['<a@b>']), encodePacket(Command.HEADER, Buffer.from('Subject'))], 'THEMIS_ERR_MILTER_MALFORMED'));
  it('a malformed CONNECT', () => expectClosedWith([encodePacket(Command.CONNECT, Buffer.from('host-without-family'))], 'THEMIS_ERR_MILTER_MALFORMED'));
  it('a short OPTNEG', () => expectClosedWith([hex('00 00 00 05 4f 00 00 00 06')], 'THEMIS_ERR_MILTER_MALFORMED', false));
  it('a packet left unfinished past the read timeout', () => expectClosedWith([hex('00 00 00 10 4c 41')], 'THEMIS_ERR_MILTER_TIMEOUT'));

  it('an idle connection is closed after the idle timeout', async () => {
    const c = await negotiated(port);
    assert.ok(await c.closedWithin(4000));
    assert.ok(log.lines.some((l) => l.fields.code === 'THEMIS_ERR_MILTER_TIMEOUT'));
  });

  it('an MTA below version 2 is refused', async () => {
    const c = await RawConnection.open(port);
    c.write(encodeOptionNegotiation({ version: 1, actions: 0, protocol: 0 }));
    assert.ok(await c.closedWithin(1000));
  });
});

describe('the idle timeout counts from the last packet', () => {
  it('a connection that keeps talking outlives several idle timeouts, and is closed once it falls silent', async () => {
    const log = recordingLogger();
    const { server, port } = await serve({ helo: () => undefined }, { logger: log, idleTimeout: 300 });
    try {
      const c = await negotiated(port);
      // One HELO every 100 ms for about a second: never 300 ms of silence.
      for (let i = 0; i < 10; i++) {
        c.write(encodeStrings(Command.HELO, [`h${i}`]));
        assert.equal((await c.next()).code, Response.CONTINUE);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(c.isClosed, false, 'an active connection is not idle');
      assert.ok(!log.lines.some((l) => l.fields.code === 'THEMIS_ERR_MILTER_TIMEOUT'));
      const silent = Date.now();
      assert.ok(await c.closedWithin(2000), 'closed once silent');
      // Never early; late by at most about two sweep periods (75 ms each here).
      assert.ok(Date.now() - silent >= 300 - 100, `closed after ${Date.now() - silent} ms of silence`);
      assert.ok(log.lines.some((l) => l.fields.code === 'THEMIS_ERR_MILTER_TIMEOUT'));
    } finally {
      await server.close();
    }
  });
});

describe('end-of-message modifications', () => {
  let server: Server;
  let port: number;
  const log = recordingLogger();
  let behaviour: (s: MilterSession, m: import('../../src/milter/index.ts').MessageModifier) => import('../../src/milter/index.ts').HandlerResult = () => undefined;
  let leaked: import('../../src/milter/index.ts').MessageModifier | undefined;
  before(async () => {
    const app: MilterApplication = {
      negotiation: { actions: Action.ADDHDRS | Action.CHGHDRS | Action.CHGBODY | Action.QUARANTINE | Action.CHGFROM | Action.ADDRCPT | Action.ADDRCPT_PAR | Action.DELRCPT },
      endOfMessage: (s, m) => {
        leaked = m;
        return behaviour(s, m);
      },
    };
    ({ server, port } = await serve(app, { logger: log, progressInterval: 20 }));
  });
  after(() => server.close());

  /** Runs MAIL, RCPT (both switched off: no handler) and EOM; returns the EOM answer packets. */
  async function eom(): Promise<import('../helpers/raw.ts').Packet[]> {
    const c = await negotiated(port);
    c.write(encodeStrings(Command.MAIL, ['<a@x>']), encodeStrings(Command.RCPT, ['<b@x>']), encodePacket(Command.BODYEOB));
    const decisions: number[] = [Response.ACCEPT, Response.CONTINUE, Response.REJECT, Response.TEMPFAIL, Response.DISCARD, Response.REPLYCODE];
    const packets = [];
    for (;;) {
      const p = await c.next();
      packets.push(p);
      if (decisions.includes(p.code)) break;
    }
    c.close();
    return packets;
  }

  it('sends every modification in request order, body chunks contiguous, then the decision', async () => {
    behaviour = (_s, m) => {
      m.addHeader('X-A', 'one\r\n\ttwo');
      m.replaceBody(Buffer.alloc(70_000, 0x61));
      m.insertHeader(0, 'X-Top', 'first');
      m.replaceBody('tail\r\n');
      m.deleteHeader('X-Old', 2);
      m.changeSender('new@example.org', ['RET=HDRS', 'ENVID=1']);
      m.addRecipient('c@example.com');
      m.addRecipient('d@example.com', ['NOTIFY=NEVER']);
      m.deleteRecipient('<b@x>');
      m.quarantine('held for review');
      return { action: 'reject', reply: { code: 554, enhanced: '5.7.1', text: ['first line', '100% sure'] } };
    };
    const packets = await eom();
    const codes = packets.map((p) => String.fromCharCode(p.code));
    assert.deepEqual(codes, ['h', 'b', 'b', 'i', 'm', 'e', '+', '2', '-', 'q', 'y']);
    assert.deepEqual(readStrings(packets[0].payload), ['X-A', 'one\n\ttwo'], 'CRLF folding becomes LF');
    assert.equal(packets[1].payload.length + packets[2].payload.length, 70_006);
    assert.ok(packets[1].payload.length <= 65535);
    assert.deepEqual(readStrings(packets[5].payload), ['<new@example.org>', 'RET=HDRS ENVID=1']);
    assert.deepEqual(readStrings(packets[7].payload), ['<d@example.com>', 'NOTIFY=NEVER']);
    assert.equal(readStrings(packets[10].payload)[0], '554-5.7.1 first line\r\n554 5.7.1 100%% sure');
  });

  it('a modification without its negotiated action is a coded error for the caller, never bytes', async () => {
    let caught: unknown;
    const app: MilterApplication = {
      negotiation: { actions: Action.ADDHDRS },
      endOfMessage: (_s, m) => {
        try {
          m.changeSender('x@y');
        } catch (err) {
          caught = err;
        }
        return Decisions.accept;
      },
    };
    const { server: s2, port: p2 } = await serve(app);
    const c = await negotiated(p2);
    c.write(encodeStrings(Command.MAIL, ['<a@x>']), encodeStrings(Command.RCPT, ['<b@x>']), encodePacket(Command.BODYEOB));
    assert.equal((await c.next()).code, Response.ACCEPT);
    assert.ok(caught instanceof MilterError && caught.code === 'THEMIS_ERR_MILTER_ACTION_NOT_NEGOTIATED');
    c.close();
    await s2.close();
  });

  it('a modification after the decision is a coded error', async () => {
    behaviour = () => Decisions.accept;
    await eom();
    assert.throws(() => leaked!.addHeader('X-Late', '1'), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_MODIFY_OUTSIDE_EOM');
  });

  it('refuses header injection and bad names', async () => {
    let errors: string[] = [];
    behaviour = (_s, m) => {
      errors = [];
      for (const f of [() => m.addHeader('X-A', 'v\nInjected: yes'), () => m.addHeader('Bad Name', 'v'), () => m.addHeader('X:B', 'v'), () => m.addHeader('X-C', 'a\rb'), () => m.addHeader('X-D', 'x'.repeat(1200))]) {
        try {
          f();
        } catch (err) {
          errors.push((err as MilterError).code);
        }
      }
      return Decisions.accept;
    };
    const packets = await eom();
    assert.deepEqual(packets.map((p) => p.code), [Response.ACCEPT]);
    assert.deepEqual(errors, Array(5).fill('THEMIS_ERR_MILTER_BAD_HEADER'));
  });

  it('an invalid custom reply becomes the plain decision, logged', async () => {
    behaviour = () => ({ action: 'reject', reply: { code: 550, enhanced: '4.7.1', text: 'class mismatch' } });
    const packets = await eom();
    assert.deepEqual(packets.map((p) => p.code), [Response.REJECT]);
    assert.ok(log.lines.some((l) => l.fields.code === 'THEMIS_ERR_MILTER_BAD_REPLY'));
  });

  it('sends progress keep-alives while a slow end-of-message handler runs', async () => {
    behaviour = () => new Promise((r) => setTimeout(() => r(Decisions.accept), 120));
    const packets = await eom();
    const progress = packets.filter((p) => p.code === Response.PROGRESS).length;
    assert.ok(progress >= 2, `expected keep-alives, got ${progress}`);
    assert.equal(packets.at(-1)!.code, Response.ACCEPT);
  });

  it('a handler over its deadline is answered with the fallback; its late answer is dropped', async () => {
    const app: MilterApplication = { endOfMessage: () => new Promise((r) => setTimeout(() => r(Decisions.discard), 300)) };
    const { server: s2, port: p2 } = await serve(app, { handlerTimeout: 50, logger: log });
    const c = await negotiated(p2);
    c.write(encodeStrings(Command.MAIL, ['<a@x>']), encodeStrings(Command.RCPT, ['<b@x>']), encodePacket(Command.BODYEOB));
    assert.equal((await c.next()).code, Response.TEMPFAIL);
    assert.ok(await c.silentFor(350), 'nothing after the fallback');
    assert.ok(log.lines.some((l) => l.fields.code === 'THEMIS_ERR_MILTER_HANDLER_TIMEOUT'));
    c.close();
    await s2.close();
  });
});

describe('negotiation on the wire', () => {
  it('asks only for the stages with handlers; NO bits for the rest, SETSYMLIST for macro lists', async () => {
    const { server, port } = await serve({ negotiation: { macros: { mailFrom: ['{auth_authen}'] } }, mailFrom: () => undefined });
    const c = await RawConnection.open(port);
    c.write(N1);
    const o = readOptionNegotiation((await c.next()).payload);
    assert.equal(o.version, 6);
    assert.equal(o.actions, Action.SETSYMLIST);
    // Everything but MAIL switched off, except DATA: it is always answered (negotiate's answerData).
    assert.equal(o.protocol, 0x01 | 0x02 | 0x08 | 0x10 | 0x20 | 0x40 | 0x100);
    assert.deepEqual([...o.macros!.entries()], [[2, '{auth_authen}']]);
    c.close();
    await server.close();
  });

  it('answers events it cannot switch off when the MTA offers no NO/NR bits (version 2 MTA)', async () => {
    const { server, port } = await serve({ mailFrom: () => undefined });
    const c = await RawConnection.open(port);
    c.write(encodeOptionNegotiation({ version: 2, actions: 0x3f, protocol: 0x3f }));
    const o = readOptionNegotiation((await c.next()).payload);
    assert.equal(o.version, 2);
    assert.equal(o.protocol & ~0x3f, 0);
    c.write(encodeConnect({ hostname: 'h', family: '4', port: 1, address: '192.0.2.1' }), encodeStrings(Command.MAIL, ['<a@b>']), encodeStrings(Command.HEADER, ['A', 'b']));
    // CONNECT and HEADER were switched off (0x01, 0x20 offered); MAIL is answered.
    assert.equal((await c.next()).code, Response.CONTINUE);
    assert.ok(await c.silentFor(50));
    c.close();
    await server.close();
  });
});

describe('server lifecycle', () => {
  it('listens on a UNIX socket, replaces a stale socket file, removes it on close', async () => {
    const { mkdtemp, rm, stat } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'themis-unix-'));
    const path = join(dir, 'milter.sock');
    const first = createMilterServer({});
    await first.listen(`unix:${path}`);
    await assert.rejects(createMilterServer({}).listen(`unix:${path}`), (e: unknown) => e instanceof MilterError && e.code === 'THEMIS_ERR_MILTER_LISTEN_SPEC');
    const { MilterClient } = await import('../../src/milter/index.ts');
    const client = await MilterClient.connect(`unix:${path}`);
    const r = await client.sendMessage({ connect: { hostname: 'localhost', family: 'L', port: 0, address: '/run/x' }, from: 'a@b', to: ['c@d'] });
    assert.equal(r.stage, 'endOfMessage');
    await client.quit();
    await first.close();
    await assert.rejects(stat(path), 'socket file removed');
    await rm(dir, { recursive: true });
  });

  it('close() waits for open connections up to the drain timeout, then cuts them', async () => {
    const { server, port } = await serve({ mailFrom: () => undefined });
    const c = await negotiated(port);
    const t0 = Date.now();
    await server.close({ drainTimeout: 150 });
    assert.ok(Date.now() - t0 >= 140);
    assert.ok(await c.closedWithin(500));
  });

  it('closes connections over the limit and keeps serving the others', async () => {
    const log = recordingLogger();
    const { server, port } = await serve({}, { maxConnections: 2, logger: log });
    const a = await negotiated(port);
    const b = await negotiated(port);
    const c = await RawConnection.open(port);
    assert.ok(await c.closedWithin(1000));
    assert.ok(log.lines.some((l) => l.fields.code === 'THEMIS_ERR_MILTER_CONNECTION_LIMIT'));
    a.close();
    b.close();
    await server.close();
  });
});

describe('backpressure', () => {
  it('a pipelining MTA faster than an async handler: every event handled once, in order', async () => {
    const seen: number[] = [];
    const { server, port } = await serve({
      negotiation: { noReply: ['header'] },
      header: async (_s, h) => {
        await new Promise((r) => setImmediate(r));
        seen.push(Number(h.value));
      },
      endOfMessage: () => Decisions.accept,
    });
    const c = await negotiated(port);
    const count = 5000;
    const packets = [encodeStrings(Command.MAIL, ['<a@x>'])];
    for (let i = 0; i < count; i++) packets.push(encodeMacros(Command.HEADER, { i: 'Q' }), encodeStrings(Command.HEADER, ['X-N', String(i)]));
    packets.push(encodePacket(Command.BODYEOB));
    c.write(...packets);
    assert.equal((await c.next(20_000)).code, Response.ACCEPT);
    assert.equal(seen.length, count);
    assert.ok(seen.every((v, i) => v === i), 'in order');
    c.close();
    await server.close();
  });
});

describe('optional protocol behaviours', () => {
  it('HDR_LEADSPC on request: raw values arrive verbatim beside the usual value, and edits carry their own leading space', async () => {
    const values: (string | undefined)[][] = [];
    const { server, port } = await serve({
      negotiation: { headerLeadingSpace: true, rejectedRecipients: true, actions: Action.ADDHDRS | Action.CHGHDRS },
      header: (_s, h) => void values.push([h.name, h.value, h.raw, JSON.stringify(h)]),
      endOfMessage: (_s, m) => {
        m.addHeader('X-A', 'spaced');
        m.changeHeader('X-B', 1, '\talready');
        return Decisions.accept;
      },
    });
    const c = await RawConnection.open(port);
    c.write(N1);
    const o = readOptionNegotiation((await c.next()).payload);
    assert.ok(o.protocol & 0x100000, 'HDR_LEADSPC requested');
    assert.ok(o.protocol & 0x800, 'RCPT_REJ requested');
    c.write(encodeStrings(Command.MAIL, ['<a@x>']), encodeStrings(Command.HEADER, ['Subject', ' two  spaces']));
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.write(encodeStrings(Command.HEADER, ['X-Tight', 'none']), encodeStrings(Command.HEADER, ['X-Tab', '\tfolded\n\tline']));
    assert.equal((await c.next()).code, Response.CONTINUE);
    assert.equal((await c.next()).code, Response.CONTINUE);
    c.write(encodePacket(Command.BODYEOB));
    assert.deepEqual(readStrings((await c.next()).payload), ['X-A', ' spaced']);
    assert.deepEqual(readStrings((await c.next()).payload.subarray(4)), ['X-B', '\talready']);
    assert.equal((await c.next()).code, Response.ACCEPT);
    // `value` is what an MTA sends without HDR_LEADSPC (one space eaten, a tab kept); `raw` is exact.
    assert.deepEqual(values, [
      ['Subject', 'two  spaces', ' two  spaces', '{"name":"Subject","value":"two  spaces","raw":" two  spaces"}'],
      ['X-Tight', 'none', 'none', '{"name":"X-Tight","value":"none","raw":"none"}'],
      ['X-Tab', '\tfolded\n\tline', '\tfolded\n\tline', '{"name":"X-Tab","value":"\\tfolded\\n\\tline","raw":"\\tfolded\\n\\tline"}'],
    ]);
    c.close();
    await server.close();
  });
});

describe('the MTA closing first', () => {
  it('an answer still pending when the MTA half-closes is written, then the connection ends', async () => {
    const { server, port } = await serve({ mailFrom: () => new Promise((r) => setTimeout(() => r(Decisions.reject), 50)) });
    const c = await negotiated(port);
    c.write(encodeStrings(Command.MAIL, ['<a@x>']));
    c.socket.end(); // FIN: the MTA sends nothing more but still reads
    assert.equal((await c.next()).code, Response.REJECT);
    assert.ok(await c.closedWithin(1000));
    await server.close();
  });
});
