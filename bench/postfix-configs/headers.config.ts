// bench/postfix.ts, target "headers": the headers plugin alone with the rules of its README (the
// original's --actionheaders example): evaluated on every message at end of headers; the benchmark's
// mail carries neither header, so nothing is changed.
import { defineConfig } from 'themis-milter';

export default defineConfig({
  plugins: ['themis-plugin-headers'],
  policies: [
    {
      name: 'inbound',
      headers: [
        { name: 'cmae-score', if: { header: 'X-CMAE-Score', regex: '^(9[6-9]|100)' }, then: [{ add: 'X-Spam-Flag', value: 'YES' }] },
        {
          name: 'spam-flag',
          if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true },
          then: [{ add: 'X-Themis-Policy', value: '{policy}' }, { change: 'Subject', value: '[SPAM] {value}' }],
        },
      ],
    },
  ],
});
