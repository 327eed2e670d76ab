// The configuration `npm start` runs with, and the documented example.
// Plugins are loaded by package name, by path relative to this file, or as imported objects; each
// policy field is owned by the plugin that claims it. The built-in ratelimit, spf, headers and monitor
// plugins are in plugins/, with predict, dkim and dmarc. As shipped this file demonstrates them without refusing
// legitimate mail: the monitor's dashboard on the status endpoint (http://127.0.0.1:8441/dashboard, which
// the start line names), SPF results as headers only, a rate limit far above any real sender, and a
// header rule that only adds a header. `themis init` writes the same, with more commented guidance;
// `themis config check` validates this file. The commented lines are further examples.
import { defineConfig } from 'themis-milter';

export default defineConfig({
  // listen: 'inet:8440@127.0.0.1',   // the default; --listen and THEMIS_LISTEN override it
  // store: { type: 'memory' },        // the default; a pool of daemons (or --workers) shares Redis instead:
  // store: { type: 'redis', url: 'redis://127.0.0.1:6379', keyPrefix: 'themis:' }, // THEMIS_REDIS_URL, THEMIS_REDIS_PASSWORD
  // log: { level: 'info' },           // pretty lines on a terminal, JSON otherwise
  // reload: { watch: true, resync: true }, // reload on file change and on `themis config resync`
  // http: { listen: 'inet:8441@127.0.0.1', token: '…16+ characters…' }, // status, /metrics, the dashboard; false disables it
  plugins: [
    'themis-plugin-monitor',                          // built in: dashboard at /dashboard, /api/*, themis stats
    'themis-plugin-spf',                              // built in: the `spf` policy field
    'themis-plugin-ratelimit',                        // built in: the `ratelimit` policy field
    'themis-plugin-headers',                          // built in: the `headers` policy field
    // 'themis-plugin-predict',                       // built in: the `predict` policy field (learned rates, new recipients)
    // { plugin: 'themis-plugin-dkim', options: { keys: [{ domain: 'example.com', selector: 'r2026', keyFile: '/etc/themis/dkim/r2026.example.com.key' }] } }, // `dkim`: verify, sign, ARC seal (themis dkim keygen)
    // 'themis-plugin-dmarc',                         // built in: the `dmarc` policy field, from spf's and dkim's results
    // 'themis-plugin-recipient-allowlist',           // by package name (see examples/)
    // { plugin: './my-plugin.ts', options: {}, priority: 10, onError: 'tempfail' },
  ],
  // groups: { internal: ['@example.com', '10.0.0.0/8'], vip: ['boss@example.com', 'sasl:alice'] },
  // pools: { edge: { servers: ['mx1.example.com'], fallbackToGlobal: false } },
  // outboundNetworks: ['10.0.0.0/8'],
  policies: [
    // Evaluated by ascending priority (ties by name); `match` absent = everything.
    // SPF of mail from outside, as headers only (Received-SPF; X-Themis-SPF on fail and softfail): nothing is refused.
    { name: 'spf-tag', match: { direction: 'inbound' }, spf: { mailFrom: { fail: 'tag', softfail: 'tag' }, helo: { fail: 'tag', softfail: 'tag' } } },
    // A backstop far above any real sender: past 1,000 messages a minute from one sender (or SASL login), "450 try later".
    { name: 'sender-rate', ratelimit: { windows: '1000/1m', by: 'sender+' } },
    // What a spam scanner in front flagged gets a header naming the policy that saw it; nothing else changes.
    { name: 'scanned', headers: [{ name: 'spam-flag', if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }] }] },
    // Stricter examples:
    // { name: 'trusted', priority: 1, type: 'bypass', match: { source: 'vip' } },
    // { name: 'spf-in', match: { direction: 'inbound' }, spf: { mailFrom: { fail: 'reject' } } },
    // Stolen accounts, as measured by `npm run eval:predict`: new recipients (colleagues excluded), and a rate backstop.
    // { name: 'submission-new', match: { direction: 'outbound' }, predict: { count: 'newRecipients', internalDomains: ['example.com'], timeframes: [1, 5, 10, 60], factor: 2, action: 'tempfail', shadow: true } },
    // { name: 'submission', match: { direction: 'outbound' }, predict: { timeframes: [1, 5, 10, 60], factor: 2.5, action: 'tempfail', shadow: true } },
    // With issue 23's signals on both (where the login comes from, what sends its mail, Reply-To: the quiet takeovers), add
    //   signals: { trustedNetworks: ['198.51.100.0/24'] }   // your webmail host: it is every user's network, not one login's
    // and maxPerMessage: 10 to submission-new (a newsletter is one message; a thief sends many).
    // The plugin option youngHours (default 6) is how long a login's new network or device stays new.
    // An alert (a header) for mail to many correspondents the login has not written to lately — address-book or internal
    // phishing, even from the owner's own machine — at about one more flagged sender-day per takeover caught (plugin README):
    // { name: 'submission-stale', match: { direction: 'outbound' }, predict: { count: 'newRecipients', knownWithin: 20, timeframes: [60], floor: { 60: 20 }, maxPerMessage: 10, factor: 2.5, signals: { trustedNetworks: ['198.51.100.0/24'] }, action: 'tag' } },
    // Mail authentication, one Authentication-Results for all: SPF, DKIM (and ARC), DMARC with the published policy as the action.
    // { name: 'auth-in', match: { direction: 'inbound' }, spf: { headers: { authenticationResults: true } }, dkim: { verify: { headers: { authenticationResults: true } } }, dmarc: { headers: { authenticationResults: true } } },
    // { name: 'sign-out', match: { direction: 'outbound' }, dkim: { sign: {}, verify: { enabled: false } } },
    // { name: 'scanned-strict', match: { direction: 'inbound' }, headers: [
    //   { name: 'spam-flag', if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true },
    //     then: [{ add: 'X-Themis-Policy', value: '{policy}' }, { change: 'Subject', value: '[SPAM] {value}' }] },
    //   { name: 'virus', if: { header: 'X-Virus', equals: 'infected' }, verdict: { action: 'quarantine' } }] },
    // { name: 'outbound', match: { direction: 'outbound' }, ratelimit: { windows: '100/1m,1000/1h', by: 'sender+', cost: 'recipient' } },
    // { name: 'inbound', match: { direction: 'inbound', destination: 'internal' }, allowlist: { recipients: ['@example.com'] } },
  ],
  // hookTimeout: 10_000,   // deadline of each plugin hook, in ms
  // onError: 'tempfail',   // verdict of a failing plugin that sets no onError of its own
  // mta: 'postfix',        // 'sendmail' behind Sendmail: DATA is then not answered (README, "Hooking Themis into Sendmail")
});
