// predict's store operations (the seen-set and the rate profiles) on every store: the in-memory
// store, a real redis-server and a real 3-master Redis Cluster, through the same contract.
import { after, before, describe } from 'node:test';
import { MemoryStore, RedisStore } from 'themis-milter';
import { redisAvailable, redisCliAvailable, startRedis, startRedisCluster, type RedisClusterServers, type RedisServer } from 'themis-milter/testing';
import { predictStoreContract } from './store-contract.ts';

const skipRedis = redisAvailable() ? false : 'redis-server not installed';
const skipCluster = skipRedis || (redisCliAvailable() ? false : 'redis-cli not installed');
if (skipRedis) console.log(`# predict store contract on Redis skipped: ${skipRedis}`);
else if (skipCluster) console.log(`# predict store contract on a Redis Cluster skipped: ${skipCluster}`);

describe('predict store contract: MemoryStore', () => {
  predictStoreContract(() => new MemoryStore());
});

describe('predict store contract: RedisStore against redis-server', { skip: skipRedis }, () => {
  let server: RedisServer;
  let n = 0;
  before(async () => {
    server = await startRedis();
  });
  after(async () => server?.stop());
  predictStoreContract(async () => {
    const s = new RedisStore({ url: server.url, keyPrefix: `p${++n}:`, commandTimeout: 1000 });
    await s.connect();
    return s;
  });
});

describe('predict store contract: RedisStore on a Redis Cluster (3 masters)', { skip: skipCluster }, () => {
  let cluster: RedisClusterServers;
  let n = 0;
  before(async () => {
    cluster = await startRedisCluster(3);
  });
  after(async () => cluster?.stop());
  predictStoreContract(async () => {
    const s = new RedisStore({ cluster: { nodes: cluster.nodes }, keyPrefix: `c${++n}:`, commandTimeout: 1000 });
    await s.connect(5000);
    return s;
  });
});
