// bench/dkim.ts, case "Themis sign": the dkim plugin signing every message with two keys of the
// From: domain (two RSA-2048 keys, as OpenDKIM 2.11 can be set up to), verification off. bench/dkim.ts writes the keys
// into a temporary folder and passes it in THEMIS_BENCH_DKIM_DIR.
import { join } from 'node:path';
import { defineConfig } from 'themis-milter';

const dir = process.env.THEMIS_BENCH_DKIM_DIR ?? '.';

export default defineConfig({
  plugins: [
    {
      plugin: 'themis-plugin-dkim',
      options: {
        authservId: 'mx.example.test',
        keys: [
          { domain: 'example.test', selector: 'r2026', keyFile: join(dir, 'r2026.key') },
          { domain: 'example.test', selector: 's2026', keyFile: join(dir, 's2026.key') },
        ],
      },
    },
  ],
  policies: [{ name: 'sign', dkim: { sign: {}, verify: { enabled: false } } }],
});
