// The repository's configuration shaped for Sendmail (mta: 'sendmail'): what bench/sendmail.ts measures
// beside the default (Postfix-shaped) negotiation over TCP.
import { defineConfig } from 'themis';
import base from '../themis.config.ts';

export default defineConfig({ ...base, mta: 'sendmail' });
