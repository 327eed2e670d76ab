// `themis dkim keygen` and `themis dkim test`: the key file (mode 0600, never overwritten unless
// asked), the record in 255-byte strings, and the check of a published record against a key
// through a DNS server on loopback (match: exit 0; another key, no record, a broken one: exit 1).
import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MemoryStore } from 'themis-milter';
import { dkimCommand, keyRecord, type DkimOptions } from '../src/index.ts';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { makeKey, tempDir, type TestKey } from './helpers/mail.ts';

const options = (extra: Partial<DkimOptions> = {}): DkimOptions => ({ keys: [], dnsTimeout: 300, deadline: 1_000, cacheEntries: 0, maxSignatures: 10, ...extra });

async function run(args: string[], opts = options()) {
  let out = '';
  let err = '';
  const code = await dkimCommand.run(args, {
    store: new MemoryStore(),
    storeType: 'memory',
    policies: [],
    options: opts,
    configFile: undefined,
    readStatus: async () => undefined,
    out: (s) => void (out += s),
    err: (s) => void (err += s),
  });
  return { code, out, err };
}

let dns: Awaited<ReturnType<typeof startDnsServer>>;
let published: TestKey;
let ed: TestKey;
let stranger: TestKey;
before(async () => {
  published = makeKey('example.com', 'live');
  ed = makeKey('example.com', 'ed', 'ed25519');
  stranger = makeKey('example.com', 'live-other');
  dns = await startDnsServer({
    'live._domainkey.example.com': { TXT: [published.record] },
    'ed._domainkey.example.com': { TXT: [ed.record] },
    'broken._domainkey.example.com': { TXT: ['v=DKIM1; k=rsa; p=AAAA'] },
  });
});
after(() => dns.close());

describe('themis dkim', () => {
  it('keygen: an RSA-2048 key, mode 0600, and its record in strings of at most 255 bytes', async () => {
    const out = join(tempDir(), 'k1.pem');
    const r = await run(['keygen', 'Example.COM', 'sel2026', '--out', out]);
    assert.equal(r.code, 0, r.err);
    assert.equal(statSync(out).mode & 0o777, 0o600);
    const key = createPrivateKey(readFileSync(out));
    assert.equal(key.asymmetricKeyType, 'rsa');
    assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
    const line = r.out.split('\n').find((l) => l.startsWith('sel2026._domainkey.example.com. IN TXT '))!;
    assert.ok(line, r.out);
    const strings = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
    assert.ok(strings.length >= 2 && strings.every((s) => Buffer.byteLength(s) <= 255));
    assert.equal(strings.join(''), keyRecord(key));
    assert.match(strings.join(''), /^v=DKIM1; k=rsa; p=MII/);
    // Never overwritten unless asked.
    const again = await run(['keygen', 'example.com', 'sel2026', '--out', out]);
    assert.equal(again.code, 1);
    assert.match(again.err, /exists \(--force to overwrite\)/);
    assert.equal((await run(['keygen', 'example.com', 'sel2026', '--out', out, '--force', '--bits', '3072'])).code, 0);
    assert.equal(createPrivateKey(readFileSync(out)).asymmetricKeyDetails?.modulusLength, 3072);
  });

  it('keygen --type ed25519: the bare 32-byte key (RFC 8463) in one string', async () => {
    const out = join(tempDir(), 'k2.pem');
    const r = await run(['keygen', 'example.com', 'ed2026', '--type', 'ed25519', '--out', out]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^ed2026\._domainkey\.example\.com\. IN TXT "v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}="$/m);
    assert.equal(createPrivateKey(readFileSync(out)).asymmetricKeyType, 'ed25519');
  });

  it('keygen: usage errors exit 2', async () => {
    for (const args of [['keygen', 'example.com'], ['keygen', 'example.com', 's', '--type', 'dsa'], ['keygen', 'example.com', 's', '--bits', '512'], ['keygen', 'bad domain', 's'], ['frob', 'a', 'b'], ['keygen', 'example.com', 's', '--nope']]) {
      assert.equal((await run(args)).code, 2, args.join(' '));
    }
    assert.ok(!existsSync('s.example.com.key'));
  });

  it('test: the published record matches the key (exit 0), or not (exit 1)', async () => {
    const ok = await run(['test', 'example.com', 'live', '--key', published.keyFile, '--dns-server', dns.address]);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /live\._domainkey\.example\.com: OK, publishes the RSA-2048 public key/);
    const edOk = await run(['test', 'example.com', 'ed', '--key', ed.keyFile], options({ dnsServers: [dns.address] }));
    assert.equal(edOk.code, 0, edOk.err);
    assert.match(edOk.out, /Ed25519/);
    const other = await run(['test', 'example.com', 'live', '--key', stranger.keyFile, '--dns-server', dns.address]);
    assert.equal(other.code, 1);
    assert.match(other.err, /MISMATCH/);
    const missing = await run(['test', 'example.com', 'nothing', '--key', published.keyFile, '--dns-server', dns.address]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /nothing\._domainkey\.example\.com: no TXT record\nexpected: nothing\._domainkey\.example\.com\. IN TXT "v=DKIM1; k=rsa; p=/);
    const broken = await run(['test', 'example.com', 'broken', '--key', published.keyFile, '--dns-server', dns.address]);
    assert.equal(broken.code, 1);
    const noKey = await run(['test', 'example.com', 'live', '--key', join(tempDir(), 'absent.pem'), '--dns-server', dns.address]);
    assert.equal(noKey.code, 1);
    assert.match(noKey.err, /absent\.pem: cannot read it/);
    assert.equal((await run(['test', 'example.com', 'live'])).code, 2, '--key is required');
  });
});
