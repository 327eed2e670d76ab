// ARC (RFC 8617) validation through the kernel, in the same streaming pass as DKIM, with the keys on
// a loopback DNS server. Chains are made by mailauth's own sealer and — against an independent
// implementation — by Debian's python3-dkim (`dkim.arc_sign`, through test/fixtures/pydkim.py; without
// it those tests are skipped, saying why). One and two hops pass with their sealers and the newest
// sealer's ARC-Authentication-Results; a body changed after sealing, a broken seal, duplicate,
// missing and absurd instances fail with a reason; `verify.arc: false` leaves ARC out.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestKernel, type TestConnectionMessage } from 'themis-milter/testing';
import { createResolver } from 'themis-milter/dns';
import dkim, { VerifyStream } from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, mailauthSeal, mailauthSign, makeKey, noteSpy, sampleMessage, splitMessage, type TestKey } from './helpers/mail.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/pydkim.py', import.meta.url));

/** The python that has dkimpy with ARC (authres), or why there is none. */
function findPython(): { python?: string; why?: string } {
  const tried: string[] = [];
  for (const python of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(python, ['-c', 'import dkim, authres; dkim.arc_sign'], { encoding: 'utf8' });
    if (r.status === 0) return { python };
    tried.push(`${python}: ${r.error ? r.error.message : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`)}`);
  }
  return { why: `python3-dkim with ARC (dkimpy and python3-authres) is not installed — apt-get install python3-dkim python3-authres (${tried.join('; ')})` };
}
const { python, why } = findPython();

function py(args: string[], input: Buffer): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(python!, [SCRIPT, ...args], { input, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let author: TestKey;
let list: TestKey;
let forwarder: TestKey;
let listEd: TestKey;
const records: Record<string, string> = {};
before(async () => {
  author = makeKey('example.com', 'a1');
  list = makeKey('lists.example.org', 'arc1');
  forwarder = makeKey('forwarder.example', 'arc2');
  listEd = makeKey('lists.example.org', 'arced', 'ed25519');
  for (const k of [author, list, forwarder, listEd]) records[`${k.selector}._domainkey.${k.domain}`] = k.record;
  dns = await startDnsServer(Object.fromEntries(Object.entries(records).map(([n, r]) => [n, { TXT: [r] }])));
});
after(() => dns.close());

const LIST_AR = 'lists.example.org; dkim=pass header.d=example.com header.s=a1; spf=pass smtp.mailfrom=alice@example.com; dmarc=pass header.from=example.com';
const FWD_AR = 'forwarder.example; arc=pass; dkim=fail header.d=example.com; spf=fail smtp.mailfrom=lists.example.org; dmarc=fail header.from=example.com';

async function kernel(verify: Record<string, unknown> = { headers: { authenticationResults: true } }) {
  const spy = noteSpy();
  const t = await createTestKernel({ plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], dnsTimeout: 300, deadline: 3_000, authservId: 'mx.themis.test' } }, spy.plugin], policies: [{ name: 'inbound', dkim: { verify } }] as never });
  return { t, spy };
}

const msg = (raw: string | Buffer): TestConnectionMessage => {
  const { headers, body } = splitMessage(raw);
  return { client: { address: '198.51.100.7' }, helo: 'mx.forwarder.example', from: 'list-bounces@lists.example.org', rcpt: ['bob@example.net'], headers, body };
};

/** The author signs; the list adds a footer (breaking the signature) and seals. */
async function oneHop(): Promise<Buffer> {
  const signed = await mailauthSign(sampleMessage(), author);
  const footered = Buffer.concat([signed, Buffer.from('-- \r\nThe example list: https://lists.example.org/\r\n')]);
  return mailauthSeal(footered, list, { authResults: LIST_AR });
}

/** One hop, then the forwarder seals again (cv=pass). */
async function twoHops(): Promise<Buffer> {
  return mailauthSeal(await oneHop(), forwarder, { authResults: FWD_AR, cv: 'pass' });
}

/** Replaces the first occurrence of `from` in the header block. */
function editHeader(raw: Buffer, from: string | RegExp, to: string): Buffer {
  const text = raw.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  const head = text.slice(0, end).replace(from, to);
  assert.notEqual(head, text.slice(0, end), `no ${from} in the header`);
  return Buffer.from(head + text.slice(end), 'latin1');
}

describe('ARC validation (mailauth-sealed chains)', () => {
  it('one hop: pass, the sealer and its ARC-Authentication-Results in the note, arc=pass reported', async () => {
    const { t, spy } = await kernel();
    const r = await t.message(msg(await oneHop()));
    assert.equal(r.decision.action, 'accept');
    const note = spy.last()!;
    // The footer broke the author's signature; the ARC-Message-Signature is not a DKIM result.
    assert.deepEqual(note.results.map((x) => [x.result, x.domain]), [['fail', 'example.com']]);
    assert.deepEqual(note.arc, { result: 'pass', instances: 1, sealers: ['lists.example.org'], lastAuthResults: LIST_AR, firstAuthResults: LIST_AR });
    const [ar] = added(r, 'Authentication-Results');
    assert.match(ar, /;\s+arc=pass \(i=1 as=lists\.example\.org\) smtp\.remote-ip=198\.51\.100\.7$/);
    await t.close();
  });

  it('two hops: pass, sealers oldest first, the newest sealer\'s results', async () => {
    const { t, spy } = await kernel();
    const r = await t.message(msg(await twoHops()));
    assert.equal(r.decision.action, 'accept');
    const arc = spy.last()!.arc!;
    assert.equal(arc.result, 'pass', JSON.stringify(arc));
    assert.equal(arc.instances, 2);
    assert.deepEqual(arc.sealers, ['lists.example.org', 'forwarder.example']);
    assert.equal(arc.lastAuthResults, FWD_AR);
    assert.equal(arc.firstAuthResults, LIST_AR);
    assert.match(added(r, 'Authentication-Results')[0], /arc=pass \(i=2 as=lists\.example\.org,forwarder\.example\)/);
    await t.close();
  });

  it('an Ed25519 seal passes', async () => {
    const { t, spy } = await kernel();
    await t.message(msg(await mailauthSeal(sampleMessage(), listEd, { authResults: LIST_AR })));
    assert.deepEqual(spy.last()!.arc?.sealers, ['lists.example.org']);
    assert.equal(spy.last()!.arc?.result, 'pass');
    await t.close();
  });

  it('a body changed after sealing: fail, with the reason', async () => {
    const { t, spy } = await kernel();
    for (const sealed of [await oneHop(), await twoHops()]) {
      const r = await t.message(msg(Buffer.concat([sealed, Buffer.from('P.S. added after sealing\r\n')])));
      assert.equal(r.decision.action, 'accept');
      const arc = spy.last()!.arc!;
      assert.equal(arc.result, 'fail');
      assert.deepEqual(arc.sealers, []);
      assert.match(arc.reason!, /no valid signature/);
      assert.match(added(r, 'Authentication-Results')[0], /;\s+arc=fail \(i=\d no valid signature\) smtp\.remote-ip=198\.51\.100\.7$/);
    }
    await t.close();
  });

  it('a broken seal: fail (a sealed ARC-Authentication-Results edited, a seal signature altered)', async () => {
    const { t, spy } = await kernel();
    const edited = editHeader(await twoHops(), 'dmarc=pass header.from=example.com', 'dmarc=pass header.from=example.net');
    await t.message(msg(edited));
    assert.equal(spy.last()!.arc?.result, 'fail');
    assert.match(spy.last()!.arc!.reason!, /seal signature validation failed/);
    const one = await oneHop();
    const text = one.toString('latin1');
    const b = text.indexOf(' b=', text.indexOf('ARC-Seal:')) + 3;
    const flipped = Buffer.from(text.slice(0, b) + (text[b] === 'A' ? 'B' : 'A') + text.slice(b + 1), 'latin1');
    await t.message(msg(flipped));
    assert.equal(spy.last()!.arc?.result, 'fail');
    assert.match(spy.last()!.arc!.reason!, /i=1 seal signature validation failed/);
    await t.close();
  });

  it('broken structure: duplicate, missing, gapped and absurd instances fail with a reason, never throw', async () => {
    const { t, spy } = await kernel();
    const one = (await oneHop()).toString('latin1');
    const arcLines = (name: string) => new RegExp(`${name}:[^\\r]*(\\r\\n[ \\t][^\\r]*)*\\r\\n`, 'i');
    const seal = arcLines('ARC-Seal').exec(one)![0];
    const ams = arcLines('ARC-Message-Signature').exec(one)![0];
    const cases: [string, string, RegExp][] = [
      ['duplicate seal', seal + one, /multiple arc-seal/],
      ['missing AMS', one.replace(ams, ''), /no arc-message-signature/],
      ['i=51', one.replace(/\bi=1\b/g, 'i=51'), /instance/],
      ['i=99 on every header', one.replace(/\bi=1\b/g, 'i=99'), /instance/],
      ['gap (i=2 only)', one.replace(/\bi=1\b/g, 'i=2'), /expected=1/],
      ['cv=pass on i=1', one.replace('cv=none', 'cv=pass'), /cv/],
    ];
    for (const [what, raw, reason] of cases) {
      const r = await t.message(msg(Buffer.from(raw, 'latin1')));
      assert.equal(r.decision.action, 'accept', what);
      const arc = spy.last()!.arc!;
      assert.equal(arc.result, 'fail', `${what}: ${JSON.stringify(arc)}`);
      assert.ok(arc.instances >= 1, what);
      assert.match(arc.reason ?? '', reason, `${what}: ${arc.reason}`);
    }
    await t.close();
  });

  it('no ARC headers: none, and no arc= in Authentication-Results', async () => {
    const { t, spy } = await kernel();
    const r = await t.message(msg(await mailauthSign(sampleMessage(), author)));
    assert.deepEqual(spy.last()!.arc, { result: 'none', instances: 0, sealers: [] });
    assert.doesNotMatch(added(r, 'Authentication-Results')[0], /arc=/);
    await t.close();
  });

  it('verify.arc: false leaves ARC out of the note and the header', async () => {
    const { t, spy } = await kernel({ arc: false, headers: { authenticationResults: true } });
    const r = await t.message(msg(await twoHops()));
    assert.equal(spy.last()!.arc, undefined);
    assert.doesNotMatch(added(r, 'Authentication-Results')[0], /arc=/);
    assert.deepEqual(spy.last()!.results.map((x) => x.result), ['fail']);
    await t.close();
  });

  it('a seal key that does not exist: fail, the key named', async () => {
    const { t, spy } = await kernel();
    const ghost = makeKey('ghost.example', 'nokey');
    await t.message(msg(await mailauthSeal(sampleMessage(), ghost, { authResults: 'ghost.example; spf=pass smtp.mailfrom=example.com' })));
    assert.equal(spy.last()!.arc?.result, 'fail');
    assert.ok(spy.last()!.arc!.reason, JSON.stringify(spy.last()!.arc));
    await t.close();
  });
});

describe('ARC streaming', () => {
  it('a sealed 4 MB body is checked chunk by chunk, mailauth never queueing more than one chunk', async () => {
    const body = Buffer.alloc(4 * 1024 * 1024, 'a line of the forwarded body\r\n');
    const raw = sampleMessage().replace(/\r\n\r\n[\s\S]*$/, '\r\n\r\n');
    const sealed = await mailauthSeal(Buffer.concat([Buffer.from(raw), body]), list, { authResults: LIST_AR });
    const split = splitMessage(sealed);
    const headers = split.headers.map(([name, value]) => ({ name, value: value.replace(/^ /, '').replace(/\r\n/g, '\n') }));
    const stream = new VerifyStream(headers, { resolver: createResolver({ servers: [dns.address] }), maxSignatures: 10, arc: true });
    const CHUNK = 65_535;
    for (let off = 0; off < split.body.length; off += CHUNK) await stream.write(Buffer.from(split.body.subarray(off, off + CHUNK)));
    const v = await stream.finish(3_000);
    assert.equal(v.arc?.result, 'pass', JSON.stringify(v.arc));
    assert.ok(stream.maxQueued <= CHUNK, `queued ${stream.maxQueued}`);
    assert.equal(stream.bodyBytes, split.body.length);
  });
});

describe('ARC interop with python3-dkim', () => {
  it('chains dkimpy seals (one and two hops) pass in Themis; a changed body or seal fails', async (t) => {
    if (!python) {
      t.diagnostic(why!);
      t.skip(why);
      return;
    }
    const { t: k, spy } = await kernel();
    const signed = await mailauthSign(sampleMessage(), author);
    const footered = Buffer.concat([Buffer.from(`Authentication-Results: ${LIST_AR}\r\n`), signed, Buffer.from('-- \r\nlist footer\r\n')]);
    const hop1 = py(['arcsign', list.domain, list.selector, list.keyFile, 'lists.example.org'], footered);
    assert.equal(hop1.status, 0, hop1.stderr);
    assert.equal(py(['arcverify', JSON.stringify(records)], hop1.stdout).status, 0, 'dkimpy\'s own check of one hop');
    await k.message(msg(hop1.stdout));
    assert.equal(spy.last()!.arc?.result, 'pass', JSON.stringify(spy.last()!.arc));
    assert.deepEqual(spy.last()!.arc?.sealers, ['lists.example.org']);
    assert.match(spy.last()!.arc!.lastAuthResults!, /^lists\.example\.org; dkim=pass header\.d=example\.com/);
    assert.match(spy.last()!.arc!.lastAuthResults!, /dmarc=pass header\.from=example\.com/);

    const hop2 = py(['arcsign', forwarder.domain, forwarder.selector, forwarder.keyFile, 'forwarder.example'], Buffer.concat([Buffer.from(`Authentication-Results: ${FWD_AR}\r\n`), hop1.stdout]));
    assert.equal(hop2.status, 0, hop2.stderr);
    assert.equal(py(['arcverify', JSON.stringify(records)], hop2.stdout).status, 0, 'dkimpy\'s own check of two hops');
    await k.message(msg(hop2.stdout));
    assert.equal(spy.last()!.arc?.result, 'pass', JSON.stringify(spy.last()!.arc));
    assert.deepEqual(spy.last()!.arc?.sealers, ['lists.example.org', 'forwarder.example']);
    assert.equal(spy.last()!.arc?.instances, 2);

    await k.message(msg(Buffer.concat([hop2.stdout, Buffer.from('tampered\r\n')])));
    assert.equal(spy.last()!.arc?.result, 'fail');
    await k.message(msg(editHeader(hop2.stdout, 'header.from=example.com', 'header.from=evil.example')));
    assert.equal(spy.last()!.arc?.result, 'fail');
    assert.match(spy.last()!.arc!.reason!, /seal/);
    await k.close();
    t.diagnostic('dkimpy-sealed chains of one and two hops pass; tampered ones fail');
  });

  it('chains mailauth seals pass with dkimpy, and dkimpy agrees a tampered one fails', async (t) => {
    if (!python) {
      t.diagnostic(why!);
      t.skip(why);
      return;
    }
    for (const sealed of [await oneHop(), await twoHops()]) {
      const v = py(['arcverify', JSON.stringify(records)], sealed);
      assert.equal(v.status, 0, `dkimpy: ${v.stdout.toString()} ${v.stderr}`);
      const bad = py(['arcverify', JSON.stringify(records)], Buffer.concat([sealed, Buffer.from('tampered\r\n')]));
      assert.notEqual(bad.status, 0, `dkimpy accepted a tampered body: ${bad.stdout.toString()}`);
    }
  });
});
