// Postfix is never left waiting on a write that Themis will not answer.
//
// Postfix buffers what it writes to a milter and flushes it when it waits for a reply — and at DATA,
// where smtpd flushes before handing the connection to cleanup. A flush whose last packet Themis
// does not answer (a macro packet, a NO or NR event) followed by another write from Postfix is the
// ~40 ms stall of every message behind Postfix over TCP: Nagle holds the second write until the
// first is acknowledged, and with no answer to carry it the ACK is delayed. This test captures what a
// real Postfix writes (a tap between Postfix and Themis records each write and whether an answer
// came before the next one) for every negotiation shape the kernel produces, over TCP and over a
// UNIX socket, through smtpd (several messages per connection, one per connection, STARTTLS) and
// through sendmail(1) (non_smtpd_milters), and asserts that no write went unanswered. It asserts no
// time: the invariant is about which packets Postfix flushes, not how long anything took.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDnsServer, type DnsServer } from '../helpers/dns.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type PostfixInstance } from '../helpers/postfix.ts';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis.ts';
import { SmtpConversation } from '../helpers/smtp.ts';
import { startTap, type MilterTap } from '../helpers/tap.ts';
import { startThemis } from '../helpers/themis.ts';

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
const ssleay = spawnSync('perl', ['-MNet::SSLeay', '-e', '1'], { encoding: 'utf8' });
const skip = !postfixAvailable()
  ? `postfix not available: ${postfixUnavailableReason()}`
  : !redisAvailable()
    ? 'redis-server not available (Debian package redis-server)'
    : openssl.error
      ? `openssl not installed: ${openssl.error.message}`
      : ssleay.status !== 0
        ? 'swaks cannot do TLS: Perl Net::SSLeay missing (Debian package libnet-ssleay-perl)'
        : false;
if (skip) console.log(`# postfix-flush: skipped: ${skip}`);

const SENDER = 'a@example.org';
const RCPT = 'rcpt@example.test';
const RATELIMIT = { windows: '100000/1h', by: 'sender' };
const SPF = { mailFrom: { fail: 'reject', softfail: 'tag' }, headers: { receivedSpf: true, authenticationResults: true } };
const HEADERS = [
  { name: 'spam-flag', if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }, { change: 'Subject', value: '[SPAM] {value}' }] },
  { name: 'virus', if: { header: 'X-Virus', equals: 'infected' }, verdict: { action: 'quarantine', reason: 'virus' } },
];
const PREDICT = { timeframes: [1, 5, 10, 60], factor: 2.5, action: 'tempfail', shadow: true };

/** Every negotiation shape the issue names: each built-in plugin alone, all five, the example, bypass, envelope matches. */
function configs(dns: DnsServer, redis: RedisServer): Record<string, object> {
  const spfPlugin = { plugin: 'themis-plugin-spf', options: { dnsServers: [dns.address] } };
  return {
    'no plugin': { plugins: [], policies: [] },
    ratelimit: { plugins: ['themis-plugin-ratelimit'], policies: [{ name: 'senders', ratelimit: RATELIMIT }] },
    spf: { plugins: [spfPlugin], policies: [{ name: 'inbound', spf: SPF }] },
    headers: { plugins: ['themis-plugin-headers'], policies: [{ name: 'inbound', headers: HEADERS }] },
    monitor: { plugins: ['themis-plugin-monitor'], policies: [] },
    predict: { plugins: ['themis-plugin-ratelimit', 'themis-plugin-predict'], policies: [{ name: 'submission', predict: PREDICT }] },
    'all five (Redis)': {
      store: { type: 'redis', url: redis.url, keyPrefix: 'flush:' },
      plugins: ['themis-plugin-ratelimit', spfPlugin, 'themis-plugin-headers', 'themis-plugin-monitor', 'themis-plugin-predict'],
      policies: [{ name: 'everything', ratelimit: RATELIMIT, spf: SPF, headers: HEADERS, predict: PREDICT }],
    },
    'example plugin': { plugins: ['themis-plugin-recipient-allowlist'], policies: [{ name: 'inbound', allowlist: { recipients: ['@example.test'] } }] },
    'bypass policy': {
      plugins: ['themis-plugin-ratelimit'],
      policies: [
        { name: 'trusted', priority: 1, type: 'bypass', match: { source: '@example.org' } },
        { name: 'rest', priority: 2, ratelimit: RATELIMIT },
      ],
    },
    'sender and recipient match': {
      plugins: ['themis-plugin-ratelimit'],
      policies: [
        { name: 'from-org', match: { source: '@example.org' }, ratelimit: RATELIMIT },
        { name: 'to-test', match: { destination: '@example.test' }, ratelimit: RATELIMIT },
      ],
    },
  };
}

/** One instance per transport between Postfix and the tap: TCP, and a UNIX socket. */
interface Route {
  name: string;
  tap: MilterTap;
  postfix: PostfixInstance;
}

describe('Postfix never waits on a write Themis does not answer', { skip }, () => {
  let dir: string;
  let dns: DnsServer;
  let redis: RedisServer;
  const routes: Route[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'themis-flush-'));
    // Postfix's smtpd runs unprivileged and must reach the UNIX tap socket inside this directory.
    chmodSync(dir, 0o755);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=mx.example.test'], { stdio: 'ignore' });
    dns = await startDnsServer({ 'example.org': { TXT: ['v=spf1 ip4:127.0.0.0/8 -all'] } });
    redis = await startRedis();
    const tls = { smtpd_tls_security_level: 'may', smtpd_tls_cert_file: join(dir, 'cert.pem'), smtpd_tls_key_file: join(dir, 'key.pem'), smtpd_tls_session_cache_database: '' };
    for (const [name, options] of [['inet', {}], ['unix', { unixPath: join(dir, 'tap.sock') }]] as const) {
      const tap = await startTap(1, options);
      const postfix = await startPostfix({ milter: tap.postfixSpec, milterDefaultAction: 'tempfail', extraMainCf: tls });
      routes.push({ name, tap, postfix });
    }
  });

  after(async () => {
    for (const r of routes) {
      await r.postfix.stop();
      await r.tap.close();
    }
    await redis?.stop();
    await dns?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('for every negotiation shape, over TCP and UNIX sockets, through smtpd (reused and new connections, STARTTLS) and sendmail(1)', async (t) => {
    const delivered = new Map<Route, number>();
    for (const [name, config] of Object.entries(configs(dns, redis))) {
      const file = join(dir, `${name.replace(/\W+/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(config));
      const themis = await startThemis(['--config', file]);
      try {
        for (const route of routes) {
          route.tap.retarget(themis.port);
          const before = route.tap.writes();
          const where = `${name}, ${route.name}`;

          // Several messages on one SMTP connection, with an RSET between two of them.
          const { smtp } = await SmtpConversation.open(route.postfix.smtpPort);
          assert.equal((await smtp.command('EHLO client.example.org')).code, 250);
          for (let i = 0; i < 3; i++) {
            if (i === 2) assert.equal((await smtp.command('RSET')).code, 250);
            const replies = await smtp.send(SENDER, [RCPT], `From: ${SENDER}\nTo: ${RCPT}\nSubject: reused ${i}\n\nbody ${i}\n`);
            assert.equal(replies.at(-1)!.code, 250, `${where}: message ${i} on a reused connection: ${JSON.stringify(replies)}`);
          }
          await smtp.quit();
          // One message per connection, twice; then a STARTTLS session.
          for (const extra of [[], [], ['--tls']]) {
            const r = await route.postfix.swaks(['--from', SENDER, '--to', RCPT, '--helo', 'client.example.org', ...extra]);
            assert.equal(r.code, 0, `${where}: swaks ${extra.join(' ')}: ${r.stdout}`);
          }
          // sendmail(1): pickup → cleanup, the non_smtpd_milters path.
          const sm = await route.postfix.sendmail(SENDER, [RCPT], `From: ${SENDER}\nTo: ${RCPT}\nSubject: local\n\nlocal submission\n`);
          assert.equal(sm.code, 0, `${where}: sendmail: ${sm.stderr}`);

          const n = (delivered.get(route) ?? 0) + 6;
          delivered.set(route, n);
          await route.postfix.waitForDelivered(n, 30_000);
          assert.ok(route.tap.writes() > before + 6, `${where}: the tap saw Postfix's writes (${route.tap.writes() - before})`);
          assert.deepEqual(route.tap.unansweredFlushes(), [], `${where}: Postfix wrote again after a write that Themis did not answer`);
          t.diagnostic(`${where}: ${route.tap.writes() - before} writes from Postfix, every one answered`);
        }
      } finally {
        await themis.stop();
      }
    }
    for (const route of routes) {
      const log = await route.postfix.log();
      assert.doesNotMatch(log, /warning: milter/, `${route.name}: Postfix logged a milter warning`);
      assert.doesNotMatch(log, /milter-reject|status=deferred/, `${route.name}: nothing refused or deferred`);
    }
  });
});
