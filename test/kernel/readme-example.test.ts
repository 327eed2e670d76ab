// The plugin of docs/reference/plugin-api.md ("Writing a plugin", the block `ts file=src/index.ts`), read from
// the page and run as written with the harness usage the page shows: documentation that compiles and passes.
// (test/docs/samples.test.ts type-checks the page's blocks; this runs the plugin.)
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, it } from 'node:test';
import type { PluginDefinition } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import { ROOT_PATH, codeBlock } from '../docs/blocks.ts';

// Inside the repository, so that the sample's 'themis-milter' and 'zod' resolve as the sources' do.
mkdirSync(join(ROOT_PATH, '.tmp'), { recursive: true });
const dir = mkdtempSync(join(ROOT_PATH, '.tmp', 'plugin-api-example-'));
after(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'index.ts'), codeBlock('docs/reference/plugin-api.md', 'file', 'src/index.ts').text);
const plugin = ((await import(pathToFileURL(join(dir, 'index.ts')).href)) as { default: PluginDefinition<number, { header: string }> }).default;

it('the plugin API page\'s plugin behaves as the page says', async () => {
  const t = await createTestKernel({ plugins: [plugin], policies: [{ name: 'p', maxRecipients: 2 }] });
  const r = await t.message({ client: { address: '192.0.2.1' }, helo: 'client.example', from: 'a@example.org', rcpt: ['b@example.net', 'c@example.net', 'd@example.net'], auth: 'alice', headers: { Subject: 'hi' }, body: 'hello' });
  assert.deepEqual(r.recipients.map((x) => x.action), ['continue', 'continue', 'tempfail']);
  assert.deepEqual(r.recipients[2].reply, { code: 452, enhanced: '4.5.3', text: 'Too many recipients' });
  assert.deepEqual(r.decision, { stage: 'endOfMessage', action: 'accept' });
  assert.deepEqual(r.modifications, [{ type: 'addHeader', name: 'X-Recipients', value: '3' }]);
  assert.equal(r.trace!.entries.filter((e) => e.plugin === 'max-recipients').length, 4);
  await t.close();
});
