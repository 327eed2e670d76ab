// Themis behind a real Sendmail 8.17 (a private, throwaway instance: test/helpers/sendmail.ts): the
// `themis` command with the headers plugin, the example recipient allowlist and a verdict fixture,
// checked where a user would see it — the SMTP client's replies, the message the sink receives,
// Sendmail's quarantine (`mailq -qQ`) and its log.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { sendmailAvailable, sendmailSaslUnavailableReason, sendmailUnavailableReason, startSendmail, type DeliveredMessage, type SendmailInstance } from '../helpers/sendmail.ts';
import { SmtpConversation, type SmtpResponse } from '../helpers/smtp.ts';
import { startThemis, type ThemisProcess } from '../helpers/themis.ts';

const VERDICT = fileURLToPath(new URL('../fixtures/plugins/verdict.ts', import.meta.url));

const skip = sendmailAvailable() ? false : `sendmail not available: ${sendmailUnavailableReason()}`;
if (skip) console.log(`# skipping Sendmail end-to-end tests: ${skip}`);
const saslSkip = skip || (sendmailSaslUnavailableReason() ? `SMTP AUTH not available: ${sendmailSaslUnavailableReason()}` : false);
if (!skip && saslSkip) console.log(`# skipping the Sendmail SMTP AUTH test: ${saslSkip}`);

const ALICE = { login: 'alice@example.test', password: 'correct horse' };

const config = {
  plugins: ['themis-plugin-headers', 'themis-plugin-recipient-allowlist', VERDICT],
  policies: [
    { name: 'recipients', allowlist: { recipients: ['@example.test'], text: 'No such mailbox here (Themis)' } },
    {
      name: 'rules',
      headers: [
        // "q=" keeps the header there when the queue id is missing, so that a test can see it empty
        { name: 'queue-id', then: [{ add: 'X-Themis-Queue-Id', value: 'q={queueId}' }] },
        { name: 'auth', if: { envelope: 'auth', present: true }, then: [{ add: 'X-Themis-Auth', value: '{auth}' }] },
        {
          name: 'edit',
          if: { header: 'Subject', equals: 'edit headers' },
          then: [
            { add: 'X-Themis-Added', value: 'added by {policy}' },
            { insert: 'X-Themis-Top', value: 'inserted at the top' },
            { change: 'Subject', value: '[edited] {value}' },
            { delete: 'X-Remove-Me' },
          ],
        },
        { name: 'reject', if: { header: 'Subject', equals: 'reject me' }, verdict: { action: 'reject', reason: 'test reject', reply: { code: 554, enhanced: '5.7.0', text: 'Refused by the Sendmail test' } } },
        { name: 'tempfail', if: { header: 'Subject', equals: 'tempfail me' }, verdict: { action: 'tempfail', reason: 'test tempfail', reply: { code: 452, enhanced: '4.3.1', text: 'Try again later, Sendmail test' } } },
      ],
    },
    { name: 'hold', match: { destination: 'hold@example.test' }, verdict: { action: 'quarantine', reason: 'held for review by Themis' } },
    {
      name: 'multiline',
      match: { destination: 'multiline@example.test' },
      verdict: { action: 'reject', reason: 'multi-line test', reply: { code: 550, enhanced: '5.7.1', text: ['Message refused:', 'spam score 100% certain'] } },
    },
  ],
};

const header = (m: DeliveredMessage, name: string): string[] => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
const subjectOf = (m: DeliveredMessage) => header(m, 'Subject')[0];
/** The queue id in Sendmail's "250 2.0.0 6B3BcpTH006556 Message accepted for delivery". */
const queueIdOf = (r: SmtpResponse): string => {
  const m = /^250 2\.0\.0 (\w+) Message accepted for delivery$/.exec(r.text);
  assert.ok(m, `a 250 with a queue id: ${r.text}`);
  return m[1];
};
const message = (subject: string, extra = '') => `From: <sender@example.org>\r\nTo: <rcpt@example.test>\r\nSubject: ${subject}\r\n${extra}\r\nbody of ${subject}\r\n`;

// The whole suite runs under both negotiation shapes: the default (shaped for Postfix: DATA answered)
// and mta: 'sendmail' (DATA off, what docs/guides/sendmail.md recommends behind Sendmail).
for (const mta of ['postfix', 'sendmail'] as const) describe(`Themis behind a real Sendmail (mta: '${mta}')`, { skip }, () => {
  let dir: string;
  let themis: ThemisProcess;
  let sm: SendmailInstance;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'themis-sendmail-e2e-'));
    const file = join(dir, 'themis.config.json');
    writeFileSync(file, JSON.stringify({ ...config, mta }, null, 2));
    themis = await startThemis(['--config', file]);
    sm = await startSendmail({ milter: `inet:${themis.port}@127.0.0.1`, saslUsers: saslSkip ? undefined : [ALICE] });
  });
  after(async () => {
    await sm?.stop();
    await themis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** One SMTP session: EHLO, then `fn`, then QUIT. */
  async function session<T>(fn: (smtp: SmtpConversation) => Promise<T>): Promise<T> {
    const { smtp, greeting } = await SmtpConversation.open(sm.smtpPort);
    try {
      assert.equal(greeting.code, 220, greeting.text);
      assert.match(greeting.text, /ESMTP Sendmail 8\./);
      const ehlo = await smtp.command('EHLO client.example.org');
      assert.equal(ehlo.code, 250, ehlo.text);
      return await fn(smtp);
    } finally {
      await smtp.quit();
    }
  }
  const sendOne = (from: string, to: string[], msg: string) => session((smtp) => smtp.send(from, to, msg));

  /** The delivered message with this Subject (waits for it). */
  async function deliveredWithSubject(subject: string, timeoutMs = 20_000): Promise<DeliveredMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = (await sm.delivered()).find((x) => subjectOf(x) === subject);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`no delivered message with Subject ${JSON.stringify(subject)} after ${timeoutMs} ms\n--- sendmail log ---\n${(await sm.log()).split('\n').slice(-30).join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('accept: a plain message is delivered, with the queue id Themis saw', async () => {
    const replies = await sendOne('sender@example.org', ['rcpt@example.test'], message('plain'));
    const id = queueIdOf(replies.at(-1)!);
    const m = await deliveredWithSubject('plain');
    assert.equal(m.envelopeFrom, 'sender@example.org');
    assert.deepEqual(m.envelopeTo, ['rcpt@example.test']);
    assert.deepEqual(header(m, 'X-Themis-Queue-Id'), [`q=${id}`]);
    assert.deepEqual(header(m, 'X-Themis-Auth'), [], 'no SMTP AUTH, no login');
    assert.match(header(m, 'Received')[0], new RegExp(`by mx\\.example\\.test \\(8\\.17[^)]*\\) with ESMTP id ${id}`));
    assert.match(m.body, /^body of plain\r\n/);
  });

  it('headers added, inserted, changed and deleted at end of message', async () => {
    const replies = await sendOne('sender@example.org', ['rcpt@example.test'], message('edit headers', 'X-Remove-Me: please\r\nX-Keep: yes\r\n'));
    assert.equal(replies.at(-1)!.code, 250, replies.at(-1)!.text);
    const m = await deliveredWithSubject('[edited] edit headers');
    const names = m.headers.map(([n]) => n);
    assert.equal(names[0], 'X-Themis-Top', 'inserted at index 0: above Sendmail’s own Received:');
    assert.equal(names[1], 'Received');
    assert.deepEqual(header(m, 'X-Themis-Top'), ['inserted at the top']);
    assert.deepEqual(header(m, 'X-Themis-Added'), ['added by rules']);
    assert.equal(names.at(-1), 'X-Themis-Added', 'added headers go at the end');
    assert.deepEqual(header(m, 'Subject'), ['[edited] edit headers']);
    assert.ok(names.indexOf('Subject') < names.indexOf('X-Keep'), 'the Subject was changed in place');
    assert.deepEqual(header(m, 'X-Remove-Me'), []);
    assert.deepEqual(header(m, 'X-Keep'), ['yes']);
  });

  it('a refused recipient gets the allowlist’s 550 at RCPT; the other recipient still gets the message', async () => {
    const replies = await sendOne('sender@example.org', ['nobody@example.net', 'rcpt@example.test'], message('one refused'));
    // Sendmail puts the address before a milter's RCPT reply text
    assert.equal(replies[1].text, '550 5.7.1 <nobody@example.net>... No such mailbox here (Themis)');
    assert.equal(replies[2].code, 250, replies[2].text);
    assert.equal(replies.at(-1)!.code, 250, replies.at(-1)!.text);
    const m = await deliveredWithSubject('one refused');
    assert.deepEqual(m.envelopeTo, ['rcpt@example.test']);
  });

  it('reject with a custom reply: the client sees exactly that code and text', async () => {
    const replies = await sendOne('sender@example.org', ['rcpt@example.test'], message('reject me'));
    assert.equal(replies.at(-1)!.text, '554 5.7.0 Refused by the Sendmail test');
    assert.match(await sm.log(), /Milter: data, reject=554 5\.7\.0 Refused by the Sendmail test/);
  });

  it('tempfail with a custom reply: the client sees exactly that code and text', async () => {
    const replies = await sendOne('sender@example.org', ['rcpt@example.test'], message('tempfail me'));
    assert.equal(replies.at(-1)!.text, '452 4.3.1 Try again later, Sendmail test');
  });

  it('a multi-line reply with % in its text reaches the client line by line', async () => {
    const replies = await sendOne('sender@example.org', ['multiline@example.test'], message('multi-line refusal'));
    assert.equal(replies.at(-1)!.text, '550-5.7.1 Message refused:\n550 5.7.1 spam score 100% certain');
  });

  it('quarantine: accepted, never delivered, listed by mailq -qQ with the plain reason', async () => {
    const replies = await sendOne('sender@example.org', ['hold@example.test'], message('quarantine me'));
    const id = queueIdOf(replies.at(-1)!);
    assert.deepEqual(await sm.quarantined(), [id]);
    const listing = await sm.mailqQ();
    assert.match(listing, new RegExp(`^${id}\\s+\\d+ .*<sender@example\\.org>\\n\\s+QUARANTINE: held for review by Themis\\n\\s+<hold@example\\.test>`, 'm'), listing);
    assert.match(await sm.log(), new RegExp(`${id}: milter=themis, quarantine=held for review by Themis\\n`));
    // a later message is delivered; the quarantined one still is not
    await sendOne('sender@example.org', ['rcpt@example.test'], message('after the quarantine'));
    await deliveredWithSubject('after the quarantine');
    assert.equal((await sm.delivered()).filter((m) => subjectOf(m) === 'quarantine me').length, 0);
  });

  it('several messages on one SMTP connection, RSET between them: each delivered with its own queue id', async () => {
    const ids = await session(async (smtp) => {
      const ids: string[] = [];
      for (let i = 1; i <= 3; i++) {
        const replies = await smtp.send(`multi${i}@example.org`, ['rcpt@example.test'], message(`connection message ${i}`));
        ids.push(queueIdOf(replies.at(-1)!));
        assert.equal((await smtp.command('RSET')).code, 250);
      }
      return ids;
    });
    assert.equal(new Set(ids).size, 3, `three queue ids: ${ids}`);
    for (let i = 1; i <= 3; i++) {
      const m = await deliveredWithSubject(`connection message ${i}`);
      assert.equal(m.envelopeFrom, `multi${i}@example.org`);
      assert.deepEqual(header(m, 'X-Themis-Queue-Id'), [`q=${ids[i - 1]}`]);
    }
  });

  it(
    'MAIL, RCPT, RSET, then a whole message on one connection: the new transaction’s MAIL macros (queue id) reach Themis',
    async () => {
      const ids = await session(async (smtp) => {
        const ids: string[] = [];
        assert.equal((await smtp.command('MAIL FROM:<abandoned@example.org>')).code, 250);
        assert.equal((await smtp.command('RCPT TO:<rcpt@example.test>')).code, 250);
        assert.equal((await smtp.command('RSET')).code, 250);
        ids.push(queueIdOf((await smtp.send('after-rset@example.org', ['rcpt@example.test'], message('after an abandoned transaction'))).at(-1)!));
        // and once more after a complete message, for comparison
        assert.equal((await smtp.command('RSET')).code, 250);
        ids.push(queueIdOf((await smtp.send('after-rset@example.org', ['rcpt@example.test'], message('after a complete message'))).at(-1)!));
        return ids;
      });
      const first = await deliveredWithSubject('after an abandoned transaction');
      const second = await deliveredWithSubject('after a complete message');
      assert.deepEqual(header(second, 'X-Themis-Queue-Id'), [`q=${ids[1]}`]);
      assert.deepEqual(header(first, 'X-Themis-Queue-Id'), [`q=${ids[0]}`], 'the queue id Sendmail sent with the MAIL after the RSET');
    },
  );

  it('sendmail -bs: a message submitted on stdin goes through Themis and is delivered', async () => {
    const r = await sm.sendmailBs('local@example.org', ['rcpt@example.test'], 'From: <local@example.org>\nSubject: from sendmail -bs\n\nlocal body\n');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.replies[0].code, 220, r.stdout);
    const end = r.replies.find((x) => /Message accepted for delivery/.test(x.text));
    assert.ok(end, `an accepted message: ${r.stdout}${r.stderr}`);
    const id = queueIdOf(end);
    const m = await deliveredWithSubject('from sendmail -bs');
    assert.deepEqual(header(m, 'X-Themis-Queue-Id'), [`q=${id}`], 'the milter saw it');
    assert.equal(m.envelopeFrom, 'local@example.org');
    assert.match(m.body, /^local body\r\n/);
  });

  it('SMTP AUTH: the login reaches Themis as {auth_authen} at MAIL', { skip: saslSkip }, async () => {
    const replies = await session(async (smtp) => {
      const auth = await smtp.command(`AUTH PLAIN ${Buffer.from(`\0${ALICE.login}\0${ALICE.password}`).toString('base64')}`);
      assert.equal(auth.code, 235, auth.text);
      return smtp.send(ALICE.login, ['bob@example.test'], message('authenticated'));
    });
    assert.equal(replies.at(-1)!.code, 250, replies.at(-1)!.text);
    const m = await deliveredWithSubject('authenticated');
    assert.deepEqual(header(m, 'X-Themis-Auth'), [ALICE.login]);
    assert.match(header(m, 'Received')[0], /\(authenticated bits=0\)/);
  });

  it('Sendmail logged no milter error, and Themis one decision per finished message', async () => {
    const log = await sm.log();
    assert.match(log, /Milter \(themis\): init success to negotiate/);
    const problems = log.split('\n').filter((l) => /Milter|milter=/.test(l) && /error|timeout|timed out|unexpected|failed|to error state|abort/i.test(l));
    assert.deepEqual(problems, []);
    assert.match(themis.output(), /"msg":"decision"/);
    assert.doesNotMatch(themis.output(), /"level":(50|60)/, 'no error logged by Themis');
  });
});
