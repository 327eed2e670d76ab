// The example greylisting plugin (examples/greylist) through a real Postfix: `themis start` loads it
// by package name from a configuration file, with the memory store, and Postfix's clients see what
// greylisting means — a 451 for a new triplet, a retry that passes once the delay is over, SASL
// clients never greylisted. Time is driven, not slept: the daemon runs with the clock-shift preload
// (test/fixtures/clock-shift.ts), and the test moves its wall clock by writing the offset file.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type DeliveredMessage, type PostfixInstance } from '../helpers/postfix.ts';
import { createSasl, saslUnavailableReason, type SaslSetup } from '../helpers/sasl.ts';
import { startThemis, type ThemisProcess } from '../helpers/themis.ts';

const CLOCK_SHIFT = pathToFileURL(fileURLToPath(new URL('../fixtures/clock-shift.ts', import.meta.url))).href;
const DELAY_SECONDS = 300;
const SENDER = 'sender@example.org';
const RCPT = 'rcpt@example.test';
const LOGIN = { login: 'alice@example.test', password: 'correct horse' };

const skip = postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}`;
if (skip) console.log(`# greylist-postfix: skipped: ${skip}`);
const noSasl = skip ? undefined : saslUnavailableReason();
if (noSasl) console.log(`# greylist-postfix: the SASL case is skipped: ${noSasl}`);

const header = (m: DeliveredMessage, name: string): string[] => m.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

describe('greylisting (themis-plugin-greylist) through a real Postfix, on a clock the test moves', { skip }, () => {
  let dir: string;
  let offsetFile: string;
  let themis: ThemisProcess;
  let pf: PostfixInstance;
  let sasl: SaslSetup | undefined;

  /** Moves the daemon's wall clock to real time + `ms`. */
  const shiftDaemonClock = (ms: number) => writeFileSync(offsetFile, String(ms));

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'themis-greylist-'));
    chmodSync(dir, 0o755);
    offsetFile = join(dir, 'clock-offset');
    shiftDaemonClock(0);
    const config = join(dir, 'themis.config.json');
    writeFileSync(config, JSON.stringify({
      store: { type: 'memory' },
      plugins: ['themis-plugin-greylist'],
      policies: [{ name: 'inbound', greylist: { delay: `${DELAY_SECONDS}s`, retryWindow: '2d', expiry: '36d' } }],
    }));
    const nodeOptions = [process.env.NODE_OPTIONS, `--import=${CLOCK_SHIFT}`].filter(Boolean).join(' ');
    themis = await startThemis(['--config', config], { NODE_OPTIONS: nodeOptions, THEMIS_CLOCK_SHIFT_FILE: offsetFile });
    sasl = noSasl ? undefined : createSasl([LOGIN]);
    pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail', extraMainCf: sasl?.mainCf ?? {} });
    sasl?.installInto(pf.configDir);
  });

  after(async () => {
    await pf?.stop();
    await themis?.stop();
    sasl?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const send = (to: string, subject: string, extra: string[] = []) => pf.swaks(['--from', SENDER, '--to', to, '--helo', 'client.example.org', '--header', `Subject: ${subject}`, ...extra]);

  it('the daemon loaded the plugin by its package name, with the memory store', () => {
    const started = themis.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; plugins?: string[]; store?: string }).find((l) => l.msg === 'themis started');
    assert.deepEqual(started?.plugins, ['greylist']);
    assert.equal(started?.store, 'memory');
  });

  it('first attempt: 451 4.7.1 with the seconds left, nothing delivered', async () => {
    const r = await send(RCPT, 'first attempt');
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, new RegExp(`<\\*\\* 451 4\\.7\\.1 Greylisted, try again in ${DELAY_SECONDS} seconds`));
    assert.equal((await pf.delivered()).length, 0);
  });

  it('an immediate retry: still 451, nothing delivered', async () => {
    const r = await send(RCPT, 'immediate retry');
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, /<\*\* 451 4\.7\.1 Greylisted, try again in (29\d|300) seconds/);
    assert.equal((await pf.delivered()).length, 0);
  });

  it('the daemon’s clock moved past the delay: the retry is accepted and delivered', async () => {
    shiftDaemonClock((DELAY_SECONDS + 1) * 1000);
    const r = await send(RCPT, 'retry after the delay');
    assert.equal(r.code, 0, r.stdout);
    const [m] = await pf.waitForDelivered(1);
    assert.deepEqual(m.envelopeTo, [RCPT]);
    assert.deepEqual(header(m, 'Subject'), ['retry after the delay']);
  });

  it('at the same moment, a second recipient is a new triplet: 451 for it, the known one delivered', async () => {
    const second = 'second@example.test';
    const r = await send(`${RCPT},${second}`, 'two recipients');
    assert.match(r.stdout, new RegExp(`RCPT TO:<${second}>\\s+<\\*\\* 451 4\\.7\\.1 Greylisted, try again in ${DELAY_SECONDS} seconds`));
    const m = (await pf.waitForDelivered(2)).at(-1)!;
    assert.deepEqual(m.envelopeTo, [RCPT]);
    assert.deepEqual(header(m, 'Subject'), ['two recipients']);
  });

  it('an authenticated (SASL) client is never greylisted: a new recipient is delivered at once', { skip: noSasl ? `SASL not available: ${noSasl}` : false }, async () => {
    const r = await pf.swaks(['--from', LOGIN.login, '--to', 'fresh@example.test', '--header', 'Subject: authenticated', '--auth', 'PLAIN', '--auth-user', LOGIN.login, '--auth-password', LOGIN.password]);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /235 2\.7\.0 Authentication successful/);
    const m = (await pf.waitForDelivered(3)).at(-1)!;
    assert.deepEqual(m.envelopeTo, ['fresh@example.test']);
    const anonymous = await pf.swaks(['--from', LOGIN.login, '--to', 'fresh2@example.test']);
    assert.match(anonymous.stdout, /<\*\* 451 4\.7\.1 Greylisted/, 'the same sender without AUTH is greylisted');
  });

  it('the daemon ran on the shifted clock, and logged no address at info', async () => {
    const decisions = themis.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { time: string; msg: string }).filter((l) => l.msg === 'decision');
    assert.equal(decisions.length, noSasl ? 4 : 6, 'one decision line per message');
    const stamp = Date.parse(decisions.at(-1)!.time);
    assert.ok(stamp >= Date.now() + (DELAY_SECONDS - 5) * 1000, `the last decision is stamped ${decisions.at(-1)!.time}, ${DELAY_SECONDS} s ahead of the real clock`);
    for (const address of [SENDER, RCPT, 'second@example.test']) assert.ok(!themis.output().includes(address), `${address} is not in the daemon's log`);
    const log = await pf.log();
    assert.doesNotMatch(log, /milter.*(unexpected|malformed|protocol error|configuration error)/i);
  });
});
