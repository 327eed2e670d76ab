/**
 * The starter configuration `themis init` writes: every section Themis knows, each with why it is
 * there. Left uncommented is what a first start needs and what shows the built-in plugins at work
 * without refusing legitimate mail — the same as the repository's themis.config.ts (what `npm start`
 * runs): a loopback socket, the in-memory store, the monitor's dashboard on the status endpoint, SPF
 * results as headers only, a rate limit far above any real sender, and a header rule that only adds a
 * header.
 * @module
 */

/** The text of the starter `themis.config.ts`. */
export const STARTER_CONFIG = `// Themis configuration, written by \`themis init\`.
// Check it with \`themis config check\`; run with \`themis start\` (or the systemd unit).
// Everything commented out below is optional: uncomment what you need.
import { defineConfig } from 'themis-milter';

export default defineConfig({
  // The socket Postfix connects to (libmilter syntax: inet:PORT@HOST, inet6:PORT@[ADDR], unix:/path).
  // Loopback only, so no other host can talk to the milter; --listen and THEMIS_LISTEN override it.
  // In Postfix's main.cf the same socket is written inet:127.0.0.1:8440.
  listen: 'inet:8440@127.0.0.1',

  // Where plugins keep counters and state (rate limits, blocks). The in-memory store is enough for
  // a single MTA, but it is lost at every restart and not shared between servers.
  store: { type: 'memory' },
  // Several MTAs sharing limits, or state that survives restarts: use Redis
  // (THEMIS_REDIS_URL and THEMIS_REDIS_PASSWORD keep secrets out of this file).
  // store: { type: 'redis', url: 'redis://127.0.0.1:6379', keyPrefix: 'themis:' },
  // Redis behind Sentinel (automatic failover):
  // store: { type: 'redis', sentinel: { name: 'mymaster', nodes: ['10.0.0.1:26379'] }, keyPrefix: 'themis:' },
  // Redis Cluster (data sharded over several nodes):
  // store: { type: 'redis', cluster: { nodes: ['10.0.0.1:7000'] }, keyPrefix: 'themis:' },

  // JSON log lines on stdout (journald keeps them under systemd). 'debug' shows every stage;
  // --log-level and THEMIS_LOG_LEVEL override it.
  // log: { level: 'info' },

  // Apply edits of this file without a restart (also on SIGHUP: systemctl reload themis), so
  // Postfix never loses its milter while you change a policy.
  // reload: { watch: true },

  // The status endpoint: /status (themis status), /metrics (Prometheus), /healthz, and the pages of
  // plugins, such as the monitor's dashboard — http://127.0.0.1:8441/dashboard, which the start line
  // names. Loopback by default; a token (16+ characters) is then required everywhere but /healthz
  // (THEMIS_HTTP_TOKEN keeps it out of this file). false disables the endpoint.
  // http: { listen: 'inet:8441@127.0.0.1', token: '…16+ characters…' },
  // http: false,

  // Plugins, in load order: by npm package name, or by path relative to this file. With none,
  // Themis accepts every message. The four below show what Themis does without refusing good mail.
  plugins: [
    'themis-plugin-monitor',        // a dashboard on the status endpoint (/dashboard), /api/*, themis stats
    'themis-plugin-spf',            // the \`spf\` policy field: SPF checks and their verdicts
    'themis-plugin-ratelimit',      // the \`ratelimit\` policy field: limits per sender, login, IP…
    'themis-plugin-headers',        // the \`headers\` policy field: header rules
    // 'themis-plugin-predict',     // the \`predict\` policy field: each sender's learned rate, new recipients
    // 'themis-plugin-recipient-allowlist',
    // { plugin: './plugins/local.ts', options: {}, priority: 10, onError: 'tempfail' },
  ],

  // Named sets of addresses that policies refer to: @domain, user@domain, IPs and CIDRs,
  // sasl:LOGIN (sasl:* = any authenticated client). One list to edit instead of every policy.
  // groups: { internal: ['@example.com', '10.0.0.0/8'], vip: ['boss@example.com', 'sasl:alice'] },

  // Policies that apply only on some MTAs (matched on Postfix's {j}, its myhostname), e.g. the
  // inbound MXes versus the submission servers.
  // pools: { edge: { servers: ['mx1.example.com'], fallbackToGlobal: false } },

  // Clients whose mail counts as outbound even without SMTP AUTH (webmail, application servers).
  // outboundNetworks: ['10.0.0.0/8'],

  // Which rules apply to which mail. Evaluated by ascending priority (ties by name); \`match\`
  // absent = everything; each other field belongs to the plugin that claims it.
  policies: [
    // SPF of mail from outside, as headers only (Received-SPF; X-Themis-SPF on fail and softfail):
    // nothing is refused. Once the headers look right, make a fail a refusal: mailFrom: { fail: 'reject' }.
    { name: 'spf-tag', match: { direction: 'inbound' }, spf: { mailFrom: { fail: 'tag', softfail: 'tag' }, helo: { fail: 'tag', softfail: 'tag' } } },
    // A backstop far above any real sender: past 1,000 messages a minute from one sender (or SASL
    // login), "450 try later". Watch the dashboard, then tighten it.
    { name: 'sender-rate', ratelimit: { windows: '1000/1m', by: 'sender+' } },
    // What a spam scanner in front flagged gets a header naming the policy that saw it; nothing else changes.
    { name: 'scanned', headers: [{ name: 'spam-flag', if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }] }] },
    // Trusted senders skip every check:
    // { name: 'trusted', priority: 1, type: 'bypass', match: { source: 'vip' } },
    // Mail your users send (authenticated, or from outboundNetworks):
    // { name: 'outbound', priority: 5, match: { direction: 'outbound' }, ratelimit: { /* … */ } },
    // Mail arriving for your domains; stopHere ends evaluation when it matches:
    // { name: 'inbound', priority: 5, match: { direction: 'inbound', destination: 'internal' }, stopHere: true },
    // React harder to what a spam scanner wrote (themis-plugin-headers):
    // { name: 'scanned-strict', priority: 6, match: { direction: 'inbound' }, headers: [
    //   { name: 'spam-flag', if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true },
    //     then: [{ add: 'X-Themis-Policy', value: '{policy}' }, { change: 'Subject', value: '[SPAM] {value}' }] }] },
    // Stolen accounts (themis-plugin-predict): a sender suddenly mailing addresses it never wrote to;
    // watch it in shadow mode first (\`themis predict show <login>\`):
    // { name: 'submission-new', priority: 7, match: { direction: 'outbound' },
    //   predict: { count: 'newRecipients', internalDomains: ['example.com'], timeframes: [1, 5, 10, 60], factor: 2, shadow: true } },
    // For the stolen accounts that write like their owner, add to that predict field
    //   maxPerMessage: 10, signals: { trustedNetworks: ['198.51.100.0/24'] }   // your webmail host
    // (signals also to a rate backstop's): where the login comes from, what sends its mail, its Reply-To
    // (the predict plugin's README).
  ],

  // A plugin hook that takes longer than this (ms) counts as failed: Postfix waits for the milter,
  // and a remote client gives up after a few minutes.
  // hookTimeout: 10_000,

  // What a failing plugin decides when it sets nothing itself: 'tempfail' asks the client to retry
  // later (nothing is lost), 'accept' lets mail through unchecked, 'reject' refuses it for good.
  // onError: 'tempfail',

  // The MTA in front of Themis: 'postfix' (default) or 'sendmail'. It shapes the milter negotiation:
  // Postfix needs DATA answered, Sendmail over TCP is faster without (README, "Hooking Themis into Sendmail").
  // mta: 'postfix',
});
`;
