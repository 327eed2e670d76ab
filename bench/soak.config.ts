// `npm run soak` (bench/soak.ts): the five built-in plugins on one inbound policy, on a Redis store,
// with short windows and retentions so that every per-subject key the run writes expires within
// about two minutes of the last message:
// - ratelimit by client network (/24), one 1-minute window nobody reaches: one key per network, TTL 1 min;
// - predict by sender, counting new recipients (shadow: decides and logs, never acts), retention 2 min:
//   a profile and a recipient memory per sender, TTL 2 min;
// - monitor with a 1-minute retention: minute counters live ≤ 3 min; its hourly top-N lists (three a
//   clock hour) live to the end of their hour plus the retention — a fixed handful, whatever the traffic;
// - SPF against the run's loopback DNS server (THEMIS_SOAK_DNS, set by bench/soak.ts; the fallback is
//   loopback too), which publishes `v=spf1 ip4:240.0.0.0/4 -all` for every sender domain: every message passes;
// - headers: the benchmark's spam-flag rule.
// bench/soak.ts passes --redis-url (its throwaway redis-server), which overrides the url below.
import { defineConfig } from 'themis-milter';

const dns = process.env.THEMIS_SOAK_DNS ?? '127.0.0.1:53';

export default defineConfig({
  store: { type: 'redis', url: 'redis://127.0.0.1:6379', keyPrefix: 'themis-soak:' },
  plugins: [
    'themis-plugin-ratelimit',
    { plugin: 'themis-plugin-spf', options: { dnsServers: [dns], deadline: 5_000, authservId: 'mx.example.test' } },
    'themis-plugin-headers',
    { plugin: 'themis-plugin-monitor', options: { retentionHours: 1 / 60 } },
    { plugin: 'themis-plugin-predict', options: { retentionDays: 2 / 1440 } },
  ],
  policies: [
    {
      name: 'inbound',
      match: { direction: 'inbound' },
      spf: { mailFrom: { fail: 'reject', softfail: 'tag' }, headers: { receivedSpf: true, authenticationResults: true } },
      headers: [
        {
          name: 'spam-flag',
          if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true },
          then: [{ add: 'X-Themis-Policy', value: '{policy}' }, { change: 'Subject', value: '[SPAM] {value}' }],
        },
      ],
      ratelimit: { windows: '1000000/1m', by: 'clientIp/24' },
      predict: { by: 'sender', count: 'newRecipients', timeframes: [1, 5], action: 'tag', shadow: true },
    },
  ],
});
