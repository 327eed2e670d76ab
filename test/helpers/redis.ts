/**
 * The tests' Redis helpers: the launcher `themis-milter/testing` ships (a real redis-server, a real
 * Cluster), and what only this repository's tests look at (round trips, a raw Cluster client).
 */
export * from '../../src/testing/redis.ts';

/**
 * Runs `fn` against a RedisStore and counts what reached the server: the socket writes the store's
 * client made (one write = one round trip) and, from INFO commandstats of `raw`, the commands run
 * (those the scripts run included), as name → calls.
 */
export async function countRoundTrips<T>(store: object, raw: { info(section: string): Promise<string> }, fn: () => Promise<T>): Promise<{ result: T; writes: number; commands: Map<string, number> }> {
  const calls = async () => {
    const out = new Map<string, number>();
    for (const m of (await raw.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1], Number(m[2]));
    return out;
  };
  const client = (store as { main: { client: { stream: { write: (...a: unknown[]) => boolean } } } }).main.client;
  const stream = client.stream;
  const write = stream.write;
  let writes = 0;
  stream.write = function (...a: unknown[]) {
    writes++;
    return write.apply(this, a);
  };
  const before = await calls();
  let result: T;
  try {
    result = await fn();
  } finally {
    stream.write = write;
  }
  const after = await calls();
  const commands = new Map([...after].filter(([name, n]) => name !== 'info' && n !== (before.get(name) ?? 0)).map(([name, n]) => [name, n - (before.get(name) ?? 0)]));
  return { result, writes, commands };
}

/** A plain ioredis Cluster client on a test cluster's nodes (to look at what the stores wrote), once ready. */
export async function rawCluster(nodes: readonly string[]): Promise<import('ioredis').Cluster> {
  const { Cluster } = await import('ioredis');
  const raw = new Cluster(nodes.map((x) => ({ host: '127.0.0.1', port: Number(x.split(':')[1]) })), { clusterRetryStrategy: () => null });
  await new Promise<void>((resolve, reject) => {
    raw.once('ready', resolve);
    raw.once('error', reject);
  });
  return raw;
}
