// The harness plays Sendmail as the daemon sees it behind a real Sendmail 8.17 (test/helpers/sendmail.ts):
// a recording plugin runs once through createTestKernel({ mta: 'sendmail' }) and once through the kernel
// served on a socket (createMilterServer, as `themis start` serves it) behind the Sendmail instance, with
// the same message sent over SMTP; per stage the plugin must see the same macros, SASL login, queue id,
// client, HELO name, sender, recipients, header values and body. The harness gets the instance's own
// facts (host name, version, interface, the client's port, the queue id) and its macro lists
// (SENDMAIL_MILTER_MACROS), and derives the rest. Then the Postfix/Sendmail differences, pinned in the
// harness alone so that they hold where no Sendmail is installed.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Kernel } from 'themis-milter';
import { createMilterServer, type MacroListStage } from 'themis-milter/milter';
import { createTestKernel, type TestKernelOptions } from 'themis-milter/testing';
import { SENDMAIL_DEFAULT_MACROS } from '../../src/testing/sendmail-macros.ts';
import { SENDMAIL_HOSTNAME, SENDMAIL_MILTER_MACROS, sendmailAvailable, sendmailSaslUnavailableReason, sendmailUnavailableReason, startSendmail, type SendmailInstance } from '../helpers/sendmail.ts';
import { SmtpConversation } from '../helpers/smtp.ts';
import { ALL_TAPS, recorder as recordEveryStage, type Seen, type Tap } from '../fixtures/plugins/recorder.ts';

/** The recorder on every stage, with the lists it asks for. */
const recorder = (macros?: Partial<Record<MacroListStage, string[]>>) => recordEveryStage(ALL_TAPS, macros);

const skip = sendmailAvailable() ? false : `sendmail not available: ${sendmailUnavailableReason()}`;
if (skip) console.log(`# skipping the harness/Sendmail agreement tests: ${skip}`);
const saslSkip = skip || (sendmailSaslUnavailableReason() ? `SMTP AUTH not available: ${sendmailSaslUnavailableReason()}` : false);
if (!skip && saslSkip) console.log(`# the harness/Sendmail agreement runs without SMTP AUTH: ${saslSkip}`);

const ALICE = { login: 'alice@example.test', password: 'correct horse' };
const HELO = 'client.example.org';


/** A message as both paths get it: headers as written after the colon (the separating space included). */
interface Msg {
  auth?: boolean;
  from: string;
  rcpt: string[];
  headers: [string, string][];
  body: string;
}

const HEADERS: [string, string][] = [
  ['Message-Id', ' <agree.1@example.org>'],
  ['Subject', ' a folded\r\n\tsubject line'],
  ['X-Spaces', '    four spaces'],
  ['X-Tab', '\ttab first'],
  ['X-Empty', ''],
];
const BODY = 'line one\r\nline two\r\n';

/** Sendmail's lists in the harness's terms: exactly the .mc the instance was built from. */
const MC_LISTS: Partial<Record<MacroListStage, string>> = {
  connect: SENDMAIL_MILTER_MACROS.CONNECT,
  helo: SENDMAIL_MILTER_MACROS.HELO,
  mailFrom: SENDMAIL_MILTER_MACROS.ENVFROM,
  rcptTo: SENDMAIL_MILTER_MACROS.ENVRCPT,
  endOfMessage: SENDMAIL_MILTER_MACROS.EOM,
};
/** Sendmail derives these from its rulesets (mailer and host of each address), which the harness has not got. */
const ROUTING = ['{mail_mailer}', '{mail_host}', '{rcpt_mailer}', '{rcpt_host}'];

describe('createTestKernel({ mta: "sendmail" }) and the daemon behind a real Sendmail agree, stage by stage', { skip }, () => {
  let sm: SendmailInstance;
  let proxy: Server;
  /** The milter port the proxy forwards Sendmail's next connection to (one daemon per case). */
  let target = 0;
  const sockets = new Set<Socket>();

  before(async () => {
    // Sendmail's .mc names one milter address; each case serves its own kernel behind this forwarder.
    proxy = createServer((down) => {
      const up = netConnect(target, '127.0.0.1');
      for (const s of [down, up]) {
        sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => sockets.delete(s));
      }
      down.pipe(up).on('close', () => down.destroy());
      up.pipe(down);
      up.on('close', () => down.destroy());
      down.on('close', () => up.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const port = (proxy.address() as { port: number }).port;
    sm = await startSendmail({ milter: `inet:${port}@127.0.0.1`, saslUsers: saslSkip ? undefined : [ALICE] });
  });
  after(async () => {
    await sm?.stop();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  });

  /** Sends `m` through the real Sendmail to a kernel with the plugin; returns what Sendmail's greeting and reply said. */
  async function viaSendmail(plugin: ReturnType<typeof recorder>['plugin'], m: Msg): Promise<{ version: string; queueId: string }> {
    const kernel = await Kernel.create({ plugins: [{ plugin }], policies: [], mta: 'sendmail' });
    await kernel.ready();
    const server = createMilterServer(kernel.application);
    await server.listen('inet:0@127.0.0.1');
    target = server.port!;
    try {
      const { smtp, greeting } = await SmtpConversation.open(sm.smtpPort);
      try {
        const version = /ESMTP Sendmail ([\d.]+)\//.exec(greeting.text)?.[1];
        assert.ok(version, greeting.text);
        assert.equal((await smtp.command(`EHLO ${HELO}`)).code, 250);
        if (m.auth) assert.equal((await smtp.command(`AUTH PLAIN ${Buffer.from(`\0${ALICE.login}\0${ALICE.password}`).toString('base64')}`)).code, 235);
        const text = `${m.headers.map(([n, v]) => `${n}:${v}\r\n`).join('')}\r\n${m.body}`;
        const replies = await smtp.send(m.from, m.rcpt, text);
        const end = replies.at(-1)!;
        const id = /^250 2\.0\.0 (\w+) Message accepted for delivery$/.exec(end.text)?.[1];
        assert.ok(id, `accepted: ${end.text}\n${(await sm.log()).split('\n').slice(-20).join('\n')}`);
        return { version, queueId: id };
      } finally {
        await smtp.quit();
      }
    } finally {
      await server.close({ drainTimeout: 2_000 });
      await kernel.shutdown();
    }
  }

  /** The same message through the harness, told the instance's own facts; returns the recording. */
  async function viaHarness(plugin: ReturnType<typeof recorder>['plugin'], m: Msg, facts: { version: string; queueId: string; port: number }) {
    const options: TestKernelOptions = {
      plugins: [{ plugin }],
      mta: 'sendmail',
      // What this Sendmail says of itself: its name, version, the interface the client reached (loopback: no {if_addr}).
      macros: { j: SENDMAIL_HOSTNAME, v: facts.version, '{daemon_addr}': '127.0.0.1', '{if_name}': 'localhost' },
      macroLists: MC_LISTS,
    };
    const t = await createTestKernel(options);
    try {
      await t.message({
        client: { address: '127.0.0.1', hostname: 'localhost', port: facts.port },
        helo: HELO,
        from: m.from,
        rcpt: m.rcpt,
        headers: m.headers,
        body: m.body,
        auth: m.auth ? ALICE.login : undefined,
        queueId: facts.queueId,
      });
    } finally {
      await t.close();
    }
  }

  /** Runs both ways; returns both recordings, the daemon's less the routing macros (asserted present first). */
  async function observe(m: Msg, macros?: Partial<Record<MacroListStage, string[]>>) {
    const d = recorder(macros);
    const facts = await viaSendmail(d.plugin, m);
    const port = d.seen.find((o) => o.stage === 'connect')?.client?.port;
    assert.ok(port, 'the daemon saw the client');
    const h = recorder(macros);
    await viaHarness(h.plugin, m, { ...facts, port });
    const mail = d.seen.find((o) => o.stage === 'mailFrom')!;
    if (!macros?.mailFrom) assert.ok('{mail_mailer}' in mail.macros, 'Sendmail resolved the sender’s mailer');
    const daemon = d.seen.map((o) => {
      const kept = { ...o.macros };
      for (const n of ROUTING) delete kept[n];
      return { ...o, macros: kept };
    });
    return { harness: h.seen, daemon, queueId: facts.queueId };
  }

  const at = (seen: Seen[], stage: Tap, n = 0) => seen.filter((o) => o.stage === stage)[n];

  it('the harness’s stock lists are the installed sendmail-cf’s (cf/m4/cfhead.m4 confMILTER_MACROS_*)', () => {
    const prefix = process.env.THEMIS_TEST_SENDMAIL_PREFIX || '/opt/themis-test-sendmail';
    const cfhead = readFileSync(join(prefix, 'root/usr/share/sendmail/cf/m4/cfhead.m4'), 'utf8');
    const stock: Record<string, string[]> = {};
    for (const [, stage, list] of cfhead.matchAll(/^define\(`confMILTER_MACROS_(\w+)', `+([^']*)'+\)/gm)) stock[stage] = list.split(/[\s,]+/).filter(Boolean);
    const byStage: Record<MacroListStage, string> = { connect: 'CONNECT', helo: 'HELO', mailFrom: 'ENVFROM', rcptTo: 'ENVRCPT', data: 'DATA', endOfHeaders: 'EOH', endOfMessage: 'EOM' };
    for (const [stage, name] of Object.entries(byStage)) assert.deepStrictEqual(SENDMAIL_DEFAULT_MACROS[stage as MacroListStage], stock[name] ?? [], name);
  });

  it('the .mc lists of the Sendmail guide: an authenticated client, two recipients, a folded header and leading spaces', async () => {
    const m: Msg = { auth: !saslSkip, from: 'a@example.org', rcpt: ['b@example.test', 'c@example.test'], headers: HEADERS, body: BODY };
    const { harness, daemon, queueId } = await observe(m);
    assert.deepStrictEqual(harness, daemon);
    // What that agreement means, spelled out.
    assert.equal(at(harness, 'mailFrom').macros.i, queueId, 'Sendmail knows the queue id at MAIL');
    assert.equal(at(harness, 'rcptTo').queueId, queueId, 'and the message has it from the first RCPT on');
    assert.equal(at(harness, 'connect').macros['{client_addr}'], '127.0.0.1');
    assert.equal(at(harness, 'connect').macros['{if_addr}'], undefined, 'no {if_addr} on the loopback interface');
    if (m.auth) {
      assert.equal(at(harness, 'mailFrom').auth, ALICE.login);
      assert.deepStrictEqual([at(harness, 'mailFrom').macros['{auth_type}'], at(harness, 'mailFrom').macros['{auth_ssf}']], ['PLAIN', '0']);
    }
    assert.equal(at(harness, 'endOfMessage').macros['{msg_id}'], '<agree.1@example.org>');
    assert.deepStrictEqual(at(harness, 'endOfMessage').headers, [
      ['Message-Id', '<agree.1@example.org>'],
      ['Subject', 'a folded\n\tsubject line'],
      ['X-Spaces', '   four spaces'],
      ['X-Tab', '\ttab first'],
      ['X-Empty', ''],
    ], 'one space after the colon eaten, folded with LF, no header Sendmail added itself');
  });

  it('an anonymous client and the null sender', async () => {
    const { harness, daemon, queueId } = await observe({ from: '', rcpt: ['b@example.test'], headers: [['Subject', ' null sender']], body: BODY });
    // No Message-Id: Sendmail makes one, <YYYYMMDDHHMM.queue-id@host>; its minute may differ between the two runs.
    const made = new RegExp(`^<\\d{12}\\.${queueId}@${SENDMAIL_HOSTNAME.replace(/\./g, '\\.')}>$`);
    assert.match(at(daemon, 'endOfMessage').macros['{msg_id}'], made);
    assert.match(at(harness, 'endOfMessage').macros['{msg_id}'], made);
    const minute = (seen: Seen[]) => seen.map((o) => (o.macros['{msg_id}'] ? { ...o, macros: { ...o.macros, '{msg_id}': o.macros['{msg_id}'].replace(/^<\d{12}/, '<t') } } : o));
    assert.deepStrictEqual(minute(harness), minute(daemon));
    const mail = at(harness, 'mailFrom').macros;
    assert.equal(mail['{mail_addr}'], '');
    assert.deepStrictEqual(['{auth_type}', '{auth_authen}', '{auth_ssf}'].filter((k) => k in mail), [], 'no SASL macros without a login');
  });

  it('lists a plugin asks for extend Sendmail’s stock ones; its end-of-message list is used (the kernel sends an end-of-headers list with it, which milter.c needs)', async () => {
    const { harness, daemon } = await observe({ from: 'a@example.org', rcpt: ['b@example.test'], headers: HEADERS, body: BODY }, { connect: ['{client_addr}'], endOfMessage: ['{rcpt_addr}'] });
    assert.deepStrictEqual(harness, daemon);
    const connect = at(harness, 'connect').macros;
    assert.equal(connect['{client_addr}'], '127.0.0.1');
    assert.ok(connect['{if_name}'] !== undefined, 'the stock CONNECT list is extended, not replaced');
    assert.equal(at(harness, 'endOfMessage').macros['{msg_id}'], '<agree.1@example.org>', 'the stock EOM list is kept');
    assert.equal(at(harness, 'endOfMessage').macros['{rcpt_addr}'], 'b@example.test', 'the plugin’s EOM macro is sent');
  });

  it('an end-of-headers list alone: the kernel sends the stock end-of-message list with it, so {msg_id} still arrives', async () => {
    const { harness, daemon } = await observe({ from: 'a@example.org', rcpt: ['b@example.test'], headers: HEADERS, body: BODY }, { endOfHeaders: ['{mail_addr}'] });
    assert.deepStrictEqual(harness, daemon);
    assert.equal(at(harness, 'endOfHeaders').macros['{mail_addr}'], 'a@example.org');
    assert.equal(at(harness, 'endOfMessage').macros['{msg_id}'], '<agree.1@example.org>');
  });
});

// ---- Postfix and Sendmail, in the harness alone -------------------------------------------------------

describe('createTestKernel: what differs between Postfix (the default) and Sendmail', () => {
  async function run(options: Partial<TestKernelOptions>, macros?: Partial<Record<MacroListStage, string[]>>, auth = 'alice') {
    const r = recorder(macros);
    const t = await createTestKernel({ plugins: [{ plugin: r.plugin }], ...options });
    try {
      await t.message({ from: 'a@example.org', rcpt: ['b@example.net', 'c@example.net'], headers: HEADERS, body: BODY, auth, queueId: 'Q1' });
    } finally {
      await t.close();
    }
    return r.seen;
  }
  const at = (seen: Seen[], stage: Tap, n = 0) => seen.filter((o) => o.stage === stage)[n];

  it('the queue id: at MAIL behind Sendmail, from the second RCPT on behind Postfix', async () => {
    const postfix = await run({});
    const sendmail = await run({ mta: 'sendmail' });
    assert.equal(at(postfix, 'mailFrom').macros.i, undefined);
    assert.equal(at(sendmail, 'mailFrom').macros.i, 'Q1');
    assert.deepStrictEqual([at(postfix, 'rcptTo', 0).queueId, at(postfix, 'rcptTo', 1).queueId], [undefined, 'Q1']);
    assert.deepStrictEqual([at(sendmail, 'rcptTo', 0).queueId, at(sendmail, 'rcptTo', 1).queueId], ['Q1', 'Q1']);
  });

  it('the stock lists and values: CONNECT, MAIL and end of message', async () => {
    const postfix = await run({});
    const sendmail = await run({ mta: 'sendmail' });
    assert.deepStrictEqual(at(postfix, 'connect').macros, { j: 'mx.test.example', '{daemon_name}': 'mx.test.example', '{daemon_addr}': '192.0.2.25', v: 'Postfix 3.9.0', _: 'unknown [192.0.2.1]' });
    assert.deepStrictEqual(at(sendmail, 'connect').macros, { j: 'mx.test.example', _: '[192.0.2.1]', '{daemon_name}': 'MTA', '{if_name}': 'mx.test.example', '{if_addr}': '192.0.2.25' });
    assert.deepStrictEqual(at(postfix, 'mailFrom').macros, { ...at(postfix, 'connect').macros, '{auth_type}': 'PLAIN', '{auth_authen}': 'alice', '{mail_addr}': 'a@example.org' });
    assert.deepStrictEqual(at(sendmail, 'mailFrom').macros, { ...at(sendmail, 'connect').macros, i: 'Q1', '{auth_type}': 'PLAIN', '{auth_authen}': 'alice', '{auth_ssf}': '0', '{mail_addr}': 'a@example.org' });
    // Postfix sends `i` again at end of message; Sendmail its {msg_id}, and keeps `i` from MAIL.
    assert.equal(at(postfix, 'endOfMessage').macros['{msg_id}'], undefined);
    assert.equal(at(sendmail, 'endOfMessage').macros['{msg_id}'], '<agree.1@example.org>');
    assert.equal(at(sendmail, 'endOfMessage').macros.i, 'Q1');
    // Header values arrive the same way behind both.
    assert.deepStrictEqual(at(sendmail, 'endOfMessage').headers, at(postfix, 'endOfMessage').headers);
  });

  it('lists a plugin asks for: both MTAs send them, on top of their stock lists (Sendmail’s end-of-message one thanks to the end-of-headers list the kernel adds)', async () => {
    const asked = { connect: ['{client_addr}'], endOfMessage: ['{rcpt_addr}'] };
    const postfix = await run({}, asked);
    const sendmail = await run({ mta: 'sendmail' }, asked);
    assert.equal(at(postfix, 'connect').macros['{client_addr}'], '192.0.2.1');
    assert.equal(at(sendmail, 'connect').macros['{client_addr}'], '192.0.2.1');
    assert.equal(at(postfix, 'endOfMessage').macros['{rcpt_addr}'], 'c@example.net');
    assert.equal(at(sendmail, 'endOfMessage').macros['{rcpt_addr}'], 'c@example.net');
    assert.equal(at(sendmail, 'endOfMessage').macros['{msg_id}'], '<agree.1@example.org>', 'the stock EOM list is kept');
    const withEoh = await run({ mta: 'sendmail' }, { endOfHeaders: ['{mail_addr}'], endOfMessage: ['{client_addr}'] });
    assert.equal(at(withEoh, 'endOfMessage').macros['{client_addr}'], '192.0.2.1');
    assert.equal(at(withEoh, 'endOfMessage').macros['{msg_id}'], '<agree.1@example.org>');
  });

  it('macroLists: the MTA’s own configured lists (confMILTER_MACROS_*, milter_*_macros)', async () => {
    const sendmail = await run({ mta: 'sendmail', macroLists: { connect: SENDMAIL_MILTER_MACROS.CONNECT } });
    assert.equal(at(sendmail, 'connect').macros['{client_addr}'], '192.0.2.1');
    assert.equal(at(sendmail, 'connect').macros['{client_name}'], '[192.0.2.1]', 'Sendmail names an unresolved client by its address');
    const postfix = await run({ macroLists: { connect: ['j', '{client_addr}'] } });
    assert.deepStrictEqual(at(postfix, 'connect').macros, { j: 'mx.test.example', '{client_addr}': '192.0.2.1' });
  });
});
