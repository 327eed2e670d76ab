// The plugin and harness usage shown in the README, run as written: documentation that compiles and passes.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { z } from 'zod';
import { definePlugin } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';

const plugin = definePlugin({
  name: 'max-recipients',
  version: '1.0.0',
  kernel: '^1',
  claims: { field: 'maxRecipients', schema: z.number().int().positive() },
  options: z.object({ header: z.string().default('X-Recipients') }),
  priority: 10,
  onError: 'tempfail',
  modifies: ['headers'],
  setup({ options, metrics }) {
    const refused = metrics.counter({ name: 'refused_total', help: 'Recipients refused' });
    return {
      rcptTo(ctx) {
        const max = Math.min(...ctx.policies.map((p) => p.config));
        if (ctx.message!.recipients.length > max) {
          refused.inc();
          return { action: 'tempfail', reply: { code: 452, enhanced: '4.5.3', text: 'Too many recipients' }, reason: `over ${max}` };
        }
        return undefined;
      },
      endOfMessage(ctx) {
        ctx.message!.addHeader(options.header, String(ctx.message!.recipients.length));
      },
    };
  },
});

it('the README plugin behaves as the README says', async () => {
  const t = await createTestKernel({ plugins: [plugin], policies: [{ name: 'p', maxRecipients: 2 }] });
  const r = await t.message({ client: { address: '192.0.2.1' }, helo: 'client.example', from: 'a@example.org', rcpt: ['b@example.net', 'c@example.net', 'd@example.net'], auth: 'alice', headers: { Subject: 'hi' }, body: 'hello' });
  assert.deepEqual(r.recipients.map((x) => x.action), ['continue', 'continue', 'tempfail']);
  assert.deepEqual(r.recipients[2].reply, { code: 452, enhanced: '4.5.3', text: 'Too many recipients' });
  assert.deepEqual(r.decision, { stage: 'endOfMessage', action: 'accept' });
  assert.deepEqual(r.modifications, [{ type: 'addHeader', name: 'X-Recipients', value: '3' }]);
  assert.equal(r.trace!.entries.filter((e) => e.plugin === 'max-recipients').length, 4);
  await t.close();
});
