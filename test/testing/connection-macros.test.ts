// Per-connection macro values in the harness (TestClient.macros): TLS and the SASL mechanism differ from
// one SMTP session to the next, and reach the plugins at the stages whose list names them, as behind
// Postfix and Sendmail; the kernel-wide values stay for the other connections.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { definePlugin } from '../../src/index.ts';
import { createTestKernel } from '../../src/testing/index.ts';

function recorder() {
  const seen: Record<string, string | undefined>[] = [];
  const plugin = definePlugin({
    name: 'recorder',
    version: '1.0.0',
    kernel: '^1',
    macros: { mailFrom: ['{auth_type}', '{auth_authen}'] },
    setup: () => ({
      mailFrom(ctx) {
        const m = ctx.session.macros;
        seen.push({ tls: m.get('{tls_version}'), cipher: m.get('{cipher}'), subject: m.get('{cert_subject}'), authType: m.get('{auth_type}'), login: m.get('{auth_authen}'), j: m.get('j') });
      },
    }),
  });
  return { plugin, seen };
}

for (const mta of ['postfix', 'sendmail'] as const) {
  describe(`per-connection macros (${mta})`, () => {
    it('TLS and the SASL mechanism of one connection reach the plugins; the next connection has the kernel-wide values', async () => {
      const { plugin, seen } = recorder();
      const t = await createTestKernel({ plugins: [plugin], mta, macros: { j: 'mx.test.example' } });
      const tls = { '{tls_version}': 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', '{cert_subject}': 'CN=laptop.example.com', '{auth_type}': 'LOGIN' };
      await t.message({ client: { address: '203.0.113.7', macros: tls }, auth: 'alice', from: 'alice@example.com', rcpt: ['bob@example.net'] });
      await t.message({ client: { address: '203.0.113.8' }, auth: 'alice', from: 'alice@example.com', rcpt: ['bob@example.net'] });
      // Postfix sends the TLS macros with HELO and they stay in scope at MAIL; Sendmail's stock lists
      // carry them at HELO as well.
      assert.deepEqual(seen[0], { tls: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', subject: 'CN=laptop.example.com', authType: 'LOGIN', login: 'alice', j: 'mx.test.example' });
      assert.deepEqual(seen[1], { tls: undefined, cipher: undefined, subject: undefined, authType: 'PLAIN', login: 'alice', j: 'mx.test.example' });
      await t.close();
    });
  });
}
