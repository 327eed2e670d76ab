// ARC sealing by the plugin (policy `dkim.seal`), through the kernel as the daemon runs it: the set is
// made in the finalize hook, over the headers as they will be delivered, with this server's
// authentication results; the message as Postfix would write it is checked by dkimpy
// (python3-dkim's arc_verify, through fixtures/pydkim.py) and by Themis's own ARC validation.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestKernel, type TestConnectionMessage } from 'themis-milter/testing';
import dkim from '../src/index.ts';
import { VerifyStream } from '../src/verify.ts';
import { createResolver } from 'themis-milter/dns';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, assemble, mailauthSign, makeKey, noteSpy, splitMessage, type TestKey } from './helpers/mail.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/pydkim.py', import.meta.url));

function findPython(): { python?: string; why?: string } {
  const tried: string[] = [];
  for (const python of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(python, ['-c', 'import dkim, authres; dkim.arc_sign'], { encoding: 'utf8' });
    if (r.status === 0) return { python };
    tried.push(`${python}: ${r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`)}`);
  }
  return { why: `python3-dkim with ARC (dkimpy, python3-authres) is not installed — apt-get install python3-dkim python3-authres (${tried.join('; ')})` };
}
const { python, why } = findPython();
const py = (args: string[], input: Buffer) => {
  const r = spawnSync(python!, [SCRIPT, ...args], { input, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
};

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let author: TestKey;
let list: TestKey;
let forwarder: TestKey;
const records: Record<string, string> = {};
before(async () => {
  author = makeKey('example.com', 'a1');
  list = makeKey('lists.example.org', 'arc1');
  forwarder = makeKey('forwarder.themis.test', 'arc2026');
  for (const k of [author, list, forwarder]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
  dns = await startDnsServer(Object.fromEntries(Object.entries(records).map(([n, r]) => [n, { TXT: [r] }])));
});
after(() => dns.close());

const SAMPLE = 'From: Alice <alice@example.com>\r\nTo: list@lists.example.org\r\nSubject: forwarded\r\nDate: Thu, 03 Dec 2026 22:00:00 +0000\r\nMessage-ID: <fw1@example.com>\r\n\r\nHello list.\r\n';
const LIST_AR = 'lists.example.org; dkim=pass header.d=example.com header.s=a1';

async function kernel(policy: Record<string, unknown>, logs: Record<string, unknown>[] = []) {
  const spy = noteSpy();
  const keep = (o: Record<string, unknown>, msg: string) => void logs.push({ ...o, msg });
  const logger = { child: () => logger, info: keep, debug: () => undefined, error: keep, trace: () => undefined, fatal: keep, warn: keep, isLevelEnabled: () => false };
  const t = await createTestKernel({
    logger: logger as never,
    plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], dnsTimeout: 500, authservId: 'forwarder.themis.test', keys: [{ domain: forwarder.domain, selector: forwarder.selector, keyFile: forwarder.keyFile }] } }, spy.plugin],
    policies: [{ name: 'forward', dkim: policy }] as never,
  });
  return { t, spy };
}

async function through(t: Awaited<ReturnType<typeof kernel>>['t'], raw: Buffer) {
  const { headers, body } = splitMessage(raw);
  const m: TestConnectionMessage = { client: { address: '192.0.2.25' }, from: 'list-bounces@lists.example.org', rcpt: ['bob@example.net'], headers, body };
  const r = await t.message(m);
  return { r, delivered: assemble(headers, r.modifications, body) };
}

/** Themis's own ARC validation of a whole message. */
async function themisArc(raw: Buffer) {
  const { headers, body } = splitMessage(raw);
  const events = headers.map(([name, v]) => ({ name, value: v.replace(/^ /, '').replace(/\r\n/g, '\n'), raw: v.replace(/\r\n/g, '\n') }));
  const stream = new VerifyStream(events, { resolver: createResolver({ servers: [dns.address], timeoutMs: 500 }), maxSignatures: 10, arc: true });
  await stream.write(body);
  return stream.finish(5_000);
}

describe('ARC sealing (dkim.seal)', () => {
  it('a forwarded message with a list’s ARC set gets i=2 cv=pass on top; dkimpy and Themis validate the chain', async (t) => {
    if (!python) return t.skip(why);
    const signed = await mailauthSign(SAMPLE, author);
    const withAr = Buffer.concat([Buffer.from(`Authentication-Results: ${LIST_AR}\r\n`), signed, Buffer.from('-- \r\nThe example list\r\n')]);
    const hop1 = py(['arcsign', list.domain, list.selector, list.keyFile, 'lists.example.org'], withAr);
    assert.equal(hop1.status, 0, hop1.stderr);

    const { t: k, spy } = await kernel({ verify: { headers: { authenticationResults: true } }, seal: { domain: 'forwarder.themis.test' } });
    const { r, delivered } = await through(k, hop1.stdout);
    assert.equal(r.decision.action, 'accept');
    const top = delivered.toString().split('\r\n').filter((l) => /^[^\s:]+:/.test(l)).slice(0, 4).map((l) => l.slice(0, l.indexOf(':')));
    assert.deepEqual(top, ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results', 'Authentication-Results'], 'the set on top, in order, above our Authentication-Results');
    const [aar] = added(r, 'ARC-Authentication-Results');
    assert.match(aar, /^i=2; forwarder\.themis\.test;/);
    // The list's footer broke the author's signature: what ARC is for — the chain vouches for it.
    assert.match(aar, /dkim=fail \(body hash did not verify\) header\.d=example\.com/);
    assert.match(aar, /arc=pass/);
    assert.deepEqual(spy.last()!.sealed, { instance: 2, cv: 'pass', domain: 'forwarder.themis.test', selector: 'arc2026', algorithm: 'rsa-sha256' });

    const v = py(['arcverify', JSON.stringify(records)], delivered);
    assert.equal(v.status, 0, `dkimpy: ${v.stdout} ${v.stderr}\n${delivered}`);
    assert.equal(JSON.parse(v.stdout.toString()).cv, 'pass');
    const mine = await themisArc(delivered);
    assert.equal(mine.arc?.result, 'pass', JSON.stringify(mine.arc));
    assert.deepEqual(mine.arc?.sealers, ['lists.example.org', 'forwarder.themis.test']);
    await k.close();
  });

  it('signing and sealing in one policy: i=1 cv=none, its ARC-Message-Signature covers the DKIM-Signature; both verify with dkimpy', async (t) => {
    if (!python) return t.skip(why);
    const { t: k, spy } = await kernel({ verify: { enabled: false }, sign: { signingDomain: 'forwarder.themis.test' }, seal: { domain: 'forwarder.themis.test' } });
    const { r, delivered } = await through(k, Buffer.from(SAMPLE));
    assert.deepEqual(r.modifications.map((m) => ('name' in m ? m.name : m.type)), ['DKIM-Signature', 'ARC-Authentication-Results', 'ARC-Message-Signature', 'ARC-Seal']);
    const [ams] = added(r, 'ARC-Message-Signature');
    assert.match(ams.replace(/\s+/g, ''), /h=[^;]*DKIM-Signature/i);
    assert.equal(spy.last()!.sealed?.cv, 'none');
    assert.equal(spy.last()!.signed?.length, 1);
    const dk = py(['verify', JSON.stringify(records)], delivered);
    assert.equal(dk.status, 0, `dkimpy DKIM: ${dk.stdout} ${dk.stderr}`);
    const v = py(['arcverify', JSON.stringify(records)], delivered);
    assert.equal(v.status, 0, `dkimpy ARC: ${v.stdout} ${v.stderr}`);
    await k.close();
  });

  it('a seal domain without a key: said once with a coded error, the message goes on unsealed', async () => {
    const logs: Record<string, unknown>[] = [];
    const { t: k, spy } = await kernel({ verify: { enabled: false }, seal: { domain: 'unknown.example' } }, logs);
    for (let i = 0; i < 2; i++) {
      const { r } = await through(k, Buffer.from(SAMPLE));
      assert.equal(r.decision.action, 'accept');
      assert.deepEqual(added(r, 'ARC-Seal'), []);
      assert.equal(spy.last()!.sealed, undefined);
    }
    const said = logs.filter((l) => l.code === 'THEMIS_DKIM_ARC_SEAL_KEY');
    assert.equal(said.length, 1, JSON.stringify(logs));
    assert.match(String(said[0].msg), /unknown\.example.*policy forward: no key of this domain/);
    await k.close();
  });
});
