// bench/postfix.ts, target "spf": the spf plugin alone with the policy its README shows — reject a fail,
// tag a softfail, both headers — against the run's loopback DNS server, where the sender's domain
// passes 127.0.0.1 (so every message is accepted, with its Received-SPF and Authentication-Results).
import { defineConfig } from 'themis-milter';
import { MTA_NAME, dnsServer } from './mail.ts';

export default defineConfig({
  plugins: [{ plugin: 'themis-plugin-spf', options: { dnsServers: [dnsServer()], deadline: 5_000, authservId: MTA_NAME } }],
  policies: [
    {
      name: 'inbound',
      match: { direction: 'inbound' },
      spf: { mailFrom: { fail: 'reject', softfail: 'tag' }, headers: { receivedSpf: true, authenticationResults: true } },
    },
  ],
});
