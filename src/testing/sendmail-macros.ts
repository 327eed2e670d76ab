/**
 * The macros the simulated MTA sends when it plays Sendmail (`createTestKernel({ mta: 'sendmail' })`),
 * the way Sendmail 8.14–8.18 chooses them (sendmail/milter.c):
 *
 * - Each stage has a list, `confMILTER_MACROS_*` in the .mc (Milter.macros.* in sendmail.cf); the
 *   stock ones are cf/m4/cfhead.m4's ({@link SENDMAIL_DEFAULT_MACROS}): none at DATA and EOH.
 * - A list the filter asks for in the negotiation (SMFIF_SETSYMLIST) replaces the configured list of
 *   that stage (milter_getsymlist): Sendmail then sends what the filter named, configured or not.
 *   Except at end of message, where 8.14–8.18 read the filter's own list only when the filter also
 *   sent one for EOH (milter_data tests MI_LFLAGS_SYM(SMFIM_EOH) before reading MilterMacros[SMFIM_EOM]):
 *   an EOM list alone is ignored (the configured EOM list is sent), an EOH list alone leaves EOM
 *   with no macros at all.
 * - A list with no names sends no MACRO packet; macros go with CONNECT, HELO, MAIL, RCPT, DATA (sent
 *   even when the filter skips DATA), EOH and end of message, never with a header or body chunk.
 * - Sendmail assigns the queue id `i` at MAIL, and knows `{msg_id}` once the headers are read: the
 *   Message-Id header's value, or the one it makes for a message without (`<$t.$i@$j>`).
 * @module
 */
import { SENDMAIL_DEFAULT_MACROS, type MacroListStage, type Negotiated } from '../milter/index.ts';
import { canonicalMacro, listNumber, sessionMacro, type MacroFacts } from './postfix-macros.ts';

export { SENDMAIL_DEFAULT_MACROS } from '../milter/index.ts';

/** Test values for what a Sendmail always knows about itself (its host name comes from the harness's `macros`). */
const MTA_DEFAULTS: Readonly<Record<string, string>> = { v: '8.18.1', daemon_name: 'MTA', daemon_addr: '192.0.2.25' };

const isLoopback = (address: string) => /^127\./.test(address) || address === '::1' || /^::ffff:127\./i.test(address);

/** Sendmail's value of one macro (daemon.c, main.c, srvrsmtp.c, headers.c), or undefined when it has none. */
function lookup(name: string, f: MacroFacts): string | undefined {
  const key = canonicalMacro(name);
  const configured = f.configured.get(key);
  if (configured !== undefined) return configured;
  const c = f.client;
  switch (key) {
    case 'v':
    case 'daemon_name':
    case 'daemon_addr':
      return MTA_DEFAULTS[key];
    case 'if_name':
      // The name of the interface address the client reached: the host's own name here.
      return f.configured.get('j');
    case 'if_addr': {
      // Left undefined for the loopback interface (daemon.c, getrequests).
      const addr = f.configured.get('daemon_addr') ?? MTA_DEFAULTS.daemon_addr;
      return isLoopback(addr) ? undefined : addr;
    }
    case '_':
      // getauthinfo: "name [address]", or the bare "[address]" when the client's name did not resolve.
      return c ? (c.hostname.startsWith('[') ? c.hostname : `${c.hostname} [${c.address ?? c.hostname}]`) : undefined;
    case 'client_name':
    case 'client_ptr':
      // RealHostName: the `[address]` form when unresolved (Postfix says `unknown`).
      return c?.hostname;
    case 'auth_ssf':
      // PLAIN without a security layer (no TLS here): 0; not defined for an anonymous client.
      return f.auth === undefined ? undefined : '0';
    default:
      return sessionMacro(key, f);
  }
}

/**
 * Sendmail's `{msg_id}`: the (last) Message-Id header's value less its leading white space
 * (headers.c), or for a message without one the id Sendmail makes itself, cf's `<$t.$i@$j>`: local
 * time as YYYYMMDDHHMM, the queue id, the host name.
 */
export function sendmailMessageId(headers: readonly (readonly [string, string])[], queueId: string, hostname: string | undefined, now = new Date()): string {
  const given = headers.findLast(([name]) => name.toLowerCase() === 'message-id');
  if (given) return given[1].replace(/^[ \t\r\n]+/, '');
  const p = (n: number) => String(n).padStart(2, '0');
  const t = `${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}${p(now.getHours())}${p(now.getMinutes())}`;
  return `<${t}.${queueId}@${hostname ?? 'localhost'}>`;
}

/** Splits a list as the .mc writes it (`j, _, {daemon_name}`) or as the negotiation carries it. */
export function macroNames(list: string | readonly string[]): string[] {
  return typeof list === 'string' ? list.split(/[\s,]+/).filter(Boolean) : [...list];
}

/** The names Sendmail sends with a stage: the filter's list, or the configured one (see the module doc for EOM). */
export function sendmailList(negotiated: Negotiated, stage: MacroListStage, configured: Partial<Record<MacroListStage, readonly string[]>> = {}): readonly string[] {
  const asked = negotiated.reply.macros;
  const own = (s: MacroListStage) => asked?.get(listNumber(s));
  // milter_data: the EOM list is the filter's when the filter sent an EOH list (sic), else the global one.
  const filtersOwn = stage === 'endOfMessage' ? own('endOfHeaders') !== undefined : own(stage) !== undefined;
  if (filtersOwn) return macroNames(own(stage) ?? '');
  return configured[stage] ?? SENDMAIL_DEFAULT_MACROS[stage];
}

/**
 * The name/value pairs of the MACRO packet Sendmail sends with `stage`, as for {@link MacroStore.set};
 * undefined when the stage's list is empty and Sendmail sends no packet at all.
 */
export function sendmailMacros(negotiated: Negotiated, stage: MacroListStage, facts: MacroFacts, configured?: Partial<Record<MacroListStage, readonly string[]>>): string[] | undefined {
  const names = sendmailList(negotiated, stage, configured);
  if (names.length === 0) return undefined;
  const pairs: string[] = [];
  for (const name of names) {
    const value = lookup(name, facts);
    if (value !== undefined) pairs.push(name, value);
  }
  return pairs;
}
