// The harness and the daemon agree: the same plugins and policies, the same message, once through
// createTestKernel and once through the kernel served on a real socket (createMilterServer, as
// `themis start` serves it) with the engine's MilterClient playing Postfix. Per recipient, the final
// decision, the reply codes and every modification must be the same — including what the kernel does
// with a plugin's mistake (pluginMistakes: 'allow' is the daemon's behaviour).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import headers from 'themis-plugin-headers';
import allowlist from 'themis-plugin-recipient-allowlist';
import { Kernel, definePlugin, type PluginEntry, type PolicyInput } from 'themis-milter';
import { MilterClient, createMilterServer, type Transaction } from 'themis-milter/milter';
import { createTestKernel } from 'themis-milter/testing';
import greylist from '../fixtures/greylist/index.ts';
import verdict from '../fixtures/plugins/verdict.ts';

interface Scenario {
  name: string;
  plugins: PluginEntry[];
  policies: PolicyInput[];
  rcpt: string[];
  headers: [string, string][];
}

const badReply = definePlugin({ name: 'bad-reply', version: '1.0.0', kernel: '^1', setup: () => ({ rcptTo: () => ({ action: 'tempfail', reply: { code: 550, text: 'wrong class' } }) }) });

const SCENARIOS: Scenario[] = [
  {
    name: 'header rules: a header added, a verdict-free message accepted',
    plugins: [{ plugin: headers }],
    policies: [{ name: 'scan', headers: [{ name: 'flag', if: { header: 'X-Spam-Flag', equals: 'YES' }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }] }] }],
    rcpt: ['b@example.net'],
    headers: [['Subject', 'hello'], ['X-Spam-Flag', 'YES']],
  },
  {
    name: 'an allowlist: one recipient refused at RCPT, the other kept',
    plugins: [{ plugin: allowlist }],
    policies: [{ name: 'only-org', allowlist: { recipients: ['@example.org'] } }],
    rcpt: ['c@example.org', 'b@example.net'],
    headers: [['Subject', 'hi']],
  },
  {
    name: 'greylisting: a new triplet told to come back with 451 4.7.1',
    plugins: [{ plugin: greylist }],
    policies: [{ name: 'in', greylist: { delay: 300_000 } }],
    rcpt: ['b@example.net'],
    headers: [['Subject', 'hi']],
  },
  {
    name: 'a reject at end of message with a multi-line reply',
    plugins: [{ plugin: verdict }],
    policies: [{ name: 'no', verdict: { action: 'reject', reason: 'r', reply: { code: 554, enhanced: '5.7.1', text: ['first line', 'second line'] } } }],
    rcpt: ['b@example.net'],
    headers: [['Subject', 'hi']],
  },
  {
    name: "a plugin's mistake (550 with a tempfail): the plain tempfail, both ways",
    plugins: [{ plugin: badReply }],
    policies: [],
    rcpt: ['b@example.net'],
    headers: [['Subject', 'hi']],
  },
];

const CLIENT = '198.51.100.7';
const FROM = 'a@example.org';
const BODY = 'Hello\r\nthere\r\n';

/** What both sides must agree on. */
function outcome(recipients: { action: string; code?: number }[], stage: string, action: string, code: number | undefined, modifications: unknown[]) {
  return { recipients, final: { stage, action, code }, modifications };
}

async function throughHarness(s: Scenario) {
  const t = await createTestKernel({ plugins: s.plugins, policies: s.policies as never, pluginMistakes: 'allow' });
  try {
    const r = await t.message({ client: { address: CLIENT }, from: FROM, rcpt: s.rcpt, headers: s.headers, body: BODY });
    return outcome(
      r.recipients.map((x) => ({ action: x.action, ...(x.reply && { code: x.reply.code }) })),
      r.decision.stage,
      r.decision.action,
      r.decision.reply?.code,
      r.modifications,
    );
  } finally {
    await t.close();
  }
}

async function throughDaemon(s: Scenario) {
  const kernel = await Kernel.create({ plugins: s.plugins, policies: s.policies });
  await kernel.ready();
  const server = createMilterServer(kernel.application);
  const spec = await server.listen('inet:0@127.0.0.1');
  const client = await MilterClient.connect(spec, { timeout: 10_000 });
  try {
    const tx: Transaction = {
      connect: { hostname: `[${CLIENT}]`, family: '4', port: 40000, address: CLIENT, macros: { j: 'mx.test.example', '{client_addr}': CLIENT } },
      helo: 'client.example',
      from: { address: `<${FROM}>`, macros: { '{mail_addr}': FROM } },
      to: s.rcpt.map((a) => ({ address: `<${a}>`, macros: { '{rcpt_addr}': a } })),
      dataMacros: { i: 'AGREE0001' },
      headers: s.headers,
      body: BODY,
      eohMacros: { i: 'AGREE0001' },
      eomMacros: { i: 'AGREE0001' },
    };
    const r = await client.sendMessage(tx);
    await client.quit();
    return outcome(
      r.recipients.map((x) => ({ action: x?.action ?? 'continue', ...(x?.smtpCode !== undefined && { code: x.smtpCode }) })),
      r.stage,
      r.reply.action,
      r.reply.smtpCode,
      r.modifications,
    );
  } finally {
    await server.close({ drainTimeout: 1_000 });
    await kernel.shutdown();
  }
}

describe('the harness and the daemon agree', () => {
  for (const s of SCENARIOS) {
    it(s.name, async () => {
      const harness = await throughHarness(s);
      const daemon = await throughDaemon(s);
      assert.deepStrictEqual(harness, daemon);
    });
  }
});
