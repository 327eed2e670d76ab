// bench/postfix.ts, target "all": the five built-in plugins on one inbound policy, plus predict's two
// policies (with jail into the ratelimit policy, as its README recommends, in shadow mode), on a Redis
// store. bench/postfix.ts starts a throwaway redis-server and passes --redis-url, which overrides the
// url below; SPF asks the run's loopback DNS server.
import { defineConfig } from 'themis-milter';
import { HIGH_LIMIT, MTA_NAME, SENDER_DOMAIN, dnsServer } from './mail.ts';

export default defineConfig({
  store: { type: 'redis', url: 'redis://127.0.0.1:6379', keyPrefix: 'themis-bench:' },
  plugins: [
    'themis-plugin-ratelimit',
    { plugin: 'themis-plugin-spf', options: { dnsServers: [dnsServer()], deadline: 5_000, authservId: MTA_NAME } },
    'themis-plugin-headers',
    'themis-plugin-monitor',
    'themis-plugin-predict',
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
      ratelimit: { windows: HIGH_LIMIT, by: 'clientIp/24' },
    },
    {
      name: 'senders-new',
      predict: { by: 'sender', count: 'newRecipients', internalDomains: [SENDER_DOMAIN], timeframes: [1, 5, 10, 60], factor: 2, action: 'jail', jail: { policy: 'senders' }, shadow: true },
    },
    {
      name: 'senders',
      ratelimit: { windows: HIGH_LIMIT, by: 'sender' },
      predict: { by: 'sender', timeframes: [1, 5, 10, 60], factor: 2.5, action: 'jail', shadow: true },
    },
  ],
});
