// Policies and reload behind a real Postfix: two policies chosen by SMTP AUTH (outbound) or not
// (inbound) treat clients differently; editing the configuration file under load changes what
// happens with zero failed SMTP sessions; an invalid edit is refused and the old policies go on.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../helpers/postfix.ts';
import { saslUnavailableReason, startSaslPostfix } from '../helpers/sasl.ts';
import { SmtpConversation } from '../helpers/smtp.ts';
import { startThemis, type ThemisProcess } from '../helpers/themis.ts';

const TAG = fileURLToPath(new URL('../fixtures/plugins/tag.ts', import.meta.url));
const skip = !postfixAvailable() ? `postfix not available: ${postfixUnavailableReason()}` : false;

function tempConfig(t: { after(fn: () => void): void }, content: object): string {
  const dir = mkdtempSync(join(tmpdir(), 'themis-reload-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'themis.config.json');
  writeFileSync(file, JSON.stringify(content, null, 2));
  return file;
}

const header = (m: { headers: [string, string][] }, name: string) => m.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const count = (themis: ThemisProcess, text: string) => themis.output().split(text).length - 1;

describe('policies and reload through a real Postfix', { skip }, () => {
  it('inbound and outbound policies, told apart by SMTP AUTH, behave differently per client', { skip: skip || (saslUnavailableReason() ? `SASL not available: ${saslUnavailableReason()}` : false) }, async (t) => {
    const file = tempConfig(t, {
      plugins: [TAG],
      policies: [
        { name: 'no-spoofing', priority: 1, match: { direction: 'inbound', source: '@example.test' }, tag: { value: 'spoof', reject: true }, stopHere: true },
        { name: 'outbound', match: { direction: 'outbound' }, tag: { value: 'outbound' } },
        { name: 'inbound', match: { direction: 'inbound' }, tag: { value: 'inbound' } },
      ],
    });
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startSaslPostfix(t, `inet:127.0.0.1:${themis.port}`, [{ login: 'alice@example.test', password: 'correct horse' }]);

    const authed = await pf.swaks(['--from', 'alice@example.test', '--to', 'bob@example.net', '--header', 'Subject: outbound', '--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', 'correct horse']);
    assert.equal(authed.code, 0, authed.stdout);
    const anonymous = await pf.swaks(['--from', 'someone@example.org', '--to', 'alice@example.test', '--header', 'Subject: inbound']);
    assert.equal(anonymous.code, 0, anonymous.stdout);
    const spoof = await pf.swaks(['--from', 'alice@example.test', '--to', 'bob@example.test', '--header', 'Subject: spoof']);
    assert.match(spoof.stdout, /<\*\* 550 5\.7\.1 Refused by policy no-spoofing/);

    const delivered = await pf.waitForDelivered(2);
    const bySubject = new Map(delivered.map((m) => [header(m, 'Subject'), header(m, 'X-Themis-Policy')]));
    assert.equal(bySubject.get('outbound'), 'outbound', 'the authenticated client got the outbound policy');
    assert.equal(bySubject.get('inbound'), 'inbound', 'the anonymous client got the inbound policy');
    assert.equal(bySubject.has('spoof'), false, 'the spoofed message was refused');
  });

  it('editing the configuration under load changes behaviour with zero failed sessions; an invalid edit is refused', async (t) => {
    const config = (value: string) => ({ plugins: [TAG], policies: [{ name: 'every', tag: { value } }] });
    const file = tempConfig(t, config('v1'));
    const themis = await startThemis(['--config', file], {}, { http: true });
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    let running = true;
    let sent = 0;
    const failures: string[] = [];
    const sender = async (id: number) => {
      while (running) {
        try {
          const { smtp, greeting } = await SmtpConversation.open(pf.smtpPort);
          if (greeting.code !== 220) throw new Error(`greeting ${greeting.code}`);
          const ehlo = await smtp.command('EHLO load.example');
          if (ehlo.code !== 250) throw new Error(`EHLO ${ehlo.code}`);
          // Several messages per connection: a reload must not disturb a session that spans it.
          for (let i = 0; i < 3 && running; i++) {
            const replies = await smtp.send(`load${id}@example.org`, ['rcpt@example.test'], `Subject: load ${id}-${sent}\r\n\r\nbody\r\n`);
            const bad = replies.find((r) => r.code >= 400);
            if (bad) failures.push(`${bad.code} ${bad.text}`);
            else sent++;
          }
          await smtp.quit();
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    };
    const senders = [1, 2, 3, 4].map(sender);

    await waitFor('traffic', () => sent >= 10, 30_000);
    for (const v of ['v2', 'v3', 'v4']) {
      const before = count(themis, '"msg":"configuration reloaded"');
      writeFileSync(file, JSON.stringify(config(v)));
      await waitFor(`reload to ${v}`, () => count(themis, '"msg":"configuration reloaded"') > before);
      const at = sent;
      await waitFor('traffic after the reload', () => sent >= at + 10, 30_000);
    }
    // An invalid edit: a field no plugin claims. Refused; v4 goes on serving.
    writeFileSync(file, JSON.stringify({ plugins: [TAG], policies: [{ name: 'every', ratelimit: { limit: 1 } }] }));
    await waitFor('the refusal', () => themis.output().includes('THEMIS_ERR_RELOAD_REFUSED'));
    const afterRefusal = sent;
    await waitFor('traffic after the refusal', () => sent >= afterRefusal + 10, 30_000);
    running = false;
    await Promise.all(senders);

    t.diagnostic(`${sent} messages in ${failures.length} failed sessions across 3 reloads and 1 refused edit`);
    assert.deepEqual(failures, [], 'no SMTP session failed during the reloads');
    const delivered = await pf.waitForDelivered(sent, 60_000);
    assert.equal(delivered.length, sent);
    const tags = delivered.map((m) => header(m, 'X-Themis-Policy'));
    assert.ok(tags.every((v) => v !== undefined && ['v1', 'v2', 'v3', 'v4'].includes(v)), `every message went through one configuration: ${[...new Set(tags)].join(', ')}`);
    assert.deepEqual([...new Set(tags)].sort(), ['v1', 'v2', 'v3', 'v4'], 'every configuration served some of the load');
    assert.ok(tags.slice(-5).every((v) => v === 'v4'), 'after the refused edit, the last valid configuration still applies');
    assert.match(themis.output(), /"code":"THEMIS_ERR_RELOAD_REFUSED","cause":"THEMIS_ERR_POLICY_UNCLAIMED"/);
    assert.equal(count(themis, '"msg":"configuration reloaded"'), 3);
  });
});
