/**
 * `themis check`: plays the MTA against a running milter (Themis or any other) and prints what it
 * negotiated and answered, stage by stage — the quickest way to see what a policy does to a message.
 * @module
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { DEFAULT_LISTEN, MilterClient, isMilterError, type Transaction } from '../milter/index.ts';
import type { DecisionTrace } from '../kernel/index.ts';
import { envConfigPath } from './env.ts';

/** Usage text of `themis check`. */
export const CHECK_USAGE = `Usage: themis check [FILE.eml] [options]

Sends one test transaction to a milter, as Postfix would, and prints every answer: to a running
Themis (or any milter), or with --local to a kernel built in this process from the configuration,
which also prints every plugin's verdict (the decision trace).

Options:
  --server SPEC      the milter to test (default ${DEFAULT_LISTEN}; environment THEMIS_LISTEN; also --milter)
  --local            build the kernel here from the configuration instead (in-memory store: nothing
                     a running daemon counted is touched)
  --config PATH      configuration for --local (default: found in the working directory; THEMIS_CONFIG)
  FILE.eml           the message to send (headers and body); default: a short test message
  --client-ip ADDR   client address in CONNECT (default 192.0.2.1)
  --client-name NAME client host name in CONNECT (default [ADDR])
  --helo NAME        HELO name (default client.example)
  --from ADDR        envelope sender (default sender@example.org; "" for the null sender)
  --to ADDR          recipient; repeat for several (default recipient@example.net)
  --auth LOGIN       pretend the client authenticated as LOGIN ({auth_authen} at MAIL)
  --header "N: V"    a header; repeat for several (default Subject: themis check)
  --body TEXT        body text (default a short line)
  --json             print the result as JSON
`;

/** Runs `themis check`; returns the exit code (0 accepted, 3 refused, 1 error, 2 usage). */
export async function check(args: string[]): Promise<number> {
  let values: Record<string, string | boolean | string[] | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        milter: { type: 'string' },
        server: { type: 'string' },
        local: { type: 'boolean' },
        config: { type: 'string' },
        'client-ip': { type: 'string' },
        'client-name': { type: 'string' },
        helo: { type: 'string' },
        from: { type: 'string' },
        to: { type: 'string', multiple: true },
        auth: { type: 'string' },
        header: { type: 'string', multiple: true },
        body: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`themis check: ${(err as Error).message}\n\n${CHECK_USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(CHECK_USAGE);
    return 0;
  }
  if (positionals.length > 1) {
    process.stderr.write(`themis check: one message file at most, got ${positionals.length}\n`);
    return 2;
  }
  const serverFlag = (values.server as string | undefined) ?? (values.milter as string | undefined);
  if (values.local && serverFlag) {
    process.stderr.write('themis check: --local and --server exclude each other\n');
    return 2;
  }
  let spec = serverFlag ?? process.env.THEMIS_LISTEN ?? DEFAULT_LISTEN;
  const ip = (values['client-ip'] as string | undefined) ?? '192.0.2.1';
  if (isIP(ip) === 0) {
    process.stderr.write(`themis check: --client-ip expects an IPv4 or IPv6 address, got ${JSON.stringify(ip)}\n`);
    return 2;
  }
  const headers: [string, string][] = [];
  let fileBody: string | undefined;
  if (positionals[0] !== undefined) {
    let text: string;
    try {
      text = readFileSync(positionals[0], 'latin1');
    } catch (err) {
      process.stderr.write(`themis check: cannot read ${positionals[0]}: ${(err as Error).message}\n`);
      return 1;
    }
    const parsed = parseMessage(text);
    headers.push(...parsed.headers);
    fileBody = parsed.body;
  }
  const headerOf = (name: string) => headers.find(([n]) => n.toLowerCase() === name)?.[1];
  for (const h of (values.header as string[] | undefined) ?? (positionals[0] !== undefined ? [] : ['Subject: themis check'])) {
    const colon = h.indexOf(':');
    if (colon <= 0) {
      process.stderr.write(`themis check: --header expects "Name: value", got ${JSON.stringify(h)}\n`);
      return 2;
    }
    headers.push([h.slice(0, colon).trim(), h.slice(colon + 1).trim()]);
  }
  const from = (values.from as string | undefined) ?? addressIn(headerOf('from')) ?? 'sender@example.org';
  const toDefault = headerOf('to')?.split(',').map(addressIn).filter((a): a is string => a !== undefined);
  const tx: Transaction = {
    connect: { hostname: (values['client-name'] as string | undefined) ?? `[${ip}]`, family: ip.includes(':') ? '6' : '4', port: 40000, address: ip, macros: { j: 'themis-check', '{daemon_name}': 'themis-check', '{client_addr}': ip } },
    helo: (values.helo as string | undefined) ?? 'client.example',
    from: { address: `<${from}>`, macros: values.auth ? { '{auth_type}': 'PLAIN', '{auth_authen}': values.auth as string, '{mail_addr}': from } : { '{mail_addr}': from } },
    to: ((values.to as string[] | undefined) ?? (toDefault?.length ? toDefault : ['recipient@example.net'])).map((a) => ({ address: `<${a}>`, macros: { '{rcpt_addr}': a } })),
    dataMacros: { i: 'CHECK00001' },
    headers,
    body: fileBody ?? `${(values.body as string | undefined) ?? 'themis check test message'}\r\n`,
    eohMacros: { i: 'CHECK00001' },
    eomMacros: { i: 'CHECK00001' },
  };
  let local: LocalKernel | undefined;
  if (values.local) {
    try {
      local = await startLocalKernel((values.config as string | undefined) ?? envConfigPath());
    } catch (err) {
      process.stderr.write(`themis check: ${(err as { code?: string }).code ? `${(err as { code?: string }).code}: ` : ''}${(err as Error).message}\n`);
      return 1;
    }
    spec = local.spec;
  }
  let client: MilterClient;
  try {
    client = await MilterClient.connect(spec, { timeout: 30_000 });
  } catch (err) {
    process.stderr.write(`themis check: cannot reach the milter at ${spec}: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const result = await client.sendMessage(tx);
    await client.quit();
    const trace = local ? await local.trace() : undefined;
    await local?.stop();
    const refused = result.reply.action === 'reject' || result.reply.action === 'tempfail' || result.reply.action === 'discard';
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ milter: local ? 'local' : spec, config: local?.file ?? undefined, negotiated: client.negotiated, ...result, trace, ...(local && { mistakes: local.mistakes }), modifications: result.modifications.map((m) => (m.type === 'replaceBody' ? { type: m.type, bytes: m.data.length } : m)) }, null, 2)}\n`);
    } else {
      const n = client.negotiated;
      const out = [
        local ? `milter     in-process kernel (${local.file ?? 'no configuration file'})` : `milter     ${spec}`,
        `negotiated version ${n.version}, actions 0x${n.actions.toString(16)}, protocol 0x${n.protocol.toString(16)}`,
        ...result.recipients.map((r, i) => `rcpt       ${tx.to[i] && typeof tx.to[i] !== 'string' ? (tx.to[i] as { address: string }).address : ''} → ${r ? r.action + (r.text ? ` (${r.text})` : '') : 'not asked'}`),
        `decision   ${result.reply.action} at ${result.stage}${result.reply.text ? ` — ${result.reply.text.replaceAll('\r\n', ' / ')}` : ''}`,
        ...result.modifications.map((m) => `modify     ${describe(m)}`),
        ...(trace ? [`policies   ${trace.policies.join(', ') || '(none)'}`, ...trace.entries.map((e) => `trace      ${e.stage} ${e.plugin} (${e.priority}) → ${e.action}${e.recipient ? ` <${e.recipient}>` : ''}${e.reason ? ` — ${e.reason}` : ''}${e.error ? ` [${e.error}]` : ''}`), `winner     ${winnerText(trace, result.stage, refused)}`] : []),
        ...(local?.mistakes ?? []).map((m) => `mistake    ${m.code}: ${m.message}`),
      ];
      process.stdout.write(`${out.join('\n')}\n`);
    }
    return refused ? 3 : 0;
  } catch (err) {
    client.destroy();
    await local?.stop();
    process.stderr.write(`themis check: ${isMilterError(err) ? `${err.code}: ` : ''}${(err as Error).message}\n`);
    return 1;
  }
}

function describe(m: import('../milter/index.ts').Modification): string {
  switch (m.type) {
    case 'addHeader':
      return `add header ${m.name}: ${m.value}`;
    case 'insertHeader':
      return `insert header at ${m.index} ${m.name}: ${m.value}`;
    case 'changeHeader':
      return m.value === '' ? `delete header ${m.name}[${m.index}]` : `change header ${m.name}[${m.index}]: ${m.value}`;
    case 'changeSender':
      return `change sender to ${m.address}${m.args ? ` ${m.args}` : ''}`;
    case 'addRecipient':
      return `add recipient ${m.address}${m.args ? ` ${m.args}` : ''}`;
    case 'deleteRecipient':
      return `delete recipient ${m.address}`;
    case 'replaceBody':
      return `replace body (${m.data.length} bytes)`;
    case 'quarantine':
      return `quarantine: ${m.reason}`;
  }
}

/** Splits an RFC 5322 message into unfolded headers and a CRLF body. */
export function parseMessage(text: string): { headers: [string, string][]; body: string } {
  const normalized = text.replace(/\r?\n/g, '\r\n');
  const split = normalized.indexOf('\r\n\r\n');
  const head = split < 0 ? normalized : normalized.slice(0, split);
  const body = split < 0 ? '' : normalized.slice(split + 4);
  const headers: [string, string][] = [];
  for (const line of head.split('\r\n')) {
    if (line === '') continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && headers.length > 0) {
      // A folded line continues the previous header; the milter sees the value with its line break.
      headers[headers.length - 1][1] += `\n${line}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    headers.push([line.slice(0, colon), line.slice(colon + 1).replace(/^ /, '')]);
  }
  return { headers, body };
}

function addressIn(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const angle = /<([^>]*)>/.exec(value);
  const bare = (angle ? angle[1] : value).trim();
  return bare.includes('@') || bare === '' ? bare : undefined;
}

/**
 * The trace's winner in words. Recipients refused at RCPT are each their own decision (the trace
 * lists them), not the message's: the message then has no winner, but was not accepted either.
 */
function winnerText(trace: DecisionTrace, stage: string, refused: boolean): string {
  if (trace.winner) return `${trace.winner.plugin} at ${trace.winner.stage}`;
  if (refused && stage === 'rcptTo') return '(none for the message: its recipients were refused one by one at rcptTo, see the trace)';
  return refused ? `(none in the trace: refused at ${stage})` : '(none: accepted)';
}

interface LocalKernel {
  spec: string;
  file: string | undefined;
  /** Plugin mistakes the kernel refused or replaced (the daemon logs them; the harness fails on them). */
  mistakes: { code: string; message: string }[];
  trace(): Promise<DecisionTrace | undefined>;
  stop(): Promise<void>;
}

/** A kernel built from the configuration, served on an ephemeral loopback port for one check. */
async function startLocalKernel(configPath: string | undefined): Promise<LocalKernel> {
  const { findConfig, loadConfig, kernelOptionsOf } = await import('../config.ts');
  const { Kernel } = await import('../kernel/index.ts');
  const { createMilterServer } = await import('../milter/index.ts');
  const file = findConfig(configPath);
  const config = file ? await loadConfig(file) : undefined;
  let last: DecisionTrace | undefined;
  let seen: () => void = () => undefined;
  const decided = new Promise<void>((resolve) => (seen = resolve));
  const mistakes: { code: string; message: string }[] = [];
  const kernel = await Kernel.create({ ...kernelOptionsOf(config), onDecision: (t) => ((last = t), seen()), onPluginMistake: (e) => void mistakes.push({ code: e.code, message: e.message }) });
  await kernel.ready();
  const server = createMilterServer(kernel.application);
  const spec = await server.listen('inet:0@127.0.0.1');
  return {
    spec,
    file,
    mistakes,
    trace: async () => {
      // The trace is written when the connection ends; wait for it briefly.
      await Promise.race([decided, new Promise((r) => setTimeout(r, 1_000))]);
      return last;
    },
    stop: async () => {
      await server.close({ drainTimeout: 1_000 });
      await kernel.shutdown();
    },
  };
}
