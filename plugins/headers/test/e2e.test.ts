// Header rules behind a real Postfix, with the configuration the README shows (read from the README
// itself): a message whose X-Spam-Flag: YES was written by "another system" is delivered with
// X-Themis-Policy: inbound and its Subject changed to "[SPAM] …", and nothing else changed; the
// original Themis's --actionheaders example (X-CMAE-Score → X-Spam-Flag: YES) works as a rule.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { postfixAvailable, postfixUnavailableReason, startPostfix, type DeliveredMessage } from '../../../test/helpers/postfix.ts';
import { startThemis } from '../../../test/helpers/themis.ts';

const skip = postfixAvailable() ? false : `postfix not available: ${postfixUnavailableReason()}`;

/** The YAML block that follows the README's e2e marker. */
function readmeConfig(): string {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const at = readme.indexOf('<!-- e2e: the configuration of test/e2e.test.ts -->');
  assert.ok(at >= 0, 'the README has the e2e marker');
  const block = /```yaml\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(block, 'a yaml block follows the marker');
  return block[1];
}

/** Headers of a delivered message that the MTA itself writes per delivery (they differ between any two messages). */
const PER_DELIVERY = new Set(['received', 'return-path', 'delivered-to', 'date', 'message-id', 'x-original-to']);
const comparable = (m: DeliveredMessage) => m.headers.filter(([n]) => !PER_DELIVERY.has(n.toLowerCase()));

describe('headers through a real Postfix', { skip }, () => {
  it('X-Spam-Flag: YES → X-Themis-Policy: inbound and Subject "[SPAM] …", exactly; the original --actionheaders example as a rule', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'themis-headers-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.yaml');
    writeFileSync(file, readmeConfig());
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startPostfix({ milter: `inet:127.0.0.1:${themis.port}`, milterDefaultAction: 'tempfail' });
    t.after(() => pf.stop());

    const send = async (subject: string, extra: string[]) => {
      const r = await pf.swaks(['--from', 'sender@example.org', '--to', 'rcpt@example.test', '--header', `Subject: ${subject}`, ...extra.flatMap((h) => ['--add-header', h])]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
    };
    await send('clean', ['X-Scanned: yes']);
    await send('flagged', ['X-Scanned: yes', 'X-Spam-Flag: YES']);
    await send('scored', ['X-Scanned: yes', 'X-CMAE-Score: 97']);
    await send('low score', ['X-Scanned: yes', 'X-CMAE-Score: 42']);

    const delivered = await pf.waitForDelivered(4);
    const bySubject = new Map(delivered.map((m) => [m.headers.find(([n]) => n === 'Subject')![1], m]));
    const clean = comparable(bySubject.get('clean')!);
    assert.deepEqual(clean.map(([n]) => n).filter((n) => n.startsWith('X-Themis') || n === 'X-Spam-Flag'), [], 'an unflagged message is not touched');

    // The flagged message: exactly the clean message's headers, with its own X-Spam-Flag, the new
    // X-Themis-Policy at the end, and the Subject changed in place.
    const flagged = comparable(bySubject.get('[SPAM] flagged')!);
    const expected = clean.map(([n, v]): [string, string] => (n === 'Subject' ? [n, '[SPAM] flagged'] : [n, v]));
    const withFlag = [...expected.slice(0, expected.findIndex(([n]) => n === 'X-Scanned') + 1), ['X-Spam-Flag', 'YES'] as [string, string], ...expected.slice(expected.findIndex(([n]) => n === 'X-Scanned') + 1)];
    assert.deepEqual(flagged, [...withFlag, ['X-Themis-Policy', 'inbound']]);

    // The original's example: a CMAE score of 96–100 adds X-Spam-Flag: YES, once; 42 adds nothing.
    const scored = comparable(bySubject.get('scored')!);
    assert.deepEqual(scored.filter(([n]) => n === 'X-Spam-Flag' || n === 'X-Themis-Policy'), [['X-Spam-Flag', 'YES']]);
    assert.deepEqual(comparable(bySubject.get('low score')!).filter(([n]) => n === 'X-Spam-Flag'), []);
  });
});
