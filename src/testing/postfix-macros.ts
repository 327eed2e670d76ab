/**
 * The macros the simulated MTA sends, the way Postfix chooses them: at each stage it looks up the
 * names of that stage's list — its `milter_*_macros` default, or the list the filter asked for in the
 * negotiation (SMFIF_SETSYMLIST replaces the default) — and sends those it has a value for
 * (milter.c, milter_macro_lookup). A macro the plugins did not ask for is therefore not sent, even
 * when the MTA knows it: a plugin reading `{client_addr}` without declaring it sees nothing behind a
 * stock Postfix, and must see nothing in the harness either.
 * @module
 */
import { POSTFIX_DEFAULT_MACROS, STAGE_MACRO_LIST, type ConnectEvent, type MacroListStage, type Negotiated } from '../milter/index.ts';

export { POSTFIX_DEFAULT_MACROS } from '../milter/index.ts';

/** The SMFIM_* number of a list, as the negotiation carries it. */
export const listNumber = (stage: MacroListStage): number => STAGE_MACRO_LIST[stage]!;


/** Test values for what a Postfix always knows about itself (its host name comes from the harness's `macros`). */
const MTA_DEFAULTS: Readonly<Record<string, string>> = { v: 'Postfix 3.9.0', daemon_addr: '192.0.2.25' };

/** What the simulated MTA knows at a given point of the session. */
export interface MacroFacts {
  /** Values set by the test (`TestKernelOptions.macros`), by canonical name; they win over derived ones. */
  configured: ReadonlyMap<string, string>;
  client?: ConnectEvent;
  sender?: string;
  auth?: string;
  recipient?: string;
  /** Known from the first accepted recipient on behind Postfix (smtpd_delay_open_until_valid_rcpt, its default), from MAIL on behind Sendmail. */
  queueId?: string;
  /** The Message-Id header's value, once the headers are read (Sendmail's `{msg_id}`). */
  msgId?: string;
}

/** `{auth_authen}` and `auth_authen` name the same macro, as the engine's store reads them. */
export function canonicalMacro(name: string): string {
  return name.length > 2 && name.startsWith('{') && name.endsWith('}') ? name.slice(1, -1) : name;
}

/**
 * A macro whose value is a fact of the session, the same behind Postfix and Sendmail: the client's
 * address and port, the SASL login, the envelope, the queue id, the message id. Undefined otherwise
 * (TLS macros — no TLS here —, {auth_author} — no AUTH= parameter —, and the routing-dependent
 * {mail_host} {mail_mailer} {rcpt_host} {rcpt_mailer}, which come from the MTA's transport tables or
 * rulesets that the harness does not have).
 */
export function sessionMacro(key: string, f: MacroFacts): string | undefined {
  const c = f.client;
  switch (key) {
    case 'client_addr':
      return c?.address;
    case 'client_port':
      return c?.port === undefined ? undefined : String(c.port);
    case 'auth_type':
      return f.auth === undefined ? undefined : 'PLAIN';
    case 'auth_authen':
      return f.auth;
    case 'mail_addr':
      return f.sender;
    case 'rcpt_addr':
      return f.recipient;
    case 'i':
      return f.queueId;
    case 'msg_id':
      return f.msgId;
    default:
      return undefined;
  }
}

/** Postfix's value of one macro (smtpd_milter.c, smtpd_milter_eval), or undefined when it has none. */
function lookup(name: string, f: MacroFacts): string | undefined {
  const key = canonicalMacro(name);
  const configured = f.configured.get(key);
  if (configured !== undefined) return configured;
  const c = f.client;
  // Postfix sends an unresolved client as `[address]` in CONNECT; its own name for it is `unknown`.
  const clientName = c && !(c.hostname.startsWith('[') && c.hostname.endsWith(']')) ? c.hostname : 'unknown';
  switch (key) {
    case 'daemon_name':
      return f.configured.get('j'); // milter_macro_daemon_name = $myhostname
    case 'v':
    case 'daemon_addr':
      return MTA_DEFAULTS[key];
    case '_':
      return c ? `${clientName} [${c.address ?? c.hostname}]` : undefined;
    case 'client_name':
    case 'client_ptr':
      return c ? clientName : undefined;
    case 'msg_id':
      return undefined; // Sendmail's, not Postfix's
    default:
      return sessionMacro(key, f);
  }
}

/**
 * The name/value pairs the MACRO packet of `stage` carries, as for {@link MacroStore.set}. `configured`
 * stands for main.cf's milter_*_macros where the test sets them (the defaults otherwise).
 */
export function postfixMacros(negotiated: Negotiated, stage: MacroListStage, facts: MacroFacts, configured: Partial<Record<MacroListStage, readonly string[]>> = {}): string[] {
  const asked = negotiated.reply.macros?.get(listNumber(stage));
  const names = asked === undefined ? (configured[stage] ?? POSTFIX_DEFAULT_MACROS[stage]) : asked.split(/[\s,]+/).filter(Boolean);
  const pairs: string[] = [];
  for (const name of names) {
    const value = lookup(name, facts);
    if (value !== undefined) pairs.push(name, value);
  }
  return pairs;
}
