/**
 * DKIM cost per message, Themis's dkim plugin beside OpenDKIM's (Debian's `opendkim`), measured side by
 * side in one run, through the milter protocol (bench/dkim/client.ts, which plays Postfix as
 * bench/load.ts does and reads every modification):
 * - sign: a 20 KiB message from example.test, signed twice (two RSA-2048 keys, relaxed/relaxed: OpenDKIM
 *   2.11 has one signing algorithm per instance, so it cannot dual-sign RSA + Ed25519);
 * - verify: the same message carrying two valid signatures (made by Themis in the warm-up), the keys
 *   from a loopback DNS server (test/helpers/dns.ts), each verifier with its answer cache.
 * Five milters run for the whole run: themis sign, opendkim sign, themis verify, opendkim verify, and,
 * as the floor, the Themis kernel with one trivial plugin (bench/kernel.config.ts, no DKIM); the
 * cases are interleaved within each round, over several rounds, and the medians reported: messages/s,
 * the milter's CPU ms per message (/proc/PID/stat, all threads), latency, and Themis ÷ OpenDKIM.
 * Every message is checked: sign wants two DKIM-Signature headers inserted (one
 * s=r2026 and one s=s2026, both rsa-sha256), verify an Authentication-Results with two dkim=pass.
 *
 * Without /usr/sbin/opendkim only Themis runs (and the ratios are skipped).
 *
 * Usage: node bench/dkim.ts [--quick] [--messages N] [--rounds N] [-c N] [--json PATH]
 * Exit status: 0 when it ran and every message was signed/verified; 1 otherwise; 2 bad usage.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { canConnect, killAll, removeTempDir, stopChild, track, trackTempDir } from './baselines.ts';
import { runClient, type HeaderMod, type RunOptions, type RunResult } from './dkim/client.ts';
import { freePort } from '../test/helpers/process.ts';
import { startDnsServer } from '../test/helpers/dns.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const THEMIS_BIN = join(REPO, 'bin', 'themis.js');
const OPENDKIM = '/usr/sbin/opendkim';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    messages: { type: 'string' },
    rounds: { type: 'string' },
    connections: { type: 'string', short: 'c', default: '10' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (values.help) {
  process.stdout.write('Usage: node bench/dkim.ts [--quick] [--messages N (default 2000; --quick 300)] [--rounds N (default 5; --quick 1)] [-c CONNECTIONS (default 10)] [--json PATH]\n');
  process.exit(0);
}
const int = (v: string | undefined, d: number, name: string): number => {
  const n = v === undefined ? d : Number(v);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`dkim bench: --${name} must be a positive integer\n`);
    process.exit(2);
  }
  return n;
};
const MESSAGES = int(values.messages, values.quick ? 300 : 2000, 'messages');
const ROUNDS = int(values.rounds, values.quick ? 1 : 5, 'rounds');
const CONNECTIONS = int(values.connections, 10, 'connections');
const WARMUP = values.quick ? 200 : 500;
const MSGS_PER_CONN = 10;

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  });
}

// ---------------------------------------------------------------------------------------------
// Keys, DNS, the message

const dir = trackTempDir(mkdtempSync(join(tmpdir(), 'themis-bench-dkim-')));
// Two RSA-2048 keys: OpenDKIM 2.11 (Debian bookworm) signs Ed25519 only with `SignatureAlgorithm
// ed25519-sha256`, one algorithm per instance, so it cannot sign RSA + Ed25519 in one pass (with the
// default rsa-sha256 an Ed25519 key answers every message 451 4.7.0 "resource unavailable").
const zone: Record<string, { TXT: string[] }> = {};
for (const selector of ['r2026', 's2026']) {
  const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(dir, `${selector}.key`), k.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  zone[`${selector}._domainkey.example.test`] = { TXT: [`v=DKIM1; k=rsa; p=${(k.publicKey.export({ type: 'spki', format: 'der' }) as Buffer).toString('base64')}`] };
}
const dns = await startDnsServer(zone);

const SENDER = 'user0@example.test';
const RCPTS = Array.from({ length: 5 }, (_, i) => `rcpt${i}@example.net`);
const DATE = new Date().toUTCString().replace('GMT', '+0000');
const HEADERS: [string, string][] = [
  ['Received', `from client.example.test (client.example.test [192.0.2.10])\n\tby mx.example.test (Postfix) with ESMTP id 4D2C1B0A99\n\tfor <${RCPTS[0]}>; ${DATE}`],
  ['From', `Load Sender <${SENDER}>`],
  ['To', RCPTS.map((r) => `<${r}>`).join(', ')],
  ['Subject', 'dkim bench message'],
  ['Date', DATE],
  ['Message-ID', `<0.${process.pid}@bench.example.test>`],
  ['MIME-Version', '1.0'],
  ['Content-Type', 'text/plain; charset=us-ascii'],
  ['Content-Transfer-Encoding', '7bit'],
  ['X-Mailer', 'themis bench/dkim.ts'],
];
const BODY = (() => {
  const line = Buffer.from('The quick brown fox jumps over the lazy dog; milterload body filler 0123456789 abcdefghijklmnopqrstuvwxyz.\r\n', 'latin1');
  const n = 20 * 1024;
  const out = Buffer.alloc(n);
  for (let o = 0; o < n; o += line.length) line.copy(out, o, 0, Math.min(line.length, n - o));
  // The body ends with a line end (a truncated last line would be completed by the MTA anyway).
  out.write('\r\n', n - 2, 'latin1');
  return out;
})();

const dkimSigs = (mods: HeaderMod[]) => mods.filter((m) => m.name.toLowerCase() === 'dkim-signature');
const checkSign = (mods: HeaderMod[]): boolean => {
  const s = dkimSigs(mods);
  return s.length === 2 && s.every((m) => /\ba=rsa-sha256\b/.test(m.value)) && s.some((m) => /\bs=r2026\b/.test(m.value)) && s.some((m) => /\bs=s2026\b/.test(m.value));
};
const checkVerify = (mods: HeaderMod[]): boolean => {
  const ar = mods.filter((m) => m.name.toLowerCase() === 'authentication-results');
  return ar.length >= 1 && ar.reduce((n, m) => n + (m.value.match(/\bdkim=pass\b/g)?.length ?? 0), 0) === 2;
};

// ---------------------------------------------------------------------------------------------
// The milters

interface Milter {
  name: string;
  port: number;
  child: ChildProcess;
  pid: number;
  tail: string[];
}

async function start(name: string, command: string, args: (port: number) => string[], env: NodeJS.ProcessEnv = {}): Promise<Milter> {
  const port = await freePort();
  const child = track(spawn(command, args(port), { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
  const tail: string[] = [];
  const keep = (d: Buffer) => {
    for (const l of d.toString().split('\n')) if (l.trim()) tail.push(l);
    tail.splice(0, Math.max(0, tail.length - 20));
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) break;
    if (await canConnect({ port })) return { name, port, child, pid: child.pid!, tail };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${name} did not start:\n${tail.join('\n')}`);
}

const themis = (name: string, config: string) =>
  start(name, process.execPath, (port) => [THEMIS_BIN, 'start', '--config', join(REPO, 'bench', 'dkim', config), '--listen', `inet:${port}@127.0.0.1`, '--log-level', 'warn'], {
    THEMIS_BENCH_DKIM_DIR: dir,
    THEMIS_BENCH_DKIM_DNS: dns.address,
  });

/** OpenDKIM, in the foreground as this user, with a configuration of its own in the temporary folder. */
function opendkim(name: string, mode: 's' | 'v'): Promise<Milter> {
  writeFileSync(join(dir, 'KeyTable'), `rsa example.test:r2026:${join(dir, 'r2026.key')}\nrsa2 example.test:s2026:${join(dir, 's2026.key')}\n`);
  writeFileSync(join(dir, 'SigningTable'), '*@example.test rsa\n*@example.test rsa2\n');
  writeFileSync(join(dir, 'TestPublicKeys'), Object.entries(zone).map(([name, r]) => `${name} ${r.TXT[0]}\n`).join(''));
  // The verifier's keys: OpenDKIM's TestPublicKeys file (name, then the TXT record), not DNS. Debian's
  // opendkim resolves with libunbound; pointed at the loopback DNS server (ResolverConfiguration with a
  // forward-zone to 127.0.0.1@PORT and do-not-query-localhost: no, or Nameservers 127.0.0.1@PORT) it
  // sent no query at all ("key not found in DNS"), and under concurrency it re-parsed the Unbound file
  // per message from several threads at once ("syntax error", "stray ':'").
  return start(name, OPENDKIM, (port) => {
    const conf = join(dir, `opendkim-${mode}.conf`);
    writeFileSync(
      conf,
      [
        `Socket inet:${port}@127.0.0.1`,
        `Mode ${mode}`,
        'Syslog no',
        'Background no',
        'Canonicalization relaxed/relaxed',
        'AuthservID mx.example.test',
        `KeyTable file:${join(dir, 'KeyTable')}`,
        `SigningTable refile:${join(dir, 'SigningTable')}`,
        'MultipleSignatures yes',
        // The load comes from 192.0.2.10: internal for the signer, external (verified) for the verifier.
        mode === 's' ? 'InternalHosts 192.0.2.0/24' : 'InternalHosts 127.0.0.1',
        'RequireSafeKeys no',
        ...(mode === 'v' ? [`TestPublicKeys ${join(dir, 'TestPublicKeys')}`] : []),
        '',
      ].join('\n'),
    );
    return ['-f', '-x', conf];
  });
}

// ---------------------------------------------------------------------------------------------
// Run

interface Case {
  id: string;
  label: string;
  op: 'sign' | 'verify' | 'none';
  impl: 'themis' | 'opendkim';
  milter: Milter;
}

const base = (port: number): Omit<RunOptions, 'headers' | 'check'> => ({ port, connections: CONNECTIONS, messages: MESSAGES, msgsPerConn: MSGS_PER_CONN, sender: SENDER, rcpts: RCPTS, body: BODY });
/** A header value as the MTA hands it to the next milter: folds as LF + WSP. */
const asReceived = (v: string) => v.replace(/\r\n/g, '\n');

let failed = false;
const started: Milter[] = [];
try {
  const haveOpendkim = existsSync(OPENDKIM);
  const cases: Case[] = [];
  const add = async (id: string, label: string, op: Case['op'], impl: Case['impl'], m: Promise<Milter>) => {
    const milter = await m;
    started.push(milter);
    cases.push({ id, label, op, impl, milter });
  };
  await add('themis-sign', 'Themis sign', 'sign', 'themis', themis('themis-sign', 'sign.config.ts'));
  if (haveOpendkim) await add('opendkim-sign', 'OpenDKIM sign', 'sign', 'opendkim', opendkim('opendkim-sign', 's'));
  await add('themis-verify', 'Themis verify', 'verify', 'themis', themis('themis-verify', 'verify.config.ts'));
  if (haveOpendkim) await add('opendkim-verify', 'OpenDKIM verify', 'verify', 'opendkim', opendkim('opendkim-verify', 'v'));
  // The floor: the kernel with one trivial plugin (bench/kernel.config.ts), the sign case's message, no DKIM.
  await add('themis-none', 'Themis, no DKIM', 'none', 'themis', themis('themis-none', '../kernel.config.ts'));
  if (!haveOpendkim) console.log(`dkim: OpenDKIM skipped: ${OPENDKIM} not installed (apt-get install opendkim)`);

  // The verify message: Themis's two signatures on top of the same message, as the next MTA receives it.
  const signer = cases.find((c) => c.id === 'themis-sign')!;
  const first = await runClient({ ...base(signer.milter.port), connections: 1, messages: 1, headers: HEADERS, check: checkSign });
  if (first.ok !== 1) throw new Error(`Themis did not sign: ${JSON.stringify(first.sample)} ${first.errors.join('; ')}\n${signer.milter.tail.join('\n')}`);
  const signed: [string, string][] = [...dkimSigs(first.sample).sort((a, b) => b.index - a.index).map((m): [string, string] => [m.name, asReceived(m.value)]), ...HEADERS];
  const headersOf = (c: Case) => (c.op === 'verify' ? signed : HEADERS);
  const checkOf = (c: Case) => (c.op === 'sign' ? checkSign : c.op === 'verify' ? checkVerify : () => true);

  // Cross-check: Themis verifies OpenDKIM's signatures (OpenDKIM verifying Themis's is the verify case).
  const odSign = cases.find((c) => c.id === 'opendkim-sign');
  const themisVerify = cases.find((c) => c.id === 'themis-verify')!;
  if (odSign) {
    const od = await runClient({ ...base(odSign.milter.port), connections: 1, messages: 1, headers: HEADERS, check: checkSign });
    const odSigned: [string, string][] = [...dkimSigs(od.sample).sort((a, b) => b.index - a.index).map((m): [string, string] => [m.name, asReceived(m.value)]), ...HEADERS];
    const x = await runClient({ ...base(themisVerify.milter.port), connections: 1, messages: 1, headers: odSigned, check: checkVerify });
    const ar = x.sample.find((m) => m.name.toLowerCase() === 'authentication-results')?.value ?? '(none)';
    console.log(`cross-check: OpenDKIM signed ${od.ok === 1 ? 'twice (rsa-sha256, s=r2026 and s=s2026)' : 'NOT as expected'}; Themis verifying OpenDKIM's signatures: ${x.ok === 1 ? 'dkim=pass ×2' : `FAILED: ${ar.replace(/\s+/g, ' ')}`}`);
    if (od.ok !== 1 || x.ok !== 1) failed = true;
  }

  // Warm-up (JIT, thread pools, DNS caches), not recorded; it must already sign and verify.
  for (const c of cases) {
    const r = await runClient({ ...base(c.milter.port), messages: WARMUP, headers: headersOf(c), check: checkOf(c) });
    if (r.ok !== WARMUP) {
      const ar = r.sample.map((m) => `${m.kind} ${m.name}: ${m.value.replace(/\s+/g, ' ').slice(0, 200)}`).join('\n  ');
      throw new Error(`${c.label}: ${r.ok}/${WARMUP} messages ${c.op === 'sign' ? 'signed twice' : c.op === 'verify' ? 'with dkim=pass ×2' : 'accepted'}; ${r.errors.slice(0, 3).join('; ')}\n  first message's modifications:\n  ${ar || '(none)'}\n${c.milter.tail.join('\n')}`);
    }
  }
  const sample = (c: Case, r: RunResult) =>
    c.op === 'none' ? `${r.sample.length} modification(s)` : c.op === 'sign' ? dkimSigs(r.sample).map((m) => m.value.match(/\bs=\w+/)?.[0] + ' ' + m.value.match(/\ba=[\w-]+/)?.[0]).join(' + ') : r.sample.find((m) => m.name.toLowerCase() === 'authentication-results')?.value.replace(/\s+/g, ' ').slice(0, 160);

  const results = new Map<string, RunResult[]>(cases.map((c) => [c.id, []]));
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which implementation goes first, round by round.
    const order = round % 2 === 0 ? cases : [...cases].reverse();
    for (const c of order) {
      const r = await runClient({ ...base(c.milter.port), milterPid: c.milter.pid, headers: headersOf(c), check: checkOf(c) });
      results.get(c.id)!.push(r);
      if (r.ok !== MESSAGES) {
        failed = true;
        console.log(`${c.label}: round ${round + 1}: ${r.ok}/${MESSAGES} ok, ${r.checkFailed} not ${c.op === 'sign' ? 'signed twice' : 'dkim=pass ×2'}, errors: ${r.errors.slice(0, 3).join('; ')}`);
      }
      if (round === 0) console.log(`  ${c.label.padEnd(16)} first message: ${sample(c, r)}`);
    }
  }

  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const med = (id: string, f: (r: RunResult) => number | null) => median(results.get(id)!.map((r) => f(r) ?? NaN));
  console.log(`\nDKIM: ${MESSAGES} messages per run, ${ROUNDS} round(s), C=${CONNECTIONS}, ${MSGS_PER_CONN} msgs/session, 5 rcpts, 10 headers, 20 KiB body; medians`);
  console.log('case               msgs/s   CPU ms/msg   user ms/msg   p50 ms   p99 ms   per-round CPU ms/msg');
  for (const c of cases) {
    const rs = results.get(c.id)!;
    console.log(
      `${c.label.padEnd(16)} ${med(c.id, (r) => r.msgsPerS).toFixed(0).padStart(8)}   ${med(c.id, (r) => r.cpuMsPerMsg).toFixed(3).padStart(10)}   ${med(c.id, (r) => r.userMsPerMsg).toFixed(3).padStart(11)}   ${med(c.id, (r) => r.p50).toFixed(2).padStart(6)}   ${med(c.id, (r) => r.p99).toFixed(2).padStart(6)}   ${rs.map((r) => r.cpuMsPerMsg!.toFixed(3)).join(' ')}`,
    );
  }
  const ratios: Record<string, unknown> = {};
  for (const op of ['sign', 'verify'] as const) {
    const t = `themis-${op}`;
    const o = `opendkim-${op}`;
    if (!results.has(o)) continue;
    const cpu = med(t, (r) => r.cpuMsPerMsg) / med(o, (r) => r.cpuMsPerMsg);
    const rate = med(t, (r) => r.msgsPerS) / med(o, (r) => r.msgsPerS);
    const perRound = results.get(t)!.map((r, i) => r.cpuMsPerMsg! / results.get(o)![i].cpuMsPerMsg!);
    ratios[op] = { cpu, rate, perRound };
    console.log(`Themis ÷ OpenDKIM, ${op}: CPU per message ×${cpu.toFixed(2)} (per round ${perRound.map((x) => x.toFixed(2)).join(' ')}), msgs/s ×${rate.toFixed(2)}`);
  }
  if (values.json) {
    writeFileSync(
      values.json,
      JSON.stringify({ messages: MESSAGES, rounds: ROUNDS, connections: CONNECTIONS, cases: Object.fromEntries([...results].map(([id, rs]) => [id, rs.map(({ sample: _s, ...r }) => r)])), ratios }, null, 2) + '\n',
    );
  }
} catch (e) {
  failed = true;
  console.error(`dkim bench: ${(e as Error).message}`);
} finally {
  for (const m of started) await stopChild(m.child);
  await dns.close();
  removeTempDir(dir);
}
process.exit(failed ? 1 : 0);
