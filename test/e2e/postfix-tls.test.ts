// STARTTLS through a real Postfix: the milter sees HELO twice (before and after TLS), keeps the
// connection's data across Postfix's reset in between, and the TLS macros arrive with the second
// HELO. Postfix's per-session reset must not disturb the next message.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Decisions, Action, createMilterServer } from '../../src/milter/index.ts';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../helpers/postfix.ts';

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
// swaks speaks TLS through Perl's Net::SSLeay (Debian package libnet-ssleay-perl).
const ssleay = spawnSync('perl', ['-MNet::SSLeay', '-e', '1'], { encoding: 'utf8' });
const skip = !postfixAvailable()
  ? `postfix not available: ${postfixUnavailableReason()}`
  : openssl.error
    ? `openssl not installed: ${openssl.error.message}`
    : ssleay.status !== 0
      ? 'swaks cannot do TLS: Perl Net::SSLeay missing (Debian package libnet-ssleay-perl)'
      : false;

describe('STARTTLS through a real Postfix', { skip }, () => {
  it('HELO before and after STARTTLS; TLS macros at the second; the message still goes through with its edits', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'themis-tls-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=mx.example.test'], { stdio: 'ignore' });

    const events: string[] = [];
    const milter = createMilterServer({
      negotiation: { actions: Action.ADDHDRS },
      connect: (_s, e) => void events.push(`connect ${e.address}`),
      helo: (s, e) => void events.push(`helo ${e.hostname} tls=${s.macros.get('{tls_version}') ?? 'none'} client=${s.client?.address}`),
      mailFrom: (s, e) => void events.push(`mail ${e.address} tls=${s.macros.get('{tls_version}') ?? 'none'}`),
      endOfMessage: (s, m) => {
        m.addHeader('X-Seen-Helo', s.helo ?? '');
        return Decisions.accept;
      },
      abort: () => void events.push('abort'),
    });
    await milter.listen('inet:0@127.0.0.1');
    t.after(() => milter.close({ drainTimeout: 500 }));
    const pf = await startPostfix({
      milter: `inet:127.0.0.1:${milter.port}`,
      milterDefaultAction: 'tempfail',
      extraMainCf: { smtpd_tls_security_level: 'may', smtpd_tls_cert_file: join(dir, 'cert.pem'), smtpd_tls_key_file: join(dir, 'key.pem'), smtpd_tls_session_cache_database: '' },
    });
    t.after(() => pf.stop());

    const r = await pf.swaks(['--from', 'a@example.org', '--to', 'rcpt@example.test', '--helo', 'client.example.org', '--tls']);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /TLS started/);
    const [m] = await pf.waitForDelivered(1);
    assert.ok(m.headers.some(([n, v]) => n === 'X-Seen-Helo' && v === 'client.example.org'));
    const helos = events.filter((e) => e.startsWith('helo'));
    assert.equal(helos.length, 2, JSON.stringify(events));
    assert.match(helos[0], /tls=none client=127\.0\.0\.1/);
    assert.match(helos[1], /tls=TLSv1\.[23] client=127\.0\.0\.1/);
    assert.match(events.find((e) => e.startsWith('mail'))!, /tls=TLSv1\.[23]/, 'HELO-stage TLS macros stay visible at MAIL');
    assert.doesNotMatch(await pf.log(), /milter.*(unexpected|malformed|protocol error)/i);
  });
});
