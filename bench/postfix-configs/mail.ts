// What the Postfix end-to-end benchmark (bench/postfix.ts) sends, shared with the configurations in
// this folder so that their policies match that mail — and accept all of it.

/** Envelope sender of every benchmark message (smtp-source -f, the latency client, sendmail -f). */
export const SENDER = 'sender@bench.example';
/** Its domain: the loopback DNS server publishes an SPF record that passes 127.0.0.1 for it. */
export const SENDER_DOMAIN = 'bench.example';
/** Envelope recipient: example.test is the throwaway Postfix's relay domain. */
export const RECIPIENT = 'rcpt@example.test';
/** The MTA's name, as `{j}` and the SPF authserv-id. */
export const MTA_NAME = 'mx.example.test';

/**
 * The loopback DNS server of the run (`127.0.0.1:PORT`), from `THEMIS_BENCH_DNS`, which bench/postfix.ts
 * sets. The fallback is loopback too: no lookup ever leaves 127.0.0.1.
 */
export const dnsServer = (): string => process.env.THEMIS_BENCH_DNS ?? '127.0.0.1:53';

/**
 * A limit no run reaches. The full run sends under 20,000 messages per target; a refused message
 * would show as a deferred or rejected row, not as a slower one.
 */
export const HIGH_LIMIT = '100000/1h';
