// The harness and the daemon agree, stage by stage (issue 20): what plugins see at each stage (macros,
// SASL login, queue id, headers, body), the modifications sent, the negotiation's consequences, hook
// deadlines, onError and malformed verdicts. Each case runs once through createTestKernel and once
// through the kernel served on a real socket, with a MilterClient driven the way a stock Postfix drives
// it: each stage's macros from its milter_*_macros list (the default, or the filter's SETSYMLIST list),
// `i` from the first accepted recipient on, header values as milter8_header sends them.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kernel, definePlugin, type DecisionTrace, type PluginEntry, type PolicyInput } from 'themis-milter';
import { MacroStage, MilterClient, Protocol, createMilterServer, type ClientReply, type MacroMap, type Modification } from 'themis-milter/milter';
import { createTestKernel, problemsOf } from 'themis-milter/testing';
import type { PluginHooks } from '../../src/kernel/plugin.ts';
import { ALL_TAPS, recorder } from '../fixtures/plugins/recorder.ts';

const CLIENT = '198.51.100.7';
const MTA = 'mx.test.example';

interface Run {
  plugins: PluginEntry[];
  policies?: PolicyInput[];
  hookTimeout?: number;
  hostname?: string;
  auth?: string;
  from?: string;
  rcpt?: string[];
  /** Headers as written in the message after the colon (the separating space included). */
  headers?: [string, string][];
  body?: string;
}

interface Outcome {
  recipients: { action: string; code?: number }[];
  final: { stage: string; action: string; code?: number };
  modifications: Modification[];
  trace: { outcome: string; stage?: string; winner?: string; entries: string[] } | undefined;
}

const QUEUE_ID = 'AGREE0001';
const defaults = (r: Run) => ({ from: r.from ?? 'a@example.org', rcpt: r.rcpt ?? ['b@example.net'], headers: r.headers ?? [['Subject', ' hi']], body: r.body ?? 'Hello\r\nthere\r\n' });

function summary(t: DecisionTrace | undefined): Outcome['trace'] {
  if (!t) return undefined;
  const w = t.winner;
  return { outcome: t.outcome, stage: t.stage, winner: w && `${w.plugin}:${w.action}`, entries: t.entries.map((e) => `${e.stage} ${e.plugin} ${e.action}${e.reason ? ` (${e.reason})` : ''}${e.error ? ` ${e.error}` : ''}`) };
}

async function viaHarness(r: Run, pluginMistakes: 'allow' | 'throw' = 'allow'): Promise<Outcome> {
  const m = defaults(r);
  const t = await createTestKernel({ plugins: r.plugins, policies: (r.policies ?? []) as never, hookTimeout: r.hookTimeout, pluginMistakes });
  try {
    const x = await t.message({ client: { address: CLIENT, hostname: r.hostname }, from: m.from, rcpt: m.rcpt, headers: m.headers, body: m.body, auth: r.auth, queueId: QUEUE_ID });
    return {
      recipients: x.recipients.map((y) => ({ action: y.action, ...(y.reply && { code: y.reply.code }) })),
      final: { stage: x.decision.stage, action: x.decision.action, ...(x.decision.reply && { code: x.decision.reply.code }) },
      modifications: x.modifications,
      trace: summary(t.traces.at(-1)),
    };
  } finally {
    await t.close();
  }
}

// ---- The daemon, behind a model of a stock Postfix ------------------------------------------------

/** postconf -d milter_*_macros, by SMFIM_* list. */
const POSTFIX_LISTS: Record<number, string> = {
  [MacroStage.CONNECT]: 'j {daemon_name} {daemon_addr} v _',
  [MacroStage.HELO]: '{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}',
  [MacroStage.ENVFROM]: 'i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}',
  [MacroStage.ENVRCPT]: 'i {rcpt_addr} {rcpt_host} {rcpt_mailer}',
  [MacroStage.DATA]: 'i',
  [MacroStage.EOH]: 'i',
  [MacroStage.EOM]: 'i',
};
/** Postfix looks up macros from its routing tables that the harness has no model of (see the macros case). */
const ROUTING = ['{mail_host}', '{mail_mailer}', '{rcpt_host}', '{rcpt_mailer}'];

/** Postfix's header value on the wire: LF-folded, one space after the colon eaten (no HDR_LEADSPC). */
const onTheWire = (v: string) => v.replace(/\r\n/g, '\n').replace(/^ /, '');

interface DaemonOutcome extends Outcome {
  /** Codes the daemon logged (warn and error). */
  logged: string[];
}

async function viaDaemon(r: Run): Promise<DaemonOutcome> {
  const m = defaults(r);
  const logged: string[] = [];
  const traces: DecisionTrace[] = [];
  const logger = { debug() {}, info() {}, warn: (f: { code?: string }) => void (f.code && logged.push(f.code)), error: (f: { code?: string }) => void (f.code && logged.push(f.code)), child: () => logger };
  const kernel = await Kernel.create({ plugins: r.plugins, policies: r.policies ?? [], hookTimeout: r.hookTimeout, logger, onDecision: (t) => traces.push(t) });
  await kernel.ready();
  const server = createMilterServer(kernel.application);
  const client = await MilterClient.connect(await server.listen('inet:0@127.0.0.1'), { timeout: 10_000 });
  const name = r.hostname ?? 'unknown';
  // What this Postfix knows, by macro name; `i` and the envelope are added as the transaction goes.
  const known: Record<string, string> = { j: MTA, '{daemon_name}': MTA, '{daemon_addr}': '192.0.2.25', v: 'Postfix 3.9.0', _: `${name} [${CLIENT}]`, '{client_addr}': CLIENT, '{client_name}': name, '{client_ptr}': name, '{client_port}': '40000' };
  const macros = (list: number): MacroMap => {
    const names = (client.negotiated.macros?.get(list) ?? POSTFIX_LISTS[list]).split(/[\s,]+/);
    return Object.fromEntries(names.filter((n) => known[n] !== undefined).map((n) => [n, known[n]]));
  };
  const out: Outcome = { recipients: [], final: { stage: 'endOfMessage', action: 'continue' }, modifications: [], trace: undefined };
  const decided = (stage: string, reply: ClientReply | undefined) => {
    if (!reply || reply.action === 'continue') return false;
    out.final = { stage, action: reply.action, ...(reply.smtpCode !== undefined && { code: reply.smtpCode }) };
    return true;
  };
  try {
    await (async () => {
      if (decided('connect', await client.connect(r.hostname ?? `[${CLIENT}]`, '4', 40000, CLIENT, macros(MacroStage.CONNECT)))) return;
      if (decided('helo', await client.helo('client.example', macros(MacroStage.HELO)))) return;
      // A relaying Postfix: transport smtp, next hop the domain (the null sender resolves to nothing here).
      Object.assign(known, { '{mail_addr}': m.from }, m.from && { '{mail_host}': m.from.split('@')[1], '{mail_mailer}': 'smtp' }, r.auth && { '{auth_type}': 'PLAIN', '{auth_authen}': r.auth });
      if (decided('mailFrom', await client.mailFrom(`<${m.from}>`, [], macros(MacroStage.ENVFROM)))) return;
      let accepted = 0;
      for (const a of m.rcpt) {
        Object.assign(known, { '{rcpt_addr}': a, '{rcpt_host}': a.split('@')[1], '{rcpt_mailer}': 'smtp' });
        const reply = await client.rcptTo(`<${a}>`, [], macros(MacroStage.ENVRCPT));
        out.recipients.push({ action: reply?.action ?? 'continue', ...(reply?.smtpCode !== undefined && { code: reply.smtpCode }) });
        if (reply?.action === 'reject' || reply?.action === 'tempfail') {
          decided('rcptTo', reply);
          continue;
        }
        if (decided('rcptTo', reply)) return;
        // smtpd opens the queue file, and so knows `i`, once a recipient is accepted.
        known.i = QUEUE_ID;
        accepted++;
      }
      if (accepted === 0) return client.abort();
      out.final = { stage: 'endOfMessage', action: 'continue' };
      if (decided('data', await client.data(macros(MacroStage.DATA)))) return;
      for (const [n, v] of m.headers) if (decided('header', await client.header(n, onTheWire(v), macros(MacroStage.EOH)))) return;
      if (decided('endOfHeaders', await client.endOfHeaders(macros(MacroStage.EOH)))) return;
      if (m.body.length > 0 && decided('body', await client.body(m.body, macros(MacroStage.EOM)))) return;
      const eom = await client.endOfMessage(macros(MacroStage.EOM));
      decided('endOfMessage', eom);
      out.modifications = eom.modifications;
    })();
    await client.quit();
    return { ...out, trace: summary(traces.at(-1)), logged };
  } finally {
    await server.close({ drainTimeout: 1_000 });
    await kernel.shutdown();
  }
}

/** Runs both ways and asserts the answers, modifications and decision traces are the same; returns both. */
async function agree(r: Run): Promise<{ harness: Outcome; daemon: DaemonOutcome }> {
  const harness = await viaHarness(r);
  const daemon = await viaDaemon(r);
  const { logged: _, ...d } = daemon;
  assert.deepStrictEqual(harness, d);
  return { harness, daemon };
}

// ---- A plugin that writes down what it sees --------------------------------------------------------


/** Records once through each path; returns both lists of observations (the answers agree, asserted). */
async function observe(r: Omit<Run, 'plugins'>, make: () => ReturnType<typeof recorder>) {
  const h = make();
  const d = make();
  const harness = await viaHarness({ ...r, plugins: [{ plugin: h.plugin }] });
  const daemon = await viaDaemon({ ...r, plugins: [{ plugin: d.plugin }] });
  const { logged: _, ...answers } = daemon;
  assert.deepStrictEqual(harness, answers);
  return { harness: h.seen, daemon: d.seen };
}

/** The daemon's observations less the routing macros the harness does not model (asserted present first). */
function withoutRouting(seen: Record<string, unknown>[]): Record<string, unknown>[] {
  return seen.map((o) => {
    const macros = { ...(o.macros as Record<string, string>) };
    for (const n of ROUTING) delete macros[n];
    return { ...o, macros };
  });
}

describe('the harness and the daemon agree, stage by stage', () => {
  describe('macros available per stage (stock Postfix lists)', () => {
    for (const m of [
      { name: 'an authenticated client, two recipients', auth: 'alice', from: 'a@example.org', rcpt: ['b@example.net', 'c@example.net'] },
      { name: 'an anonymous client with a host name, the null sender', hostname: 'client.example.net', from: '', rcpt: ['b@example.net'] },
    ]) {
      it(m.name, async () => {
        const { harness, daemon } = await observe(m, () => recorder());
        assert.deepStrictEqual(harness, withoutRouting(daemon));
        const at = (seen: Record<string, unknown>[], stage: string, n = 0) => seen.filter((o) => o.stage === stage)[n] as { macros: Record<string, string>; queueId?: string; auth?: string };
        // What that agreement means, spelled out.
        assert.deepStrictEqual(Object.keys(at(harness, 'connect').macros).sort(), ['_', 'j', 'v', '{daemon_addr}', '{daemon_name}'], 'no {client_addr}: Postfix does not send it unless asked');
        assert.equal(at(harness, 'mailFrom').macros.i, undefined, 'no queue id at MAIL');
        assert.equal(at(harness, 'rcptTo').queueId, undefined, 'no queue id at the first RCPT');
        if (m.rcpt.length > 1) assert.equal(at(harness, 'rcptTo', 1).queueId, QUEUE_ID, 'the queue id from the second RCPT on');
        assert.equal(at(harness, 'data').queueId, QUEUE_ID);
        assert.equal(at(harness, 'mailFrom').auth, m.auth);
        assert.equal(at(harness, 'endOfMessage').macros['{auth_type}'], m.auth && 'PLAIN');
        // The one gap: macros Postfix derives from its routing tables, which the harness has not got.
        assert.deepStrictEqual(Object.keys(at(daemon, 'rcptTo').macros).filter((k) => ROUTING.includes(k)), ['{mail_host}', '{mail_mailer}', '{rcpt_host}', '{rcpt_mailer}'].filter((k) => m.from !== '' || k.startsWith('{rcpt')));
      });
    }

    it('macros a plugin asks for are sent, at the stages it asks, and no others', async () => {
      const lists = { connect: ['{client_addr}', '{client_port}'], helo: ['{client_name}'], data: ['{mail_addr}'], endOfMessage: ['{rcpt_addr}'] };
      const { harness, daemon } = await observe({ hostname: 'client.example.net', rcpt: ['b@example.net'] }, () => recorder(ALL_TAPS, lists));
      assert.deepStrictEqual(harness, withoutRouting(daemon));
      const connect = harness.find((o) => o.stage === 'connect')!.macros as Record<string, string>;
      assert.equal(connect['{client_addr}'], CLIENT);
      assert.equal(connect.j, MTA, 'an asked list extends the default one');
      assert.equal((harness.find((o) => o.stage === 'endOfMessage')!.macros as Record<string, string>)['{rcpt_addr}'], 'b@example.net');
    });
  });

  it('header values: folded, RFC 2047 encoded, with leading whitespace — as milter8_header sends them', async () => {
    const headers: [string, string][] = [
      ['Received', ' from client.example.net (client [198.51.100.7])\r\n\tby mx.test.example (Postfix) with ESMTP id AGREE0001'],
      ['Subject', ' =?UTF-8?B?w6lwcmV1dmUgZW5jb2TDqWU=?=\r\n =?UTF-8?Q?_suite?='],
      ['X-Spaces', '    four spaces'],
      ['X-Tab', '\ttab first'],
      ['X-Empty', ''],
    ];
    const { harness, daemon } = await observe({ headers }, () => recorder(['header', 'endOfMessage']));
    assert.deepStrictEqual(harness, withoutRouting(daemon));
    assert.deepStrictEqual((harness.at(-1)!.headers as string[][]).map((h) => h[1]), [
      'from client.example.net (client [198.51.100.7])\n\tby mx.test.example (Postfix) with ESMTP id AGREE0001',
      '=?UTF-8?B?w6lwcmV1dmUgZW5jb2TDqWU=?=\n =?UTF-8?Q?_suite?=',
      '   four spaces',
      '\ttab first',
      '',
    ]);
  });

  describe('modifications', () => {
    /** Every kind of edit, some asked for at RCPT, the rest at end of message. */
    const editor = (then?: 'reject' | 'quarantine') =>
      definePlugin({
        name: 'editor',
        version: '1.0.0',
        kernel: '^1',
        modifies: ['headers', 'sender', 'recipients', 'body'],
        setup: () => ({
          rcptTo(ctx) {
            ctx.message!.addHeader('X-Early', 'asked at RCPT');
          },
          endOfMessage(ctx) {
            const m = ctx.message!;
            m.insertHeader(0, 'X-Top', 'first');
            m.changeHeader('X-Rep', 2, 'second, changed');
            m.deleteHeader('X-Absent', 1);
            m.deleteHeader('X-Rep', 1);
            m.changeSender('new@example.org', ['RET=HDRS']);
            m.addRecipient('c@example.net');
            m.addRecipient('d@example.net', ['NOTIFY=NEVER']);
            m.deleteRecipient('<b@example.net>');
            m.replaceBody('replaced\r\n');
            m.addHeader('Bad Name', 'refused by the engine, logged, the rest sent');
            if (then === 'reject') return { action: 'reject', reason: 'edited, then refused' };
            if (then === 'quarantine') return { action: 'quarantine', reason: 'held for review' };
            return undefined;
          },
        }),
      });
    const headers: [string, string][] = [['X-Rep', ' one'], ['X-Rep', ' two'], ['Subject', ' hi']];

    it('every kind, in order; a header name the engine refuses is dropped both ways', async () => {
      const { harness, daemon } = await agree({ plugins: [{ plugin: editor() }], headers });
      assert.deepStrictEqual(harness.modifications.map((x) => x.type), ['addHeader', 'insertHeader', 'changeHeader', 'changeHeader', 'changeHeader', 'changeSender', 'addRecipient', 'addRecipient', 'deleteRecipient', 'replaceBody']);
      assert.ok(daemon.logged.includes('THEMIS_ERR_MODIFICATION'), 'the daemon logs the refused one');
    });

    it('none when the message is then rejected; the hold with them when quarantined', async () => {
      const rejected = await agree({ plugins: [{ plugin: editor('reject') }], headers });
      assert.deepStrictEqual([rejected.harness.modifications, rejected.harness.final.action], [[], 'reject']);
      const held = await agree({ plugins: [{ plugin: editor('quarantine') }], headers });
      assert.deepStrictEqual(held.harness.modifications.at(-1), { type: 'quarantine', reason: 'held for review' });
    });
  });

  describe('negotiation', () => {
    const sneaky = definePlugin({ name: 'sneaky', version: '1.0.0', kernel: '^1', setup: () => ({ endOfMessage: (ctx) => void ctx.message!.addHeader('X-Sneaky', 'yes') }) });
    for (const onError of ['tempfail', 'accept'] as const) {
      it(`an edit without modifies: the hook fails, onError ${onError}, no edit sent`, async () => {
        const { harness } = await agree({ plugins: [{ plugin: sneaky, onError }] });
        assert.deepStrictEqual([harness.final.action, harness.modifications], [onError, []]);
        assert.match(harness.trace!.entries.at(-1)!, /THEMIS_ERR_MODIFICATION$/);
      });
    }

    it('the body is seen only by a plugin that taps it; the client, HELO and sender by every hook', async () => {
      const body = 'line one\r\nline two\r\n';
      const tapped = await observe({ body }, () => recorder(['body', 'endOfMessage']));
      assert.deepStrictEqual(tapped.harness, withoutRouting(tapped.daemon));
      assert.deepStrictEqual(tapped.harness.filter((o) => o.stage === 'body').map((o) => o.event), [body]);
      // A plugin tapping only RCPT and end of message: no body, but CONNECT, HELO and MAIL are asked
      // for without replies, so its hooks know the client, HELO name and sender, behind Postfix as in
      // the harness.
      const bare = await observe({ body }, () => recorder(['rcptTo', 'endOfMessage']));
      assert.deepStrictEqual(bare.harness, withoutRouting(bare.daemon));
      assert.deepStrictEqual(
        bare.harness.map((o) => [o.stage, (o.client as { address?: string } | undefined)?.address, o.helo, o.sender]),
        [['rcptTo', CLIENT, 'client.example', 'a@example.org'], ['endOfMessage', CLIENT, 'client.example', 'a@example.org']],
      );
      assert.ok(!bare.harness.some((o) => o.stage === 'body'), 'no body without a body tap');
      const observing = () => {
        const r = recorder(['rcptTo']);
        return { seen: r.seen, plugin: { ...r.plugin, observes: ['connect', 'helo', 'mailFrom'] as const } };
      };
      const told = await observe({}, observing as () => ReturnType<typeof recorder>);
      assert.deepStrictEqual(told.harness, withoutRouting(told.daemon));
      assert.deepStrictEqual([told.harness[0].helo, told.harness[0].sender, (told.harness[0].client as { address: string }).address], ['client.example', 'a@example.org', CLIENT]);
    });
  });

  describe('deadlines and onError', () => {
    const failing = (stage: 'connect' | 'rcptTo' | 'endOfMessage', how: 'throw' | 'hang') =>
      definePlugin({
        name: `${how}s-at-${stage}`,
        version: '1.0.0',
        kernel: '^1',
        setup: () => ({
          [stage]: () => {
            if (how === 'throw') throw new Error('boom');
            return new Promise<undefined>(() => {}); // never settles: only the deadline ends it
          },
        }) as PluginHooks,
      });
    for (const stage of ['connect', 'rcptTo', 'endOfMessage'] as const) {
      for (const onError of ['accept', 'tempfail', 'reject'] as const) {
        it(`a hook that throws at ${stage}, onError ${onError}`, async () => {
          const { harness } = await agree({ plugins: [{ plugin: failing(stage, 'throw'), onError }], rcpt: ['b@example.net', 'c@example.net'] });
          // At RCPT both recipients are refused (or the message accepted) by the fallback.
          assert.deepStrictEqual(harness.final, { stage, action: onError });
          assert.ok(harness.trace === undefined || harness.trace.entries.some((e) => e.endsWith(`(throws-at-${stage} failed in ${stage}) THEMIS_ERR_HOOK_FAILED`)), JSON.stringify(harness.trace));
        });
      }
      it(`a hook that hangs past hookTimeout (50 ms) at ${stage}: its onError, both ways`, async () => {
        const { harness } = await agree({ plugins: [{ plugin: failing(stage, 'hang'), onError: 'reject' }], hookTimeout: 50 });
        assert.deepStrictEqual(harness.final, { stage, action: 'reject' });
        assert.ok(harness.trace!.entries.some((e) => e.endsWith(`(hangs-at-${stage} timed out in ${stage}) THEMIS_ERR_HOOK_TIMEOUT`)), JSON.stringify(harness.trace));
      });
    }
  });

  describe('malformed verdicts', () => {
    for (const [what, bad] of [['action bogus', { action: 'bogus', reason: 'r' }], ['a bare string', 'reject']] as const) {
      for (const stage of ['mailFrom', 'endOfMessage'] as const) {
        const plugin = definePlugin({ name: 'sloppy', version: '1.0.0', kernel: '^1', onError: 'tempfail', setup: () => ({ [stage]: () => bad as never }) as PluginHooks });
        it(`${what} at ${stage}: the onError verdict both ways; the default harness throws the code the daemon logs`, async () => {
          const { harness, daemon } = await agree({ plugins: [{ plugin }] });
          assert.deepStrictEqual(harness.final, { stage, action: 'tempfail' });
          assert.ok(daemon.logged.includes('THEMIS_ERR_HOOK_BAD_VERDICT'));
          const thrown = await viaHarness({ plugins: [{ plugin }] }, 'throw').then(
            () => assert.fail('the default harness must throw'),
            (err: unknown) => err,
          );
          assert.deepStrictEqual(problemsOf(thrown).map((e) => e.code), ['THEMIS_ERR_HOOK_BAD_VERDICT']);
        });
      }
    }
  });
});
