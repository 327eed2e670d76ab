/**
 * The "Sendmail end to end" section of the benchmark: the latency Themis adds behind a real Sendmail
 * 8.17 (the private one the tests run, `.ci/install-test-sendmail`), over TCP (the default negotiation,
 * shaped for Postfix, and `mta: 'sendmail'`, bench/sendmail.config.ts) and over a UNIX socket, beside
 * the C libmilter null milter over TCP.
 *
 * One throwaway Sendmail per target (`test/helpers/sendmail.ts`: its own .cf, queue, port and sink),
 * and one without a milter as the reference. For each target, a session to it and one to the
 * reference send messages alternately (bench/postfix.ts's paired latency client), timing MAIL → 250
 * and end of data → 250 and the whole transaction (MAIL … 250 after the data); the added latency is
 * the target's p50 minus the reference's.
 *
 * Why TCP costs ~40 ms: Sendmail writes every milter packet on its own, and a macro packet is never
 * answered (the protocol has no answer for it), so Nagle holds the command that follows until the
 * filter's kernel sends its delayed ACK. A UNIX socket has no Nagle. libmilter waits the same. Each
 * answered command waits: the default negotiation answers DATA and end of message (two waits per
 * message), `mta: 'sendmail'` end of message only (one), the C milter every stage (three: MAIL, DATA
 * and end of message are preceded by macro packets).
 *
 * Checks: Themis over a UNIX socket adds ≤ 1 ms p50 at end of data (s-unix); over TCP, `mta:
 * 'sendmail'` adds ≤ 0.6 × what the default negotiation adds to a whole transaction (s-tcp).
 *
 * Usage: node bench/sendmail.ts [--quick] [--messages N] [--json PATH]
 * Exit status: 0 the check passed or was skipped, 1 it failed or the run failed, 2 bad usage.
 * @module
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sendmailAvailable, sendmailUnavailableReason, startSendmail, type SendmailInstance } from '../test/helpers/sendmail.ts';
import { freePort } from '../test/helpers/process.ts';
import { canConnect, findOrBuildC, killAll, removeTempDir, stopChild, track, trackTempDir } from './baselines.ts';
import { latencyPaired, percentiles } from './postfix.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const THEMIS_BIN = join(REPO, 'bin', 'themis.js');

/** One measured target. */
export interface SendmailLatencyRow {
  target: string;
  /** The milter as Sendmail's `S=` names it. */
  milter: string;
  /** p50 ms, MAIL → 250 and end of data → 250, and what it adds over no milter alongside. */
  mail: number;
  mailAdded: number;
  eod: number;
  eodAdded: number;
  /** p50 ms of the whole transaction (MAIL … 250 after the data: MAIL, RCPT, DATA and the data), and what it adds. */
  transaction: number;
  transactionAdded: number;
  errors: number;
}

/** A check, as bench/run.ts collects them. */
export interface SendmailCheck {
  id: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  text: string;
}

/** Everything measured. */
export interface SendmailBenchResult {
  messages: number;
  rows: SendmailLatencyRow[];
  skipped: Record<string, string>;
  checks: SendmailCheck[];
}

async function waitListening(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not start listening`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs the section; prints as it goes. */
export async function runSendmailBench(opts: { quick?: boolean; messages?: number; print?: (line: string) => void } = {}): Promise<SendmailBenchResult> {
  const print = opts.print ?? ((line: string) => process.stdout.write(line + '\n'));
  const messages = opts.messages ?? (opts.quick ? 40 : 200);
  const skipped: Record<string, string> = {};
  const rows: SendmailLatencyRow[] = [];
  if (!sendmailAvailable()) {
    skipped.sendmail = sendmailUnavailableReason() ?? 'not available';
    return { messages, rows, skipped, checks: [{ id: 's', status: 'SKIP', text: `Sendmail end to end: ${skipped.sendmail}` }] };
  }
  // Sendmail refuses a milter socket in a world-writable folder (/tmp): the socket lives under /run.
  const sockDir = trackTempDir(mkdtempSync('/run/themis-bench-sm-'));
  const sock = join(sockDir, 'themis.sock');
  const tcpPort = await freePort();
  // No plugin (the repository's themis.config.ts demonstrates the plugins: SPF would query DNS).
  const noPlugin = join(REPO, 'bench', 'postfix-configs', 'none.config.ts');
  const themisTcp = track(spawn(process.execPath, [THEMIS_BIN, 'start', '--config', noPlugin, '--listen', `inet:${tcpPort}@127.0.0.1`, '--http', 'off', '--log-level', 'warn'], { cwd: REPO, stdio: 'ignore' }));
  const themisUnix = track(spawn(process.execPath, [THEMIS_BIN, 'start', '--config', noPlugin, '--listen', `unix:${sock}`, '--http', 'off', '--log-level', 'warn'], { cwd: REPO, stdio: 'ignore' }));
  // The same configuration with mta: 'sendmail' (DATA left unanswered), over TCP.
  const shapedPort = await freePort();
  const themisShaped = track(spawn(process.execPath, [THEMIS_BIN, 'start', '--config', join(REPO, 'bench', 'sendmail.config.ts'), '--listen', `inet:${shapedPort}@127.0.0.1`, '--http', 'off', '--log-level', 'warn'], { cwd: REPO, stdio: 'ignore' }));
  const targets: { target: string; milter: string }[] = [];
  const instances: SendmailInstance[] = [];
  try {
    await waitListening(() => canConnect({ port: tcpPort }), 'themis (TCP)');
    await waitListening(async () => existsSync(sock) && canConnect({ path: sock }), 'themis (UNIX socket)');
    await waitListening(() => canConnect({ port: shapedPort }), "themis (TCP, mta: 'sendmail')");
    targets.push({ target: 'themis tcp', milter: `inet:${tcpPort}@127.0.0.1` }, { target: 'themis tcp sm', milter: `inet:${shapedPort}@127.0.0.1` }, { target: 'themis unix', milter: `unix:${sock}` });
    const c = findOrBuildC(resolve(process.env.THEMIS_SHARED_BENCH ?? join(REPO, '..', 'shared', 'bench')));
    if ('skip' in c) skipped.c = c.skip;
    else {
      const cPort = await freePort();
      track(spawn(c.bin, [String(cPort)], { stdio: 'ignore' }));
      await waitListening(() => canConnect({ port: cPort }), 'the C null milter');
      targets.push({ target: 'c tcp', milter: `inet:${cPort}@127.0.0.1` });
    }
    const reference = await startSendmail({});
    instances.push(reference);
    for (const t of targets) {
      const sm = await startSendmail({ milter: t.milter });
      instances.push(sm);
      const { ref, target } = await latencyPaired(reference.smtpPort, sm.smtpPort, messages, 1000);
      const p = (xs: number[]) => percentiles(xs).p50;
      const row: SendmailLatencyRow = { ...t, mail: p(target.mail), mailAdded: p(target.mail) - p(ref.mail), eod: p(target.eod), eodAdded: p(target.eod) - p(ref.eod), transaction: p(target.transaction), transactionAdded: p(target.transaction) - p(ref.transaction), errors: target.errors + ref.errors };
      rows.push(row);
      print(`sendmail ${t.target.padEnd(12)} ${t.milter.padEnd(42)} MAIL p50 ${row.mail.toFixed(2)} (+${row.mailAdded.toFixed(2)}) ms  end of data p50 ${row.eod.toFixed(2)} (+${row.eodAdded.toFixed(2)}) ms  transaction p50 ${row.transaction.toFixed(2)} (+${row.transactionAdded.toFixed(2)}) ms  errors ${row.errors}`);
    }
  } finally {
    for (const i of instances) await i.stop().catch(() => undefined);
    await Promise.all([themisTcp, themisShaped, themisUnix].map((child) => stopChild(child)));
    removeTempDir(sockDir);
  }
  const unix = rows.find((r) => r.target === 'themis unix');
  const checks: SendmailCheck[] = [
    unix
      ? { id: 's-unix', status: unix.eodAdded <= 1 && unix.errors === 0 ? 'PASS' : 'FAIL', text: `Sendmail end to end: Themis over a UNIX socket adds ≤ 1 ms p50 at end of data: +${unix.eodAdded.toFixed(2)} ms (MAIL +${unix.mailAdded.toFixed(2)} ms), ${unix.errors} errors` }
      : { id: 's-unix', status: 'FAIL', text: 'Sendmail end to end: the UNIX-socket row was not measured' },
  ];
  // Over TCP every answered command behind an unanswered macro packet waits for a delayed ACK (~40 ms):
  // Postfix-shaped, DATA and end of message wait; shaped for Sendmail, end of message only.
  const tcp = rows.find((r) => r.target === 'themis tcp');
  const shaped = rows.find((r) => r.target === 'themis tcp sm');
  checks.push(
    tcp && shaped
      ? { id: 's-tcp', status: shaped.transactionAdded <= 0.6 * tcp.transactionAdded && shaped.errors === 0 ? 'PASS' : 'FAIL', text: `Sendmail end to end: over TCP, mta: 'sendmail' waits once per message, not twice (added transaction p50 ≤ 0.6 × the Postfix-shaped negotiation's): +${shaped.transactionAdded.toFixed(2)} ms vs +${tcp.transactionAdded.toFixed(2)} ms, ${shaped.errors} errors` }
      : { id: 's-tcp', status: 'FAIL', text: 'Sendmail end to end: a TCP row was not measured' },
  );
  return { messages, rows, skipped, checks };
}

async function main(argv: string[]): Promise<number> {
  let quick = false;
  let messages: number | undefined;
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--messages') messages = Number(argv[++i]);
    else if (a === '--json') json = argv[++i];
    else {
      process.stderr.write(`bench/sendmail.ts: unknown option ${a}\nUsage: node bench/sendmail.ts [--quick] [--messages N] [--json PATH]\n`);
      return 2;
    }
  }
  const r = await runSendmailBench({ quick, messages });
  for (const [k, v] of Object.entries(r.skipped)) process.stdout.write(`skipped ${k}: ${v}\n`);
  for (const c of r.checks) process.stdout.write(`${c.status} (${c.id}) ${c.text}\n`);
  if (json) {
    mkdirSync(dirname(json), { recursive: true });
    writeFileSync(json, JSON.stringify(r, null, 1) + '\n');
  }
  return r.checks.some((c) => c.status === 'FAIL') ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.once('exit', killAll);
  main(process.argv.slice(2)).then(
    (code) => {
      killAll();
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`bench/sendmail.ts: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      killAll();
      process.exitCode = 1;
    },
  );
}
