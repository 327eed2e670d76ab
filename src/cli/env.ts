/**
 * The environment variables the commands read, with the original Themis's names accepted as
 * aliases so that an existing deployment's environment keeps working: `THEMIS_CFG` for
 * `THEMIS_CONFIG`, `THEMIS_REDIS` (a host name) for `THEMIS_REDIS_URL`, `THEMIS_REDISPASSWD` for
 * `THEMIS_REDIS_PASSWORD`. The new names win when both are set.
 * @module
 */

const nonEmpty = (v: string | undefined) => (v === undefined || v === '' ? undefined : v);

/** `THEMIS_CONFIG`, else the original's `THEMIS_CFG`. */
export function envConfigPath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return nonEmpty(env.THEMIS_CONFIG) ?? nonEmpty(env.THEMIS_CFG);
}

/** `THEMIS_REDIS_URL`, else the original's `THEMIS_REDIS` (a host, port 6379 and db 0 as it had them, or a URL). */
export function envRedisUrl(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const url = nonEmpty(env.THEMIS_REDIS_URL);
  if (url) return url;
  const legacy = nonEmpty(env.THEMIS_REDIS);
  if (!legacy) return undefined;
  return legacy.includes('://') ? legacy : `redis://${legacy.includes(':') && !legacy.startsWith('[') ? legacy : `${legacy}:6379`}/0`;
}

/** `THEMIS_REDIS_PASSWORD`, else the original's `THEMIS_REDISPASSWD`. */
export function envRedisPassword(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return nonEmpty(env.THEMIS_REDIS_PASSWORD) ?? nonEmpty(env.THEMIS_REDISPASSWD);
}

