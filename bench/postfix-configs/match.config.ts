// bench/postfix.ts, target "match": policies that match on the source (sender, domain, client network)
// and on the destination (recipients), through groups, with negations. The benchmark's mail matches
// the first two; the third would refuse it (limit 0) if the matching were wrong.
import { defineConfig } from 'themis-milter';
import { HIGH_LIMIT, SENDER_DOMAIN } from './mail.ts';

export default defineConfig({
  plugins: ['themis-plugin-ratelimit'],
  groups: {
    internal: ['@example.test', 'postmaster@example.net'],
    partners: [`@${SENDER_DOMAIN}`, 'alice@partner.example', '127.0.0.0/8', '2001:db8::/32'],
  },
  policies: [
    { name: 'partners-in', priority: 1, match: { source: 'partners', destination: 'internal' }, ratelimit: { windows: HIGH_LIMIT, by: 'sender' } },
    { name: 'per-recipient', priority: 2, match: { source: ['@bench.example', '127.0.0.1'], destination: ['@example.test', '!@example.net'] }, ratelimit: { windows: HIGH_LIMIT, by: 'recipient' } },
    { name: 'strangers', priority: 3, match: { source: '!partners', destination: 'any' }, ratelimit: { windows: [{ limit: 0, per: '1h' }], by: 'sender' } },
  ],
});
