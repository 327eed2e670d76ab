// Themis against Debian's miltertest (the OpenDKIM project's milter tester, driven by a Lua script):
// the `themis start` daemon itself, and an application that rejects and modifies.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Action, Decisions, createMilterServer, type MilterServer } from '../../src/milter/index.ts';
import { startThemis, type ThemisProcess } from '../helpers/themis.ts';

const script = fileURLToPath(new URL('../fixtures/transaction.lua', import.meta.url));
const found = spawnSync('miltertest', ['-h'], { encoding: 'utf8' });
const available = found.error === undefined;
const reason = available ? false : `miltertest not installed (Debian package miltertest): ${found.error?.message}`;
if (reason) console.log(`# skipping miltertest tests: ${reason}`);

function miltertest(port: number, mode: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('miltertest', ['-s', script, '-D', `port=${port}`, '-D', `mode=${mode}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
  });
}

describe('miltertest (OpenDKIM)', { skip: reason }, () => {
  let themis: ThemisProcess;
  let server: MilterServer;
  before(async () => {
    // The Lua script expects an answer at every stage, as from a milter that taps them all.
    themis = await startThemis(['--engine-only']);
    server = createMilterServer({
      negotiation: { actions: Action.ADDHDRS | Action.CHGHDRS | Action.CHGBODY | Action.ADDRCPT },
      connect: () => undefined,
      helo: () => undefined,
      mailFrom: () => undefined,
      rcptTo: (_s, e) => (e.address.startsWith('blocked') ? { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'blocked' } } : undefined),
      data: () => undefined,
      header: () => undefined,
      endOfHeaders: () => undefined,
      body: () => undefined,
      endOfMessage: (s, m) => {
        m.addHeader('X-Themis', `seen 4 headers, queue id ${s.macros.get('i')}`);
        m.changeHeader('Subject', 1, '[checked] miltertest transaction');
        m.deleteHeader('X-Drop', 1);
        m.addRecipient('archive@example.test');
        m.replaceBody('New body\r\n');
        return Decisions.accept;
      },
    });
    await server.listen('inet:0@127.0.0.1');
  });
  after(async () => {
    await themis?.stop();
    await server?.close({ drainTimeout: 500 });
  });

  it('the themis daemon (engine only) answers a full transaction as miltertest expects', async () => {
    const r = await miltertest(themis.port, 'accept');
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /miltertest transaction ok: mode accept/);
  });

  it('a recipient rejection and every kind of modification are read back by miltertest', async () => {
    const r = await miltertest(server.port!, 'modify');
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /miltertest transaction ok: mode modify/);
  });
});
