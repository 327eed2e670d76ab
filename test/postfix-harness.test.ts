/**
 * Proves the throwaway-Postfix test harness (test/helpers/postfix.ts) works:
 * real smtpd + pickup/cleanup + smtp client delivering into the local sink.
 * Skipped (with the reason printed) when Postfix is not installed or we are not root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  postfixAvailable,
  postfixUnavailableReason,
  startPostfix,
  type DeliveredMessage,
  type PostfixInstance,
} from './helpers/postfix.ts';
import { freePort } from './helpers/themis.ts';

const header = (m: DeliveredMessage, name: string): string[] =>
  m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

function masterPid(pf: PostfixInstance): number {
  return Number(readFileSync(join(pf.dir, 'spool', 'pid', 'master.pid'), 'utf8').trim());
}

/** running (non-zombie) processes in a process group */
function groupMembers(pgid: number): number[] {
  if (!existsSync('/proc/self/stat')) return [];
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[2]) === pgid && rest[0] !== 'Z' && rest[0] !== 'X') out.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}


test('postfix harness', async (t) => {
  if (!postfixAvailable()) {
    t.skip(`postfix not installed: ${postfixUnavailableReason()}`);
    return;
  }

  const pf = await startPostfix({
    extraMainCf: {
      // lets us prove held()/waitForHeld() and extraMainCf
      smtpd_recipient_restrictions: 'check_recipient_access inline:{held@example.test=HOLD}',
    },
  });
  t.after(() => pf.stop());

  await t.test('instance layout', async () => {
    assert.ok(pf.smtpPort > 0);
    for (const d of ['etc', 'spool', 'data', 'log', 'sink']) assert.ok(existsSync(join(pf.dir, d)), d);
    assert.equal(pf.configDir, join(pf.dir, 'etc'));
    const mainCf = readFileSync(join(pf.configDir, 'main.cf'), 'utf8');
    assert.match(mainCf, /^inet_interfaces = 127\.0\.0\.1$/m);
    assert.match(mainCf, /^milter_protocol = 6$/m);
    assert.match(mainCf, /^smtpd_milters = $/m);
    assert.deepEqual(await pf.delivered(), []);
    assert.deepEqual(await pf.held(), []);
  });

  await t.test('swaks message reaches the sink with its envelope and headers', async () => {
    const r = await pf.swaks([
      '--from', 'sender@example.org',
      '--to', 'rcpt@example.test',
      '--helo', 'client.example.org',
      '--header', 'X-Harness: via-swaks',
      '--body', 'hello from swaks',
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const [m] = await pf.waitForDelivered(1);
    assert.equal(m.envelopeFrom, 'sender@example.org');
    assert.deepEqual(m.envelopeTo, ['rcpt@example.test']);
    assert.deepEqual(header(m, 'X-Harness'), ['via-swaks']);
    assert.match(header(m, 'Received')[0], /^from client\.example\.org \(unknown \[127\.0\.0\.1\]\)\s+by mx\.example\.test \(Postfix\) with ESMTP id [0-9A-F]+/);
    assert.match(m.body, /^hello from swaks\r\n/);
    assert.ok(m.raw.includes('\r\n\r\nhello from swaks'));
    assert.ok(m.file.startsWith(join(pf.dir, 'sink')));
  });

  await t.test('sendmail message goes through pickup/cleanup to the sink', async () => {
    const started = Date.now();
    const r = await pf.sendmail('local@example.org', ['first@example.test', 'second@example.test'], [
      'From: Local <local@example.org>',
      'To: first@example.test',
      'Subject: via sendmail',
      'X-Harness: via-sendmail',
      '',
      'line one',
      '.',
      '..dots stay',
      '',
    ].join('\n'));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const all = await pf.waitForDelivered(2);
    // pickup is triggered by postdrop: no waiting for a queue scan
    assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
    const m = all.find((x) => header(x, 'X-Harness')[0] === 'via-sendmail');
    assert.ok(m, 'sendmail message delivered');
    assert.equal(m.envelopeFrom, 'local@example.org');
    assert.deepEqual([...(m.envelopeTo ?? [])].sort(), ['first@example.test', 'second@example.test']);
    assert.deepEqual(header(m, 'Subject'), ['via sendmail']);
    assert.match(header(m, 'Received')[0], /^by mx\.example\.test \(Postfix, from userid \d+\)/);
    assert.equal(m.body, 'line one\r\n.\r\n..dots stay\r\n');
    assert.match(await pf.log(), /postfix\/pickup\[\d+\]: [0-9A-F]+: uid=\d+ from=<local@example\.org>/);
  });

  await t.test('mail to a non-relayed domain is refused with 5xx', async () => {
    const r = await pf.swaks(['--from', 'sender@example.org', '--to', 'someone@elsewhere.invalid']);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /<\*\* 5\d\d 5\.7\.1 .*Relay access denied/);
    assert.match(await pf.log(), /NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 554 5\.7\.1/);
  });

  await t.test('HOLD puts the message in the hold queue, not in the sink', async () => {
    const before = (await pf.delivered()).length;
    const r = await pf.swaks(['--from', 'sender@example.org', '--to', 'held@example.test']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const ids = await pf.waitForHeld(1);
    assert.equal(ids.length, 1);
    assert.match(ids[0], /^[0-9A-F]+$/);
    assert.match(await pf.log(), new RegExp(`${ids[0]}: client=`));
    assert.equal((await pf.delivered()).length, before);
  });

  await t.test('waitForDelivered times out with the maillog in the error', async () => {
    await assert.rejects(pf.waitForDelivered(99, 300), /timed out after 300 ms waiting for 99 delivered.*\n--- maillog/s);
  });

  await t.test('milter options reach smtpd (unreachable milter + tempfail -> 4xx)', async () => {
    const port = await freePort();
    const pf2 = await startPostfix({ milter: `inet:127.0.0.1:${port}`, milterDefaultAction: 'tempfail' });
    try {
      const cf = readFileSync(join(pf2.configDir, 'main.cf'), 'utf8');
      assert.match(cf, new RegExp(`^smtpd_milters = inet:127\\.0\\.0\\.1:${port}$`, 'm'));
      assert.match(cf, new RegExp(`^non_smtpd_milters = inet:127\\.0\\.0\\.1:${port}$`, 'm'));
      const r = await pf2.swaks(['--from', 'sender@example.org', '--to', 'rcpt@example.test']);
      assert.notEqual(r.code, 0);
      assert.match(r.stdout, /<\*\* 4\d\d 4\.7\.1/);
      assert.match(await pf2.log(), new RegExp(`connect to Milter service inet:127\\.0\\.0\\.1:${port}: Connection refused`));
    } finally {
      await pf2.stop();
    }
  });

  await t.test('parallel instances do not collide; stop() cleans up and is idempotent', async () => {
    const [a, b] = await Promise.all([startPostfix({}), startPostfix({})]);
    try {
      assert.notEqual(a.dir, b.dir);
      assert.notEqual(a.smtpPort, b.smtpPort);
      assert.notEqual(a.smtpPort, pf.smtpPort);
      const [ra, rb] = await Promise.all([
        a.swaks(['--from', 'a@example.org', '--to', 'a@example.test', '--header', 'X-Instance: a']),
        b.swaks(['--from', 'b@example.org', '--to', 'b@example.test', '--header', 'X-Instance: b']),
      ]);
      assert.equal(ra.code, 0, ra.stdout + ra.stderr);
      assert.equal(rb.code, 0, rb.stdout + rb.stderr);
      const [[ma], [mb]] = await Promise.all([a.waitForDelivered(1), b.waitForDelivered(1)]);
      assert.deepEqual(header(ma, 'X-Instance'), ['a']);
      assert.deepEqual(header(mb, 'X-Instance'), ['b']);
      assert.equal((await a.delivered()).length, 1);
      assert.equal((await b.delivered()).length, 1);
    } finally {
      const pids = [masterPid(a), masterPid(b)];
      await Promise.all([a.stop(), b.stop()]);
      await a.stop(); // second call is a no-op
      for (const pid of pids) assert.deepEqual(groupMembers(pid), [], `postfix processes of master ${pid} left`);
      assert.equal(existsSync(a.dir), process.env.THEMIS_KEEP_TMP === '1');
      assert.equal(existsSync(b.dir), process.env.THEMIS_KEEP_TMP === '1');
    }
  });
});
