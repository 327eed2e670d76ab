/**
 * `themis-milter/dns`: the caching DNS stub resolver the mail-authentication plugins share (SPF,
 * DKIM, DMARC), with TTL-honouring cache, per-query deadline and retries over UDP and TCP.
 * @module
 */
export { createResolver, type CachingResolver, type DnsResolver, type ResolverCacheOptions, type ResolverOptions } from './resolver.ts';
