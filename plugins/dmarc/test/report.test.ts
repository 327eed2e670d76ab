// DMARC aggregate report data and `themis dmarc report`: messages through the kernel (spf, dkim and
// dmarc loaded, every record on a loopback DNS server, as in plugin.test.ts) are counted in the store;
// the command writes RFC 7489 XML that is well-formed and valid against the Appendix C schema (with
// xmllint when installed), with the right counts; the keys expire; the row cap holds; bad flags exit 2.
// The atomic operations' Lua scripts are proved equal to their in-memory twins on Redis (when installed).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { MemoryStore, RedisStore, type Store } from 'themis-milter';
import { atomicOperationContract, createTestKernel, redisAvailable, startRedis, type TestConnectionMessage } from 'themis-milter/testing';
import spf from 'themis-plugin-spf';
import dkim from 'themis-plugin-dkim';
import dmarc, { dmarcOptions } from '../src/index.ts';
import { dmarcCommand } from '../src/commands.ts';
import { DAY_MS, REPORT_READ, REPORT_ROW, fullIp, parseRowField, readReports, recordRows, reportKey, reportRowOf, reportXml, rowField, settleReports, utcDay, type PublishedPolicy, type ReportRow } from '../src/report.ts';
import { writeFileSync } from 'node:fs';
import { startDnsServer } from '../../../test/helpers/dns.ts';
import { mailauthSign, makeKey, sampleMessage, splitMessage, type TestKey } from '../../dkim/test/helpers/mail.ts';

const SPF = { TXT: ['v=spf1 ip4:192.0.2.0/24 -all'] };
const GOOD_IP = '192.0.2.25';
const BAD_IP = '198.51.100.7';
const V6_IP = '2001:db8::7';
const XSD = new URL('./fixtures/rfc7489.xsd', import.meta.url).pathname;

let xmllint = false;
try {
  execFileSync('xmllint', ['--version'], { stdio: 'ignore' });
  xmllint = true;
} catch {
  xmllint = false;
}

let dns: Awaited<ReturnType<typeof startDnsServer>>;
const keys: Record<string, TestKey> = {};
before(async () => {
  keys['example.com'] = makeKey('example.com', 's1', 'ed25519');
  dns = await startDnsServer({
    'example.com': SPF,
    '_dmarc.example.com': { TXT: ['v=DMARC1; p=reject; rua=mailto:dmarc@example.com'] },
    '_dmarc.pct0.example': { TXT: ['v=DMARC1; p=quarantine; pct=0; adkim=s'] },
    's1._domainkey.example.com': { TXT: [keys['example.com'].record] },
  });
});
after(() => dns.close());

const common = () => ({ dnsServers: [dns.address], dnsTimeout: 200, deadline: 2_000, authservId: 'mx.themis.test' });

async function kernel(store: Store, reports: Record<string, unknown>) {
  return createTestKernel({
    plugins: [{ plugin: dmarc, options: { ...common(), reports } }, { plugin: spf, options: common() }, { plugin: dkim, options: common() }],
    policies: [{ name: 'inbound', spf: {}, dkim: {}, dmarc: { actions: { reject: 'ignore', quarantine: 'ignore' } } }] as never,
    store,
  });
}

async function msg(from: string, options: { mailFrom?: string; ip?: string; signers?: string[] } = {}): Promise<TestConnectionMessage> {
  let raw: string | Buffer = sampleMessage(from);
  for (const d of options.signers ?? []) raw = await mailauthSign(raw, keys[d]);
  const { headers, body } = splitMessage(raw);
  return { client: { address: options.ip ?? BAD_IP }, helo: 'mx.sender.example', from: options.mailFrom ?? from.replace(/^.*</, '').replace(/>.*$/, ''), rcpt: ['bob@example.net'], headers, body };
}

/** A command context as the kernel gives it. */
function commandCtx(store: Store, reports: Record<string, unknown> = { enabled: true }) {
  const out: string[] = [];
  const err: string[] = [];
  const ctx = { store, storeType: 'redis' as const, policies: [], options: dmarcOptions.parse({ reports }), configFile: undefined, readStatus: async () => ({}), out: (x: string) => void out.push(x), err: (x: string) => void err.push(x) };
  return { ctx, out, err };
}

/** Well-formed, and valid against the RFC 7489 schema: by xmllint when installed, else by a structural check. */
function validate(file: string, diagnostic: (m: string) => void): void {
  if (xmllint) {
    execFileSync('xmllint', ['--noout', '--schema', XSD, file], { stdio: 'pipe' });
    return;
  }
  diagnostic('xmllint not installed (Debian: libxml2-utils): the XML is checked by a structural parse only, not against the XSD');
  const xml = readFileSync(file, 'utf8');
  const stack: string[] = [];
  for (const m of xml.replace(/<\?xml[^>]*\?>/, '').matchAll(/<(\/?)([a-z_]+)[^>]*?(\/?)>/g)) {
    if (m[3]) continue;
    if (m[1]) assert.equal(stack.pop(), m[2], `closing ${m[2]}`);
    else stack.push(m[2]);
  }
  assert.deepEqual(stack, [], 'every element closed');
  assert.doesNotMatch(xml.replace(/&(amp|lt|gt|quot|apos);/g, ''), /&/, 'no bare &');
}

/** The records of a report as [source_ip, count, disposition, dkim, spf]. */
function records(xml: string): string[][] {
  return [...xml.matchAll(/<record>[\s\S]*?<\/record>/g)].map((m) => {
    const v = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(m[0])?.[1] ?? '';
    const pe = /<policy_evaluated>([\s\S]*?)<\/policy_evaluated>/.exec(m[0])![1];
    const pv = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(pe)?.[1] ?? '';
    return [v('source_ip'), v('count'), pv('disposition'), pv('dkim'), pv('spf')];
  });
}

describe('dmarc aggregate reports', () => {
  it('messages through the kernel → themis dmarc report writes valid RFC 7489 XML with the right counts', async (t) => {
    const store = new MemoryStore();
    const k = await kernel(store, { enabled: true });
    // example.com (p=reject, rua): 2 × SPF aligned pass from GOOD_IP, 1 × DKIM aligned pass from BAD_IP,
    // 3 × fail from BAD_IP (unsigned), 1 × fail from an IPv6 address.
    for (let i = 0; i < 2; i++) await k.message(await msg('alice@example.com', { ip: GOOD_IP }));
    await k.message(await msg('alice@example.com', { signers: ['example.com'] }));
    for (let i = 0; i < 3; i++) await k.message(await msg('alice@example.com'));
    await k.message(await msg('alice@example.com', { ip: V6_IP }));
    // pct0.example (p=quarantine, pct=0): failing, sampled out → disposition none, reason sampled_out.
    await k.message(await msg('bob@pct0.example', { mailFrom: 'bob@example.com', ip: GOOD_IP }));
    // No DMARC record: nothing to report.
    await k.message(await msg('carol@norecord.example'));
    await settleReports();
    await k.close();

    const dir = mkdtempSync(join(tmpdir(), 'themis-dmarc-report-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const today = utcDay(Date.now());
    const { ctx, out, err } = commandCtx(store);
    assert.equal(await dmarcCommand.run(['report', '--from', today, '--to', today, '--org-name', 'Themis <Test> & Co', '--email', 'dmarc-reports@mx.themis.test', '--out', dir], ctx), 0, err.join(''));
    const files = readdirSync(dir).sort();
    const begin = Date.parse(`${today}T00:00:00Z`) / 1000;
    const end = begin + 86_399;
    assert.deepEqual(files, [`mx.themis.test!example.com!${begin}!${end}.xml`, `mx.themis.test!pct0.example!${begin}!${end}.xml`]);
    assert.match(out.join(''), /wrote .*example\.com!.*: example\.com, 4 rows, 7 messages/);
    assert.match(out.join(''), /asks for aggregate reports at mailto:dmarc@example\.com/);
    assert.match(out.join(''), /Nothing was sent/);

    for (const f of files) validate(join(dir, f), (m) => t.diagnostic(m));
    const xml = readFileSync(join(dir, files[0]), 'utf8');
    assert.match(xml, /<org_name>Themis &lt;Test&gt; &amp; Co<\/org_name>/, 'escaped');
    assert.match(xml, /<email>dmarc-reports@mx\.themis\.test<\/email>/);
    assert.match(xml, new RegExp(`<begin>${begin}</begin>\\s*<end>${end}</end>`));
    assert.match(xml, /<policy_published>\s*<domain>example\.com<\/domain>\s*<adkim>r<\/adkim>\s*<aspf>r<\/aspf>\s*<p>reject<\/p>\s*<sp>reject<\/sp>\s*<pct>100<\/pct>/);
    assert.deepEqual(
      records(xml).sort(),
      [
        [BAD_IP, '3', 'reject', 'fail', 'fail'],
        [BAD_IP, '1', 'none', 'pass', 'fail'],
        [GOOD_IP, '2', 'none', 'fail', 'pass'],
        [fullIp(V6_IP), '1', 'reject', 'fail', 'fail'],
      ].sort(),
    );
    assert.equal(fullIp(V6_IP), '2001:db8:0:0:0:0:0:7');
    // auth_results: the signature's domain, selector and result; SPF's domain, scope and result.
    assert.match(xml, /<dkim>\s*<domain>example\.com<\/domain>\s*<selector>s1<\/selector>\s*<result>pass<\/result>\s*<\/dkim>/);
    assert.match(xml, /<spf>\s*<domain>example\.com<\/domain>\s*<scope>mfrom<\/scope>\s*<result>pass<\/result>\s*<\/spf>/);
    assert.match(xml, /<spf>\s*<domain>example\.com<\/domain>\s*<scope>mfrom<\/scope>\s*<result>fail<\/result>\s*<\/spf>/);
    assert.match(xml, /<identifiers>\s*<envelope_from>example\.com<\/envelope_from>\s*<header_from>example\.com<\/header_from>/);

    const pct = readFileSync(join(dir, files[1]), 'utf8');
    assert.deepEqual(records(pct), [[GOOD_IP, '1', 'none', 'fail', 'fail']]);
    assert.match(pct, /<reason>\s*<type>sampled_out<\/type>\s*<\/reason>/);
    assert.match(pct, /<p>quarantine<\/p>\s*<sp>quarantine<\/sp>\s*<pct>0<\/pct>/);
    assert.match(pct, /<adkim>s<\/adkim>/);

    // --domain: one file; --json
    const one = commandCtx(store);
    const dir2 = mkdtempSync(join(tmpdir(), 'themis-dmarc-report-'));
    t.after(() => rmSync(dir2, { recursive: true, force: true }));
    assert.equal(await dmarcCommand.run(['report', '--from', today, '--to', today, '--domain', 'PCT0.example', '--email', 'r@x.example', '--out', dir2, '--json'], one.ctx), 0);
    assert.deepEqual(readdirSync(dir2), [`x.example!pct0.example!${begin}!${end}.xml`]);
    assert.equal(JSON.parse(one.out.join('')).reports[0].messages, 1);

    // Every key expires: retentionDays (31) + 1 day.
    const [h] = await store.atomic(REPORT_READ, [{ key: reportKey(today, 'example.com'), args: {} }]);
    assert.ok(h.ttlMs > 31 * DAY_MS && h.ttlMs <= 32 * DAY_MS, `ttl ${h.ttlMs}`);
    for await (const key of store.scanKeys('dmarc:')) {
      const [x] = await store.atomic(REPORT_READ, [{ key, args: {} }]);
      assert.ok(x.ttlMs > 0, `${key} has an expiry`);
    }
  });

  it('off by default: nothing is recorded', async () => {
    const store = new MemoryStore();
    const k = await kernel(store, {});
    await k.message(await msg('alice@example.com', { ip: GOOD_IP }));
    await settleReports();
    await k.close();
    assert.equal(store.size, 0);
    assert.deepEqual(dmarcOptions.parse({}).reports, { enabled: false, retentionDays: 31, maxRowsPerDay: 10_000 });
  });

  it('the row cap holds under 100,000 distinct source IPs: one key, the cap in rows, the rest counted and reported as dropped', async (t) => {
    const store = new MemoryStore();
    const policy: PublishedPolicy = { domain: 'example.com', adkim: 'r', aspf: 'r', p: 'reject', sp: 'reject', pct: 100 };
    const now = Date.parse('2026-03-01T12:00:00Z');
    const options = { retentionDays: 31, maxRowsPerDay: 1_000 };
    let dropped = 0;
    for (let b = 0; b < 100; b++) {
      const batch = Array.from({ length: 1_000 }, (_, i) => {
        const n = b * 1_000 + i;
        const row: ReportRow = { sourceIp: `10.${n >> 16}.${(n >> 8) & 255}.${n & 255}`, disposition: 'reject', dkim: 'fail', spf: 'fail', dkimResults: [], spfResult: { domain: 'spam.example', scope: 'mfrom', result: 'fail' } };
        return { domain: 'example.com', row, policy, now };
      });
      dropped += await recordRows(store, options, batch);
    }
    assert.equal(dropped, 99_000);
    assert.equal(store.size, 1, 'one key for the domain and day');
    const [h] = await store.atomic(REPORT_READ, [{ key: reportKey('2026-03-01', 'example.com'), args: {} }]);
    assert.equal(Object.keys(h.fields).filter((f) => f.startsWith('r:')).length, 1_000);
    assert.equal(h.fields.rows, '1000');
    assert.equal(h.fields.dropped, '99000');
    assert.equal(h.fields['o:reject,fail,fail'], '99000');
    assert.ok(h.ttlMs > 31 * DAY_MS);

    const [r] = await readReports(store, ['2026-03-01']);
    assert.equal(r.rows.length, 1_000);
    assert.equal(r.dropped, 99_000);
    const dir = mkdtempSync(join(tmpdir(), 'themis-dmarc-report-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const { ctx, out } = commandCtx(store, { enabled: true, maxRowsPerDay: 1_000 });
    assert.equal(await dmarcCommand.run(['report', '--from', '2026-03-01', '--to', '2026-03-01', '--out', dir, '--email', 'r@x.example'], ctx), 0);
    assert.match(out.join(''), /1000 rows, 1000 messages\n {2}99000 messages beyond the cap of 1000 rows per day are not in the report/);
    validate(join(dir, readdirSync(dir)[0]), (m) => t.diagnostic(m));
  });

  it('on Redis (with a keyPrefix), two daemons add to one report, capped, with expiring keys', { skip: redisAvailable() ? false : 'redis-server not installed' }, async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const a = new RedisStore({ url: redis.url, keyPrefix: 'themis:' });
    const b = new RedisStore({ url: redis.url, keyPrefix: 'themis:' });
    t.after(async () => {
      await a.close();
      await b.close();
    });
    const policy: PublishedPolicy = { domain: 'example.com', adkim: 'r', aspf: 'r', p: 'none', sp: 'none', pct: 100, rua: 'mailto:d@example.com' };
    const now = Date.parse('2026-03-02T08:00:00Z');
    const entry = (ip: string) => ({ domain: 'example.com', policy, now, row: { sourceIp: ip, disposition: 'none' as const, dkim: 'pass' as const, spf: 'fail' as const, dkimResults: [{ domain: 'example.com', selector: 's1', result: 'pass' as const }] } });
    const options = { retentionDays: 7, maxRowsPerDay: 2 };
    assert.equal(await recordRows(a, options, [entry('192.0.2.1'), entry('192.0.2.2')]), 0);
    assert.equal(await recordRows(b, options, [entry('192.0.2.1'), entry('192.0.2.3')]), 1);
    const [h] = await a.atomic(REPORT_READ, [{ key: reportKey('2026-03-02', 'example.com'), args: {} }]);
    assert.ok(h.ttlMs > 7 * DAY_MS && h.ttlMs <= 8 * DAY_MS, `ttl ${h.ttlMs}`);
    const dir = mkdtempSync(join(tmpdir(), 'themis-dmarc-report-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const { ctx, out } = commandCtx(b, { enabled: true, retentionDays: 7, maxRowsPerDay: 2 });
    assert.equal(await dmarcCommand.run(['report', '--from', '2026-03-01', '--to', '2026-03-03', '--out', dir, '--email', 'r@x.example'], ctx), 0);
    assert.match(out.join(''), /example\.com, 2 rows, 3 messages\n {2}1 messages beyond the cap/);
    const file = join(dir, readdirSync(dir)[0]);
    validate(file, (m) => t.diagnostic(m));
    assert.deepEqual(records(readFileSync(file, 'utf8')).sort(), [['192.0.2.1', '2', 'none', 'pass', 'fail'], ['192.0.2.2', '1', 'none', 'pass', 'fail']]);
  });

  it('an override of the disposition (ARC: trusted_forwarder) is the row\'s reason, with its comment; rows survive the round trip', async (t) => {
    const record = { raw: 'v=DMARC1; p=reject; rua=mailto:a@example.com,mailto:b@example.com', domain: 'example.com', p: 'reject' as const, sp: 'reject' as const, adkim: 'r' as const, aspf: 'r' as const, pct: 100 };
    const e = { result: 'fail' as const, domain: 'example.com', policy: 'reject' as const, disposition: 'none' as const, alignment: { spf: false, dkim: false }, dkimDomains: [], record, reason: 'arc', override: { type: 'trusted_forwarder' as const, comment: 'arc=pass as=lists.example <&>' } };
    const r = await reportRowOf(e, '::ffff:192.0.2.1', { result: 'pass', domain: 'lists.example', identity: 'mailfrom' }, undefined);
    assert.ok(r);
    assert.deepEqual(r.row.reason, { type: 'trusted_forwarder', comment: 'arc=pass as=lists.example <&>' });
    assert.equal(r.policy.rua, 'mailto:a@example.com,mailto:b@example.com');
    assert.deepEqual(parseRowField(rowField(r.row)), r.row);
    assert.equal(await reportRowOf({ ...e, record: undefined }, '192.0.2.1', undefined, undefined), undefined, 'no record, no report');
    const xml = reportXml({ domain: 'example.com', policy: r.policy, rows: [{ row: r.row, count: 1 }], overflow: [], dropped: 0, days: [] }, { orgName: 'o', email: 'e@x.example', reportId: 'i', begin: 0, end: 1 });
    assert.match(xml, /<reason>\s*<type>trusted_forwarder<\/type>\s*<comment>arc=pass as=lists\.example &lt;&amp;&gt;<\/comment>\s*<\/reason>/);
    assert.match(xml, /<source_ip>0:0:0:0:0:ffff:c000:201<\/source_ip>/);
    const dir = mkdtempSync(join(tmpdir(), 'themis-dmarc-report-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'r.xml'), xml);
    validate(join(dir, 'r.xml'), (m) => t.diagnostic(m));
  });

  it('bad usage exits 2 naming the flag; an unreadable store exits 1', async () => {
    const store = new MemoryStore();
    const cases: [string[], RegExp][] = [
      [[], /which command/],
      [['send'], /unknown command "send"/],
      [['report', '--to', '2026-03-01'], /--from YYYY-MM-DD is required/],
      [['report', '--from', '2026-03-01'], /--to YYYY-MM-DD is required/],
      [['report', '--from', '2026-02-30', '--to', '2026-03-01'], /--from expects a day YYYY-MM-DD, got "2026-02-30"/],
      [['report', '--from', '2026-03-01', '--to', 'tomorrow'], /--to expects a day/],
      [['report', '--from', '2026-03-02', '--to', '2026-03-01'], /--to \(2026-03-01\) is before --from/],
      [['report', '--from', '2025-01-01', '--to', '2026-03-01'], /spans 425 days/],
      [['report', '--from', '2026-03-01', '--to', '2026-03-01', '--domain', 'bad domain'], /--domain expects a domain name/],
      [['report', '--from', '2026-03-01', '--to', '2026-03-01', '--email', 'nobody'], /--email expects an address/],
      [['report', '--from', '2026-03-01', '--to', '2026-03-01', '--org-name', ' '], /--org-name must not be empty/],
      [['report', '--frm', '2026-03-01'], /Unknown option '--frm'/],
    ];
    for (const [args, why] of cases) {
      const { ctx, err } = commandCtx(store);
      assert.equal(await dmarcCommand.run(args, ctx), 2, args.join(' '));
      assert.match(err.join(''), why);
    }
    const broken = { ...store, scanKeys: async function* () { throw new Error('connection refused'); } } as unknown as Store;
    const { ctx, err } = commandCtx(broken);
    assert.equal(await dmarcCommand.run(['report', '--from', '2026-03-01', '--to', '2026-03-01'], ctx), 1);
    assert.match(err.join(''), /cannot read the store: connection refused/);
    const empty = commandCtx(store);
    assert.equal(await dmarcCommand.run(['report', '--from', '2026-03-01', '--to', '2026-03-01'], empty.ctx), 0);
    assert.match(empty.out.join(''), /no DMARC report data/);
  });
});

// The Lua scripts agree with their twins (memory, redis-server, a 3-master Cluster; skipped with a
// printed reason without redis-server and redis-cli).
const row = (ip: string) => `r:${JSON.stringify([ip, 'none', 'pass', 'fail', '', [['example.com', 's1', 'pass']], ['example.com', 'mfrom', 'fail']])}`;
atomicOperationContract(REPORT_ROW, {
  scenarios: {
    'rows up to the cap, then the overflow; the policy kept': (run) =>
      run([
        ...['192.0.2.1', '192.0.2.2', '192.0.2.1', '192.0.2.3', '192.0.2.4', '192.0.2.2'].map((ip) => ({ key: 'dmarc:rpt:2026-03-01:example.com', args: { field: row(ip), overflow: 'o:none,pass,fail', cap: 3, ttlMs: 60_000, policy: `{"p":"${ip}"}` } })),
        { key: 'dmarc:rpt:2026-03-01:other.example', args: { field: row('192.0.2.9'), overflow: 'o:none,pass,fail', cap: 1, ttlMs: 60_000, policy: '{}' } },
      ]),
    'read back what was written, with its expiry': async (run, store) => {
      await run([{ key: 'dmarc:rpt:d:x', args: { field: row('192.0.2.1'), overflow: 'o:none,pass,fail', cap: 1, ttlMs: 3_600_000, policy: '{}' } }, { key: 'dmarc:rpt:d:x', args: { field: row('192.0.2.2'), overflow: 'o:none,pass,fail', cap: 1, ttlMs: 3_600_000, policy: '{"p":"reject"}' } }]);
      const [h, missing] = await store.atomic(REPORT_READ, [{ key: 'dmarc:rpt:d:x', args: {} }, { key: 'dmarc:rpt:d:y', args: {} }]);
      return { fields: h.fields, ttl: h.ttlMs > 3_590_000 && h.ttlMs <= 3_600_000, missing };
    },
  },
});
