// SMTP AUTH through a real Postfix: the login a client authenticated with reaches the milter as
// {auth_authen} at MAIL (what per-user rate limits and outbound policies key on), and an
// unauthenticated client has none.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createMilterServer, type MilterSession } from '../../src/milter/index.ts';
import { postfixAvailable, postfixUnavailableReason } from '../helpers/postfix.ts';
import { saslUnavailableReason, startSaslPostfix } from '../helpers/sasl.ts';

const skip = !postfixAvailable() ? `postfix not available: ${postfixUnavailableReason()}` : saslUnavailableReason() ? `SASL not available: ${saslUnavailableReason()}` : false;

describe('SMTP AUTH through a real Postfix', { skip }, () => {
  it('{auth_authen} and {auth_type} arrive at MAIL for an authenticated client, not for an anonymous one', async (t) => {
    const seen: { auth: string | undefined; type: string | undefined; from: string }[] = [];
    const milter = createMilterServer({
      mailFrom: (s: MilterSession, e) => void seen.push({ auth: s.macros.get('{auth_authen}'), type: s.macros.get('{auth_type}'), from: e.address }),
    });
    await milter.listen('inet:0@127.0.0.1');
    t.after(() => milter.close({ drainTimeout: 500 }));
    const pf = await startSaslPostfix(t, `inet:127.0.0.1:${milter.port}`, [{ login: 'alice@example.test', password: 'correct horse' }]);

    const authed = await pf.swaks(['--from', 'alice@example.test', '--to', 'rcpt@example.test', '--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', 'correct horse']);
    assert.equal(authed.code, 0, authed.stdout);
    assert.match(authed.stdout, /235 2\.7\.0 Authentication successful/);
    const anonymous = await pf.swaks(['--from', 'someone@example.org', '--to', 'rcpt@example.test']);
    assert.equal(anonymous.code, 0, anonymous.stdout);
    await pf.waitForDelivered(2);
    assert.deepEqual(seen, [
      { auth: 'alice@example.test', type: 'PLAIN', from: 'alice@example.test' },
      { auth: undefined, type: undefined, from: 'someone@example.org' },
    ]);
  });
});
