// bench/postfix.ts, target "bypass": a bypass policy for the benchmark's sender ahead of a rate limit of
// 0 for everybody. The bypass answers as soon as it matches, without asking the plugin; were it not
// taken, every message would be refused and the row would fail its check.
import { defineConfig } from 'themis-milter';
import { SENDER_DOMAIN } from './mail.ts';

export default defineConfig({
  plugins: ['themis-plugin-ratelimit'],
  policies: [
    { name: 'trusted', priority: 1, type: 'bypass', match: { source: `@${SENDER_DOMAIN}` } },
    { name: 'everybody', priority: 5, ratelimit: { windows: [{ limit: 0, per: '1h' }], by: 'sender' } },
  ],
});
