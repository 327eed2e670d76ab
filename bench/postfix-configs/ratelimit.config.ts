// bench/postfix.ts, target "ratelimit": the ratelimit plugin alone, one policy counting each sender in
// the in-memory store, with a limit no run reaches.
import { defineConfig } from 'themis-milter';
import { HIGH_LIMIT } from './mail.ts';

export default defineConfig({
  plugins: ['themis-plugin-ratelimit'],
  policies: [{ name: 'senders', ratelimit: { windows: HIGH_LIMIT, by: 'sender' } }],
});
