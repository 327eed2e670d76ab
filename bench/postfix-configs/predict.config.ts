// bench/postfix.ts, target "predict": the predict plugin alone, shaped like the README's measured
// recommendation (new recipients, colleagues excluded, plus a recipient-rate backstop). Without
// ratelimit, the action is `tag` rather than `jail` (jail needs a ratelimit policy); the subject is the
// sender, since the benchmark's mail is not authenticated (by: 'saslUser' would skip every message).
import { defineConfig } from 'themis-milter';
import { SENDER_DOMAIN } from './mail.ts';

export default defineConfig({
  plugins: ['themis-plugin-predict'],
  policies: [
    {
      name: 'senders-new',
      predict: { by: 'sender', count: 'newRecipients', internalDomains: [SENDER_DOMAIN], timeframes: [1, 5, 10, 60], factor: 2, action: 'tag' },
    },
    { name: 'senders', predict: { by: 'sender', timeframes: [1, 5, 10, 60], factor: 2.5, action: 'tag' } },
  ],
});
