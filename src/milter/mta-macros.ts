/**
 * The macro lists MTAs send by default, per stage. A list a milter asks for in the negotiation
 * (SMFIF_SETSYMLIST) replaces the MTA's list of that stage, so a milter that wants one more macro
 * sends the default list with it added — it must know the defaults. Protocol knowledge, used by the
 * kernel's negotiation and by the test harness that plays the MTA.
 * @module
 */
import type { MacroListStage } from './negotiate.ts';

/** Postfix's defaults (`postconf -d milter_*_macros`), by the stage they are sent with. */
export const POSTFIX_DEFAULT_MACROS: Readonly<Record<MacroListStage, readonly string[]>> = {
  connect: ['j', '{daemon_name}', '{daemon_addr}', 'v', '_'],
  helo: ['{tls_version}', '{cipher}', '{cipher_bits}', '{cert_subject}', '{cert_issuer}'],
  mailFrom: ['i', '{auth_type}', '{auth_authen}', '{auth_author}', '{mail_addr}', '{mail_host}', '{mail_mailer}'],
  rcptTo: ['i', '{rcpt_addr}', '{rcpt_host}', '{rcpt_mailer}'],
  data: ['i'],
  endOfHeaders: ['i'],
  endOfMessage: ['i'],
};

/** Sendmail's stock lists (cf/m4/cfhead.m4, `confMILTER_MACROS_*`): none at DATA and end of headers. */
export const SENDMAIL_DEFAULT_MACROS: Readonly<Record<MacroListStage, readonly string[]>> = {
  connect: ['j', '_', '{daemon_name}', '{if_name}', '{if_addr}'],
  helo: ['{tls_version}', '{cipher}', '{cipher_bits}', '{cert_subject}', '{cert_issuer}'],
  mailFrom: ['i', '{auth_type}', '{auth_authen}', '{auth_ssf}', '{auth_author}', '{mail_mailer}', '{mail_host}', '{mail_addr}'],
  rcptTo: ['{rcpt_mailer}', '{rcpt_host}', '{rcpt_addr}'],
  data: [],
  endOfHeaders: [],
  endOfMessage: ['{msg_id}'],
};
