// bench/postfix.ts, target "allowlist": the example third-party plugin (examples/recipient-allowlist),
// loaded by package name, allowing the benchmark's recipient domain.
import { defineConfig } from 'themis-milter';

export default defineConfig({
  plugins: ['themis-plugin-recipient-allowlist'],
  policies: [{ name: 'inbound', allowlist: { recipients: ['@example.test', 'postmaster@example.net'] } }],
});
