// One Authentication-Results header per message (PluginDefinition.authenticates,
// ctx.message.addAuthenticationResult): the plugins report results, the kernel writes them together at
// the top of the accepted message with one authserv-id, and removes the headers that arrive claiming
// that authserv-id — through the harness, which runs the kernel's milter application as the daemon does.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { definePlugin, type PluginDefinition } from '../../src/index.ts';
import { createTestKernel, type TestResult } from '../../src/testing/index.ts';

/** A plugin that reports `results` at end of message (with an authserv-id when given). */
function reporter(name: string, results: string[], extra: Partial<PluginDefinition> = {}, authservId?: string) {
  return definePlugin({
    name,
    version: '1.0.0',
    kernel: '^1',
    modifies: ['headers'],
    authenticates: true,
    setup: () => ({
      endOfMessage(ctx) {
        for (const r of results) ctx.message!.addAuthenticationResult(r, { authservId });
        return undefined;
      },
    }),
    ...extra,
  } as PluginDefinition);
}

const inserted = (r: TestResult) => r.modifications.filter((m) => m.type === 'insertHeader' && m.name === 'Authentication-Results').map((m) => m as { index: number; value: string });
const deleted = (r: TestResult) => r.modifications.filter((m) => m.type === 'changeHeader' && m.name === 'Authentication-Results' && m.value === '').map((m) => (m as { index: number }).index);
const message = { client: { address: '198.51.100.7' }, from: 'alice@example.com', rcpt: ['bob@example.net'], body: 'hello\r\n' };

describe('Authentication-Results: one header per message', () => {
  it("every plugin's results in one header at the top, in the order they were reported, with the reporting plugin's authserv-id", async () => {
    const t = await createTestKernel({ plugins: [{ plugin: reporter('first', ['spf=pass smtp.mailfrom=example.com'], { priority: 50 }, 'mx.example.net') }, { plugin: reporter('second', ['dkim=pass header.d=example.com header.s=s1', 'dkim=fail (body hash) header.d=other.example']) }] });
    const r = await t.message({ ...message, headers: [['From', 'alice@example.com'], ['Subject', 'hi']] });
    assert.deepEqual(inserted(r), [{ type: 'insertHeader', index: 0, name: 'Authentication-Results', value: 'mx.example.net;\n\tspf=pass smtp.mailfrom=example.com;\n\tdkim=pass header.d=example.com header.s=s1;\n\tdkim=fail (body hash) header.d=other.example' }]);
    await t.close();
  });

  it("one result on one line; without an authserv-id from a plugin, the MTA's {j}", async () => {
    const t = await createTestKernel({ plugins: [{ plugin: reporter('only', ['dmarc=none header.from=example.com']) }], macros: { j: 'mx.j.example' } });
    const r = await t.message({ ...message, headers: [['From', 'alice@example.com']] });
    assert.deepEqual(inserted(r).map((h) => h.value), ['mx.j.example; dmarc=none header.from=example.com']);
    await t.close();
  });

  it('headers that arrive claiming our authserv-id are removed, last first; the other hops’ stay', async () => {
    const t = await createTestKernel({ plugins: [{ plugin: reporter('only', ['spf=pass smtp.mailfrom=example.com'], {}, 'mx.example.net') }] });
    const r = await t.message({
      ...message,
      headers: [
        ['Authentication-Results', 'MX.example.net; spf=pass smtp.mailfrom=forged.example'],
        ['Authentication-Results', 'relay.example.org; dkim=pass header.d=example.org'],
        ['Received', 'from relay.example.org'],
        ['Authentication-Results', 'mx.example.net 1; dkim=pass header.d=forged.example'],
        ['Authentication-Results', '(comment) mx.example.net;\n\tdmarc=pass header.from=forged.example'],
      ],
    });
    // Occurrences 1, 3 and 4 of the name claim mx.example.net (case, a version and a comment aside).
    assert.deepEqual(deleted(r), [4, 3, 1]);
    assert.equal(inserted(r).length, 1);
    // Deletions go before the new header, so that their indexes count the headers as received.
    const order = r.modifications.filter((m) => 'name' in m && m.name === 'Authentication-Results').map((m) => m.type);
    assert.deepEqual(order, ['changeHeader', 'changeHeader', 'changeHeader', 'insertHeader']);
    await t.close();
  });

  it('removes forged headers even when no result was reported for the message', async () => {
    const t = await createTestKernel({ plugins: [{ plugin: reporter('silent', []) }], macros: { j: 'mx.j.example' } });
    const r = await t.message({ ...message, headers: [['Authentication-Results', 'mx.j.example; spf=pass smtp.mailfrom=forged.example']] });
    assert.deepEqual(deleted(r), [1]);
    assert.deepEqual(inserted(r), []);
    await t.close();
  });

  it('a refused message gets no header; a plugin that did not declare authenticates, or a malformed result, is a plugin mistake', async () => {
    const refuse = definePlugin({ name: 'refuse', version: '1.0.0', kernel: '^1', priority: 100, setup: () => ({ endOfMessage: () => ({ action: 'reject', reason: 'no' }) }) });
    const t = await createTestKernel({ plugins: [{ plugin: reporter('r', ['spf=fail smtp.mailfrom=example.com']) }, { plugin: refuse }] });
    const refused = await t.message({ ...message, headers: [['From', 'alice@example.com']] });
    assert.equal(refused.decision.action, 'reject');
    assert.deepEqual(inserted(refused), []);
    await t.close();

    const undeclared = definePlugin({ name: 'undeclared', version: '1.0.0', kernel: '^1', modifies: ['headers'], onError: 'continue', setup: () => ({ endOfMessage: (ctx) => void ctx.message!.addAuthenticationResult('spf=pass') }) });
    const u = await createTestKernel({ plugins: [{ plugin: undeclared }], pluginMistakes: 'allow' });
    const ru = await u.message({ ...message, headers: [['From', 'alice@example.com']] });
    assert.deepEqual(inserted(ru), []);
    assert.match(JSON.stringify(ru.trace), /"error":"THEMIS_ERR_MODIFICATION"/);
    await u.close();

    for (const bad of ['spf=pass; dkim=pass', 'not a result', '']) {
      const k = await createTestKernel({ plugins: [{ plugin: reporter('bad', [bad], { onError: 'continue' }) }], pluginMistakes: 'allow' });
      const rb = await k.message({ ...message, headers: [['From', 'alice@example.com']] });
      assert.deepEqual(inserted(rb), [], bad);
      assert.match(JSON.stringify(rb.trace), /"error":"THEMIS_ERR_MODIFICATION"/, bad);
      await k.close();
    }
  });
});
