// bench/dkim.ts, case "Themis verify": the dkim plugin verifying every signature of the message
// against the run's loopback DNS server (THEMIS_BENCH_DKIM_DNS, 127.0.0.1:PORT), with its answer cache
// (the default 10,000 entries, as in production), and writing Authentication-Results.
import { defineConfig } from 'themis-milter';

export default defineConfig({
  plugins: [
    {
      plugin: 'themis-plugin-dkim',
      options: { authservId: 'mx.example.test', dnsServers: [process.env.THEMIS_BENCH_DKIM_DNS ?? '127.0.0.1:53'] },
    },
  ],
  policies: [{ name: 'verify', dkim: { verify: { headers: { authenticationResults: true } } } }],
});
