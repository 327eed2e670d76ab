// Streaming: a 20 MB body arrives in many chunks and is hashed as it comes — verified and signed
// through the kernel — and the plugin never holds it: mailauth's queue stays within one chunk, and the
// heap does not grow by the body's size while a body of fresh chunks streams through.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { dkimVerify } from 'mailauth';
import { createTestKernel } from 'themis-milter/testing';
import { createResolver } from 'themis-milter/dns';
import dkim, { BodyHashes, VerifyStream } from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { added, assemble, mailauthSign, makeKey, noteSpy, sampleMessage, splitMessage, type TestKey } from './helpers/mail.ts';

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let rsa: TestKey;
let ed: TestKey;
before(async () => {
  rsa = makeKey('example.com', 'big');
  ed = makeKey('example.com', 'bige', 'ed25519');
  dns = await startDnsServer({ 'big._domainkey.example.com': { TXT: [rsa.record] }, 'bige._domainkey.example.com': { TXT: [ed.record] } });
});
after(() => dns.close());

const MB = 1024 * 1024;
/** A 20 MB text body: numbered lines of 100 bytes. */
function bigBody(size = 20 * MB): Buffer {
  const line = (i: number) => `${String(i).padStart(10, '0')} ${'x'.repeat(87)}\r\n`;
  const out = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; off += 100, i++) out.write(line(i), off, 'latin1');
  return out;
}

describe('dkim streaming', () => {
  it('the plugin holds no body: mailauth queues at most one chunk, and the heap does not grow with the body', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const headers = splitMessage(sampleMessage()).headers.map(([name, value]) => ({ name, value: value.replace(/^ /, '').replace(/\r\n/g, '\n') }));
    const stream = new VerifyStream([{ name: 'DKIM-Signature', value: 'v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=big; h=From; bh=AAAA; b=AAAA' }, ...headers], { resolver: createResolver({ servers: [dns.address] }), maxSignatures: 10 });
    const hashes = new BodyHashes(['relaxed', 'simple']);
    const CHUNK = 65_535;
    gc();
    const base = process.memoryUsage();
    // Growth after a GC, sampled as the body streams: a plugin that kept the body would grow by it.
    const samples: number[] = [];
    const total = 20 * MB;
    for (let sent = 0, i = 0; sent < total; sent += CHUNK, i++) {
      // A fresh chunk each time, dropped once written: only what the plugin keeps survives a GC.
      const chunk = Buffer.alloc(CHUNK, `line ${i} of the body\r\n`);
      hashes.update(chunk);
      await stream.write(chunk);
      if (i % 40 === 0) {
        gc();
        const now = process.memoryUsage();
        samples.push(now.heapUsed + now.arrayBuffers - (base.heapUsed + base.arrayBuffers));
      }
    }
    assert.ok(stream.bodyBytes >= total);
    assert.ok(stream.maxQueued <= CHUNK, `queued ${stream.maxQueued}`);
    gc();
    const end = process.memoryUsage();
    samples.push(end.heapUsed + end.arrayBuffers - (base.heapUsed + base.arrayBuffers));
    // The median and the last sample: a transient buffer of the test runner's own may show in one sample.
    const median = samples.toSorted((a, b) => a - b)[Math.floor(samples.length / 2)];
    const mb = (n: number) => `${(n / MB).toFixed(1)} MB`;
    assert.ok(median < 4 * MB && samples.at(-1)! < 4 * MB, `memory grew by ${mb(median)} (median), ${mb(samples.at(-1)!)} at the end, while 20 MB streamed`);
    const outcome = await stream.finish(2_000);
    assert.equal(outcome.results[0].result, 'fail', 'the made-up body hash does not match');
    assert.match(hashes.digest('relaxed'), /^[A-Za-z0-9+/]{43}=$/);
  });
  it('a 20 MB body in 65,535-byte chunks verifies (RSA and Ed25519) and is signed, hashed as it arrives', async () => {
    const raw = await mailauthSign(await mailauthSign(Buffer.concat([Buffer.from(sampleMessage(undefined, '')), bigBody()]), rsa), ed);
    const { headers, body } = splitMessage(raw);
    assert.ok(body.length >= 20 * MB);
    const spy = noteSpy();
    const t = await createTestKernel({
      plugins: [{ plugin: dkim, options: { dnsServers: [dns.address], keys: [{ domain: 'example.com', selector: 'new', keyFile: rsa.keyFile }] } }, spy.plugin],
      policies: [{ name: 'p', dkim: { sign: {} } }],
    });
    const m = { client: { address: '198.51.100.7' }, from: 'alice@example.com', rcpt: ['bob@example.net'], headers, body };
    const r = await t.message(m);
    assert.equal(r.decision.action, 'accept');
    const note = spy.last()!;
    assert.equal(note.bodyBytes, body.length);
    assert.deepEqual(note.results.map((x) => x.result), ['pass', 'pass']);
    assert.equal(added(r, 'DKIM-Signature').length, 1);
    // The new signature (s=new, published with the RSA key under another name) verifies too.
    const records: Record<string, string> = { 'big._domainkey.example.com': rsa.record, 'bige._domainkey.example.com': ed.record, 'new._domainkey.example.com': rsa.record };
    const v = await dkimVerify(assemble(headers, r.modifications, body), { resolver: (async (n: string) => [[records[n]]]) as never });
    assert.deepEqual(v.results.map((x) => [x.selector, x.status.result]), [['new', 'pass'], ['bige', 'pass'], ['big', 'pass']]);
    await t.close();
  });

});
