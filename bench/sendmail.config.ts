// The no-plugin configuration shaped for Sendmail (mta: 'sendmail'): what bench/sendmail.ts measures
// beside the default (Postfix-shaped) negotiation over TCP.
import { defineConfig } from 'themis-milter';
import base from './postfix-configs/none.config.ts';

export default defineConfig({ ...base, mta: 'sendmail' });
