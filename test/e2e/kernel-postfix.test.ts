// The kernel behind a real Postfix: the example third-party plugin, loaded by package name into
// `themis start`, changes what Postfix delivers; and the MTA never sends what no plugin taps.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { postfixAvailable, postfixUnavailableReason, startPostfix } from '../helpers/postfix.ts';
import { startTap } from '../helpers/tap.ts';
import { startThemis } from '../helpers/themis.ts';

const config = fileURLToPath(new URL('../fixtures/allowlist.config.ts', import.meta.url));

describe('kernel and plugins behind a real Postfix', { skip: postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}` }, () => {
  it('the example plugin refuses one recipient; the other gets the mail; no body or header packet is ever sent', async (t) => {
    const themis = await startThemis(['--config', config]);
    t.after(() => themis.stop());
    const tap = await startTap(themis.port);
    t.after(() => tap.close());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${tap.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    const r = await pf.swaks(['--from', 'a@example.org', '--to', 'nope@example.test,ok@example.test', '--header', 'Subject: allowlist', '--body', 'a body that nobody asked to see']);
    assert.match(r.stdout, /<\*\* 550 5\.7\.1 Recipient not allowed here/);
    const [m] = await pf.waitForDelivered(1);
    assert.deepEqual(m.envelopeTo, ['ok@example.test']);
    assert.match(await pf.log(), /milter-reject: RCPT from [^:]+: 550 5\.7\.1 Recipient not allowed here/);

    const counts = tap.counts();
    assert.equal(counts.SMFIC_RCPT, 2, 'RCPT is tapped: both recipients were sent');
    assert.equal(counts.SMFIC_BODYEOB, 1, 'end of message always comes');
    assert.equal(counts.SMFIC_BODY ?? 0, 0, 'no plugin taps body: Postfix sent no body packet');
    assert.equal(counts.SMFIC_HEADER ?? 0, 0, 'no plugin taps header: Postfix sent no header packet');
    assert.match(themis.output(), /"msg":"decision"/, 'one decision line per message');
  });
});
