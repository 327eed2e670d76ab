/**
 * `themis check`: plays the MTA against a running milter (Themis or any other) and prints what it
 * negotiated and answered, stage by stage — the quickest way to see what a policy does to a message.
 * @module
 */
import { parseArgs } from 'node:util';
import { DEFAULT_LISTEN, MilterClient, isMilterError, type Transaction } from '../milter/index.ts';

/** Usage text of `themis check`. */
export const CHECK_USAGE = `Usage: themis check [options]

Sends one test transaction to a milter, as Postfix would, and prints every answer.

Options:
  --milter SPEC      the milter to test (default ${DEFAULT_LISTEN}; environment THEMIS_LISTEN)
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
  try {
    ({ values } = parseArgs({
      args,
      options: {
        milter: { type: 'string' },
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
  const spec = (values.milter as string | undefined) ?? process.env.THEMIS_LISTEN ?? DEFAULT_LISTEN;
  const ip = (values['client-ip'] as string | undefined) ?? '192.0.2.1';
  const headers: [string, string][] = [];
  for (const h of (values.header as string[] | undefined) ?? ['Subject: themis check']) {
    const colon = h.indexOf(':');
    if (colon <= 0) {
      process.stderr.write(`themis check: --header expects "Name: value", got ${JSON.stringify(h)}\n`);
      return 2;
    }
    headers.push([h.slice(0, colon).trim(), h.slice(colon + 1).trim()]);
  }
  const from = (values.from as string | undefined) ?? 'sender@example.org';
  const tx: Transaction = {
    connect: { hostname: (values['client-name'] as string | undefined) ?? `[${ip}]`, family: ip.includes(':') ? '6' : '4', port: 40000, address: ip, macros: { j: 'themis-check', '{daemon_name}': 'themis-check', '{client_addr}': ip } },
    helo: (values.helo as string | undefined) ?? 'client.example',
    from: { address: `<${from}>`, macros: values.auth ? { '{auth_type}': 'PLAIN', '{auth_authen}': values.auth as string, '{mail_addr}': from } : { '{mail_addr}': from } },
    to: ((values.to as string[] | undefined) ?? ['recipient@example.net']).map((a) => ({ address: `<${a}>`, macros: { '{rcpt_addr}': a } })),
    dataMacros: { i: 'CHECK00001' },
    headers,
    body: `${(values.body as string | undefined) ?? 'themis check test message'}\r\n`,
    eohMacros: { i: 'CHECK00001' },
    eomMacros: { i: 'CHECK00001' },
  };
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
    const refused = result.reply.action === 'reject' || result.reply.action === 'tempfail' || result.reply.action === 'discard';
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ milter: spec, negotiated: client.negotiated, ...result, modifications: result.modifications.map((m) => (m.type === 'replaceBody' ? { type: m.type, bytes: m.data.length } : m)) }, null, 2)}\n`);
    } else {
      const n = client.negotiated;
      const out = [
        `milter     ${spec}`,
        `negotiated version ${n.version}, actions 0x${n.actions.toString(16)}, protocol 0x${n.protocol.toString(16)}`,
        ...result.recipients.map((r, i) => `rcpt       ${tx.to[i] && typeof tx.to[i] !== 'string' ? (tx.to[i] as { address: string }).address : ''} → ${r ? r.action + (r.text ? ` (${r.text})` : '') : 'not asked'}`),
        `decision   ${result.reply.action} at ${result.stage}${result.reply.text ? ` — ${result.reply.text.replaceAll('\r\n', ' / ')}` : ''}`,
        ...result.modifications.map((m) => `modify     ${describe(m)}`),
      ];
      process.stdout.write(`${out.join('\n')}\n`);
    }
    return refused ? 3 : 0;
  } catch (err) {
    client.destroy();
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
