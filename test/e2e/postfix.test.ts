// The milter engine against a real Postfix (Debian package): each behaviour is checked where a
// user would see it — the SMTP client's replies, the delivered message, Postfix's hold queue.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Action, Decisions, createMilterServer, type HandlerResult, type MessageModifier, type MilterServer, type MilterSession } from '../../src/milter/index.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type DeliveredMessage, type PostfixInstance } from '../helpers/postfix.ts';
import { SmtpConversation } from '../helpers/smtp.ts';

/** What the milter does in the current test. */
interface Behaviour {
  mailFrom?: (s: MilterSession, address: string) => HandlerResult;
  rcptTo?: (s: MilterSession, address: string) => HandlerResult;
  endOfMessage?: (s: MilterSession, m: MessageModifier) => HandlerResult;
}

const header = (m: DeliveredMessage, name: string): string[] => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

const available = postfixAvailable();
if (!available) console.log(`# skipping Postfix end-to-end tests: ${postfixUnavailableReason()}`);

describe('against a real Postfix', { skip: available ? false : `postfix not available: ${postfixUnavailableReason()}` }, () => {
  let milter: MilterServer;
  let pf: PostfixInstance;
  let behaviour: Behaviour = {};
  /** Per milter connection: what it saw, in order. */
  const sessions = new Map<number, string[]>();
  const note = (s: MilterSession, what: string) => {
    if (!sessions.has(s.id)) sessions.set(s.id, []);
    sessions.get(s.id)!.push(what);
  };
  let delivered = 0;

  before(async () => {
    milter = createMilterServer({
      negotiation: { actions: Action.ADDHDRS | Action.CHGHDRS | Action.CHGFROM | Action.QUARANTINE | Action.CHGBODY | Action.ADDRCPT | Action.DELRCPT },
      connect: (s, e) => void note(s, `connect ${e.hostname} ${e.family} ${e.address}`),
      helo: (s, e) => void note(s, `helo ${e.hostname}`),
      mailFrom: (s, e) => {
        note(s, `mail ${e.address}`);
        return behaviour.mailFrom?.(s, e.address);
      },
      rcptTo: (s, e) => {
        note(s, `rcpt ${e.address}`);
        return behaviour.rcptTo?.(s, e.address);
      },
      header: () => undefined,
      endOfMessage: (s, m) => {
        note(s, `eom i=${s.macros.get('i') ? 'set' : 'missing'}`);
        return behaviour.endOfMessage?.(s, m);
      },
      abort: (s) => void note(s, 'abort'),
    });
    await milter.listen('inet:0@127.0.0.1');
    pf = await startPostfix({ milter: `inet:127.0.0.1:${milter.port}`, milterDefaultAction: 'tempfail' });
  });
  after(async () => {
    await pf?.stop();
    await milter?.close({ drainTimeout: 1000 });
  });

  async function swaks(args: string[]) {
    return pf.swaks(['--from', 'sender@example.org', '--helo', 'client.example.org', ...args]);
  }

  it('accept: the message is delivered', async () => {
    behaviour = {};
    const r = await swaks(['--to', 'rcpt@example.test', '--header', 'Subject: accept test']);
    assert.equal(r.code, 0, r.stdout);
    const msgs = await pf.waitForDelivered(++delivered);
    const m = msgs.at(-1)!;
    assert.deepEqual(header(m, 'Subject'), ['accept test']);
    assert.deepEqual(m.envelopeTo, ['rcpt@example.test']);
  });

  it('reject at MAIL: the client sees the 5xx', async () => {
    behaviour = { mailFrom: () => ({ action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'Sender refused by Themis' } }) };
    const r = await swaks(['--to', 'rcpt@example.test']);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, /<\*\* 550 5\.7\.1 Sender refused by Themis/);
  });

  it('reject one of two recipients: the other still gets the message', async () => {
    behaviour = { rcptTo: (_s, a) => (a.startsWith('bad') ? { action: 'reject', reply: { code: 550, enhanced: '5.1.1', text: 'No such user here' } } : undefined) };
    const r = await swaks(['--to', 'bad@example.test,good@example.test', '--header', 'Subject: two rcpts']);
    assert.match(r.stdout, /<\*\* 550 5\.1\.1 No such user here/);
    const m = (await pf.waitForDelivered(++delivered)).at(-1)!;
    assert.deepEqual(header(m, 'Subject'), ['two rcpts']);
    assert.deepEqual(m.envelopeTo, ['good@example.test']);
  });

  it('tempfail at end of message: 4xx, nothing delivered', async () => {
    behaviour = { endOfMessage: () => Decisions.tempfail };
    const r = await swaks(['--to', 'rcpt@example.test']);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, /<\*\* 451 4\.7\.1/);
    assert.equal((await pf.delivered()).length, delivered);
  });

  it('custom multi-line reply code with text, % included', async () => {
    behaviour = { endOfMessage: () => ({ action: 'reject', reply: { code: 554, enhanced: '5.7.0', text: ['Message refused:', 'spam score 100% certain'] } }) };
    const r = await swaks(['--to', 'rcpt@example.test']);
    assert.match(r.stdout, /<\*\* 554-5\.7\.0 Message refused:/);
    assert.match(r.stdout, /<\*\* 554 5\.7\.0 spam score 100% certain/);
  });

  it('headers added, changed and deleted, sender changed, body replaced: all visible in the delivered message', async () => {
    behaviour = {
      endOfMessage: (_s, m) => {
        m.addHeader('X-Themis', 'checked');
        m.addHeader('X-Folded', 'first part\n\tsecond part');
        m.insertHeader(0, 'X-Top', 'inserted');
        m.changeHeader('Subject', 1, '[tagged] original subject');
        m.deleteHeader('X-Remove-Me', 1);
        m.changeSender('bounces@example.org');
        m.replaceBody('Replaced body line 1\r\nline 2\r\n');
        return Decisions.accept;
      },
    };
    const r = await swaks(['--to', 'rcpt@example.test', '--header', 'Subject: original subject', '--add-header', 'X-Remove-Me: please', '--body', 'original body']);
    assert.equal(r.code, 0, r.stdout);
    const m = (await pf.waitForDelivered(++delivered)).at(-1)!;
    assert.deepEqual(header(m, 'X-Themis'), ['checked']);
    assert.deepEqual(header(m, 'X-Folded'), ['first part\tsecond part']);
    assert.equal(m.headers[0][0], 'X-Top', 'inserted at index 0: above Postfix’s own Received:');
    assert.deepEqual(header(m, 'Subject'), ['[tagged] original subject']);
    assert.deepEqual(header(m, 'X-Remove-Me'), []);
    assert.equal(m.envelopeFrom, 'bounces@example.org');
    assert.match(m.body, /^Replaced body line 1\r\nline 2\r\n/);
    assert.doesNotMatch(m.body, /original body/);
  });

  it('quarantine puts the message on the hold queue', async () => {
    behaviour = {
      endOfMessage: (_s, m) => {
        m.quarantine('held by Themis test');
        return Decisions.accept;
      },
    };
    const before = (await pf.held()).length;
    const r = await swaks(['--to', 'rcpt@example.test']);
    assert.equal(r.code, 0, r.stdout);
    const held = await pf.waitForHeld(before + 1);
    assert.equal(held.length, before + 1);
    assert.match(await pf.log(), /milter-hold: END-OF-MESSAGE from /);
  });

  it('several messages on one SMTP connection share one milter connection', async () => {
    behaviour = {};
    sessions.clear();
    const { smtp, greeting } = await SmtpConversation.open(pf.smtpPort);
    assert.equal(greeting.code, 220);
    assert.equal((await smtp.command('EHLO multi.example.org')).code, 250);
    for (let i = 1; i <= 3; i++) {
      const replies = await smtp.send('multi@example.org', ['rcpt@example.test'], `Subject: message ${i}\r\n\r\nbody ${i}\r\n`);
      assert.equal(replies.at(-1)!.code, 250, JSON.stringify(replies));
    }
    await smtp.quit();
    const msgs = await pf.waitForDelivered((delivered += 3));
    assert.deepEqual(msgs.slice(-3).map((m) => header(m, 'Subject')[0]).sort(), ['message 1', 'message 2', 'message 3']);
    const seen = [...sessions.values()].filter((events) => events.includes('helo multi.example.org'));
    assert.equal(seen.length, 1, 'one milter connection for the SMTP session');
    assert.equal(seen[0].filter((e) => e === 'mail multi@example.org').length, 3);
    assert.equal(seen[0].filter((e) => e === 'eom i=set').length, 3, 'the queue id macro is there at end of message');
  });

  it('mail submitted with the local sendmail command goes through non_smtpd_milters', async () => {
    behaviour = {
      endOfMessage: (_s, m) => {
        m.addHeader('X-Themis-Local', 'yes');
        return Decisions.accept;
      },
    };
    sessions.clear();
    const r = await pf.sendmail('local-sender@example.org', ['rcpt@example.test'], 'Subject: from sendmail\n\nlocal body\n');
    assert.equal(r.code, 0, r.stderr);
    const m = (await pf.waitForDelivered(++delivered)).at(-1)!;
    assert.deepEqual(header(m, 'Subject'), ['from sendmail']);
    assert.deepEqual(header(m, 'X-Themis-Local'), ['yes']);
    const events = [...sessions.values()].flat();
    assert.ok(events.includes('mail local-sender@example.org'), `the milter saw the local submission: ${JSON.stringify(events)}`);
  });

  it('Postfix logged no milter protocol error during the whole run', async () => {
    const log = await pf.log();
    assert.doesNotMatch(log, /milter.*(unexpected|malformed|protocol error|configuration error)/i);
  });
});
