// Issue 23's acceptance point through a real Sendmail 8.17 with SMTP AUTH, as predict-postfix.test.ts does
// through Postfix: the real `themis start` (mta: 'sendmail', what docs/guides/sendmail.md recommends) and a
// real redis-server. The login's two weeks of history are learned into Redis first (test/helpers/predict-e2e.ts);
// then a client authenticates (AUTH PLAIN) to Sendmail from a source address on loopback (Linux routes all of
// 127/8 to lo: 127.0.0.7 is the usual network, 127.0.1.9 a new one), Sendmail hands the client address to
// the milter at CONNECT and the login as {auth_authen} at MAIL, and the daemon's plugin scores what it sees.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CORRESPONDENTS, learnedNetworks, learnPredictHistory, logLines, LOGIN, NEW_ADDRESS, PASSWORD, RECIPIENTS, recommendedPolicies, THUNDERBIRD, USUAL_ADDRESS } from '../helpers/predict-e2e.ts';
import { redisAvailable, startRedis } from '../helpers/redis.ts';
import { sendmailAvailable, sendmailSaslUnavailableReason, sendmailUnavailableReason, startSendmail } from '../helpers/sendmail.ts';
import { SmtpConversation, type SmtpResponse } from '../helpers/smtp.ts';
import { startThemis } from '../helpers/themis.ts';

const skip = !sendmailAvailable()
  ? `sendmail not available: ${sendmailUnavailableReason()}`
  : sendmailSaslUnavailableReason()
    ? `SMTP AUTH not available: ${sendmailSaslUnavailableReason()}`
    : !redisAvailable()
      ? 'redis-server not installed'
      : false;
if (skip) console.log(`# predict-sendmail e2e skipped: ${skip}`);

/** One authenticated session from `from`: EHLO, AUTH PLAIN, the message, QUIT; every reply of the message. */
async function send(port: number, from: string, subject: string, headers: readonly string[]): Promise<SmtpResponse[]> {
  const { smtp, greeting } = await SmtpConversation.open(port, undefined, from);
  try {
    assert.equal(greeting.code, 220, greeting.text);
    assert.equal((await smtp.command('EHLO alice-laptop.example.test')).code, 250);
    const auth = await smtp.command(`AUTH PLAIN ${Buffer.from(`\0${LOGIN}\0${PASSWORD}`).toString('base64')}`);
    assert.equal(auth.code, 235, auth.text);
    const message = [`Date: ${new Date().toUTCString()}`, `Message-Id: <${subject}.${Date.now()}@example.test>`, `From: Alice <${LOGIN}>`, `To: ${RECIPIENTS.join(', ')}`, `Subject: ${subject}`, ...headers, '', `${subject} body`, ''].join('\r\n');
    return await smtp.send(LOGIN, RECIPIENTS, message);
  } finally {
    await smtp.quit();
  }
}

describe('predict signals through a real Sendmail with SMTP AUTH, a real daemon and a real Redis (issue 23)', { skip }, () => {
  for (const [action, thiefHeaders, outcome] of [
    ['tempfail', [], 'tempfailed'],
    ['hold', ['X-Mailer: PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)'], 'quarantined'],
  ] as const) {
    it(`action ${action}: the usual network passes (250); the new network with ${thiefHeaders.length ? 'PHPMailer' : 'a script'} is ${outcome}; a trip with the usual client passes`, { timeout: 180_000 }, async (t) => {
      const redis = await startRedis();
      t.after(() => redis.stop());
      const hours = await learnPredictHistory({ redisUrl: redis.url, policies: recommendedPolicies(action), login: LOGIN, correspondents: CORRESPONDENTS, userAgent: THUNDERBIRD, address: '127.0.0.42' });
      assert.equal(hours, 50);

      const dir = mkdtempSync(join(tmpdir(), 'themis-predict-sendmail-'));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const file = join(dir, 'themis.config.json');
      writeFileSync(file, JSON.stringify({ mta: 'sendmail', store: { type: 'redis', url: redis.url }, plugins: ['themis-plugin-ratelimit', 'themis-plugin-predict'], policies: recommendedPolicies(action) }, null, 2));
      const themis = await startThemis(['--config', file]);
      t.after(() => themis.stop());
      const sm = await startSendmail({ milter: `inet:${themis.port}@127.0.0.1`, saslUsers: [{ login: LOGIN, password: PASSWORD }] });
      t.after(() => sm.stop());

      const usual = await send(sm.smtpPort, USUAL_ADDRESS, 'usual', ['User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.5.2']);
      const thief = await send(sm.smtpPort, NEW_ADDRESS, 'thief', thiefHeaders);
      const trip = await send(sm.smtpPort, NEW_ADDRESS, 'trip', [`User-Agent: ${THUNDERBIRD}`]);

      // Every recipient accepted (an authenticated client may relay), the verdict at the end of data.
      for (const r of [usual, thief, trip]) assert.deepEqual(r.slice(0, 6).map((x) => x.code), [250, 250, 250, 250, 250, 354], JSON.stringify(r));
      assert.match(usual.at(-1)!.text, /^250 2\.0\.0 \w+ Message accepted for delivery$/);
      assert.match(trip.at(-1)!.text, /^250 2\.0\.0 \w+ Message accepted for delivery$/);
      if (action === 'tempfail') {
        assert.match(thief.at(-1)!.text, /^451 4\.7\.1 Unusual sending rate for alice@example\.test: try again later$/);
      } else {
        const id = /^250 2\.0\.0 (\w+) Message accepted for delivery$/.exec(thief.at(-1)!.text);
        assert.ok(id, thief.at(-1)!.text);
        assert.deepEqual(await sm.quarantined(), [id[1]], await sm.mailqQ());
      }
      const delivered = (await sm.waitForDelivered(2)).map((m) => m.headers.find(([name]) => name === 'Subject')?.[1]).sort();
      assert.deepEqual(delivered, ['trip', 'usual']);

      // What the daemon saw behind Sendmail: the usual /24 once more and the new one.
      assert.match((await learnedNetworks(redis.url, recommendedPolicies(action), LOGIN)) ?? '', /^5[23],2;127\.0\.0\.0\/24,51,\d+,\d+;127\.0\.1\.0\/24,[12],\d+,\d+$/);
      const lines = logLines(themis.output());
      assert.deepEqual(lines.filter((l) => l.msg === 'decision').map((d) => d.outcome), ['accepted', outcome, 'accepted'], themis.output().slice(-3000));
      const over = lines.map((l) => l.msg ?? '').filter((m) => m.startsWith('predict: submission over the learned rate'));
      assert.equal(over.length, 1, themis.output().slice(-3000));
      assert.match(over[0], new RegExp(`\\(bounds ÷ [\\d.]+: new network 127\\.0\\.1\\.0/24 \\(login uses 1, [\\d.]+ nats\\), new mail client "${thiefHeaders.length ? 'phpmailer' : 'none'}" \\(login uses 1, [\\d.]+ nats\\)\\)`));
    });
  }
});
