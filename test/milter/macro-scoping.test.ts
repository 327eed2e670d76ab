// Macro scoping in the orders an MTA may send, with libmilter's rules (libmilter/engine.c): a
// MACRO packet replaces its stage's bucket; CONNECT, HELO, MAIL and RCPT clear the buckets of the
// stages after them; ABORT, DATA, EOH, headers, body and EOM clear nothing; QUIT and QUIT_NC clear
// everything. Sendmail sends no ABORT after an RSET (or after a transaction refused before end of
// message) to a filter that does not answer MAIL: the next transaction opens with its MAIL macros,
// which must survive the engine closing the abandoned one.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Command, Response, createMilterServer, encodeConnect, encodeMacros, encodePacket, encodeStrings, type MilterApplication, type MilterServer, type MilterSession } from '../../src/milter/index.ts';
import { RawConnection, hex } from '../helpers/raw.ts';

const N1 = hex('00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 1f ff ff');
const ABORT = encodePacket(Command.ABORT);

/** What a handler saw: the stage and the macros visible then. */
type Seen = [stage: string, macros: Record<string, string>];

describe('macro scoping as libmilter does it', () => {
  let server: MilterServer;
  let port: number;
  const seen: Seen[] = [];
  const record = (stage: string) => (s: MilterSession) => void seen.push([stage, s.macros.toObject()]);
  before(async () => {
    const app: MilterApplication = {
      connect: record('connect'),
      helo: record('helo'),
      mailFrom: (s, e) => (seen.push(['mail', s.macros.toObject()]), e.address.startsWith('refuse') ? { action: 'reject' } : undefined),
      rcptTo: record('rcpt'),
      data: record('data'),
      endOfHeaders: (s) => (seen.push(['eoh', s.macros.toObject()]), s.sender?.address.startsWith('late') ? { action: 'tempfail' } : undefined),
      endOfMessage: record('eom'),
      abort: record('abort'),
    };
    server = createMilterServer(app);
    await server.listen('inet:0@127.0.0.1');
    port = server.port!;
  });
  after(() => server.close());

  /** A negotiated, connected session: CONNECT with `j`, HELO with a TLS macro. */
  async function session(): Promise<RawConnection> {
    seen.length = 0;
    const c = await RawConnection.open(port);
    c.write(N1);
    await c.next();
    c.write(encodeMacros(Command.CONNECT, { j: 'mx.test' }), encodeConnect({ hostname: 'c', family: '4', port: 1, address: '192.0.2.1' }));
    c.write(encodeMacros(Command.HELO, { '{tls_version}': 'TLSv1.3' }), encodeStrings(Command.HELO, ['client']));
    assert.equal((await c.next()).code, Response.CONTINUE);
    assert.equal((await c.next()).code, Response.CONTINUE);
    return c;
  }
  const mail = (c: RawConnection, queueId: string, sender = 'a@x') => c.write(encodeMacros(Command.MAIL, { i: queueId, '{mail_addr}': sender }), encodeStrings(Command.MAIL, [`<${sender}>`]));
  const rcpt = (c: RawConnection, addr: string) => c.write(encodeMacros(Command.RCPT, { '{rcpt_addr}': addr }), encodeStrings(Command.RCPT, [`<${addr}>`]));
  const last = (stage: string) => [...seen].reverse().find(([s]) => s === stage)?.[1];

  it('a MAIL after an RSET without ABORT keeps the MAIL macros that came with it, and drops the old RCPT ones', async () => {
    const c = await session();
    mail(c, 'Q1');
    rcpt(c, 'b@x');
    await c.next();
    await c.next();
    mail(c, 'Q2', 'again@x'); // RSET in SMTP: Sendmail sends nothing to a filter that does not answer MAIL
    assert.equal((await c.next()).code, Response.CONTINUE);
    // libmilter stores the MACRO packet before it sees the MAIL that abandons the old transaction: its
    // abort callback already sees the new MAIL macros. So does the engine's.
    assert.equal(last('abort')?.i, 'Q2');
    assert.deepEqual(last('mail'), { j: 'mx.test', '{tls_version}': 'TLSv1.3', i: 'Q2', '{mail_addr}': 'again@x' });
    rcpt(c, 'c@x');
    await c.next();
    assert.equal(last('rcpt')?.['{rcpt_addr}'], 'c@x');
    c.close();
  });

  it('after a transaction refused at MAIL or at end of headers, the next MAIL sees its own macros', async () => {
    const c = await session();
    mail(c, 'Q1', 'refuse@x');
    assert.equal((await c.next()).code, Response.REJECT);
    mail(c, 'Q2', 'late@x'); // no ABORT after a refused MAIL
    rcpt(c, 'b@x');
    c.write(encodeMacros(Command.DATA, { '{data}': 'yes' }), encodePacket(Command.DATA), encodeMacros(Command.EOH, { i: 'Q2' }), encodePacket(Command.EOH));
    assert.deepEqual([(await c.next()).code, (await c.next()).code, (await c.next()).code, (await c.next()).code], [Response.CONTINUE, Response.CONTINUE, Response.CONTINUE, Response.TEMPFAIL]);
    assert.equal(last('mail')?.i, 'Q2');
    assert.equal(last('eoh')?.['{data}'], 'yes', 'DATA macros stay visible through the message');
    mail(c, 'Q3', 'third@x'); // no ABORT after a refusal at end of headers either
    assert.equal((await c.next()).code, Response.CONTINUE);
    assert.deepEqual(last('mail'), { j: 'mx.test', '{tls_version}': 'TLSv1.3', i: 'Q3', '{mail_addr}': 'third@x' }, 'DATA and EOH macros of the refused message are gone');
    c.close();
  });

  it('ABORT clears nothing: the abort handler and a MAIL with no macro packet still see the last ones; HELO clears the message macros', async () => {
    const c = await session();
    mail(c, 'Q1');
    await c.next();
    c.write(ABORT);
    c.write(encodeStrings(Command.MAIL, ['<b@x>'])); // no MACRO packet before it
    await c.next();
    assert.equal(last('abort')?.i, 'Q1');
    assert.equal(last('mail')?.i, 'Q1', 'libmilter keeps the MAIL bucket across ABORT');
    c.write(ABORT, encodeMacros(Command.HELO, {}), encodeStrings(Command.HELO, ['again']));
    await c.next();
    assert.deepEqual(last('helo'), { j: 'mx.test' }, 'a HELO replaces its own bucket and clears MAIL and later');
    c.close();
  });

  it('QUIT_NC forgets everything: the next connection on the socket starts empty', async () => {
    const c = await session();
    mail(c, 'Q1');
    await c.next();
    c.write(ABORT, encodePacket(Command.QUIT_NC), encodeConnect({ hostname: 'c2', family: '4', port: 2, address: '192.0.2.2' }));
    await c.next();
    assert.deepEqual(last('connect'), {});
    c.close();
  });
});
