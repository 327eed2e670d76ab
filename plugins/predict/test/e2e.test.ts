// Through a real Postfix with SMTP AUTH and a real Redis: an authenticated sender whose learned rate
// is about 3 recipients a minute sends 30 recipients within a minute (10×: three messages of ten) and
// gets the configured tempfail, while a message at the usual rate goes through. The history is learned through the same
// store script the daemon uses, fed with past timestamps (a daemon learns in real time: minutes).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { RedisStore } from 'themis';
import { postfixAvailable, postfixUnavailableReason } from '../../../test/helpers/postfix.ts';
import { redisAvailable, startRedis } from '../../../test/helpers/redis.ts';
import { saslUnavailableReason, startSaslPostfix } from '../../../test/helpers/sasl.ts';
import { startThemis } from '../../../test/helpers/themis.ts';
import { predictField, predictOptions, profileRequest } from '../src/index.ts';

const skip = !postfixAvailable() ? `postfix not available: ${postfixUnavailableReason()}` : !redisAvailable() ? 'redis-server not installed' : saslUnavailableReason() ? `SASL not available: ${saslUnavailableReason()}` : false;

describe('predict through a real Postfix', { skip }, () => {
  it('an authenticated sender at 10× the learned rate gets the configured action; the usual rate passes', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const field = { by: 'saslUser', action: 'tempfail' };
    // Two hours of history: 3 recipients in each minute, ending two minutes ago.
    const seeder = new RedisStore({ url: redis.url }, { testClock: true });
    const c = predictField.parse(field);
    const o = predictOptions.parse({});
    const start = Date.now() - 122 * 60_000;
    for (let m = 0; m < 120; m++) await seeder.profileUpdate([profileRequest(o, c, 'alice@example.test', 3, start + m * 60_000)]);
    await seeder.close();

    const dir = mkdtempSync(join(tmpdir(), 'themis-predict-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    writeFileSync(file, JSON.stringify({ store: { type: 'redis', url: redis.url }, plugins: ['themis-plugin-predict'], policies: [{ name: 'submission', match: { direction: 'outbound' }, predict: field }] }));
    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startSaslPostfix(t, `inet:127.0.0.1:${themis.port}`, [{ login: 'alice@example.test', password: 'correct horse' }]);
    const auth = ['--auth', 'PLAIN', '--auth-user', 'alice@example.test', '--auth-password', 'correct horse', '--from', 'alice@example.test'];
    const to = (n: number) => ['--to', Array.from({ length: n }, (_, i) => `r${i}@example.test`).join(',')];

    const usual = await pf.swaks([...auth, ...to(3), '--header', 'Subject: usual']);
    assert.equal(usual.code, 0, usual.stdout);
    const burst: string[] = [];
    for (let i = 1; i <= 3; i++) burst.push((await pf.swaks([...auth, ...to(10), '--header', `Subject: burst ${i}`])).stdout);
    // 3 + 10 + 10 = 23 recipients in the minute: over the 1-minute bound (the floor, 15) from the second one.
    assert.doesNotMatch(burst[0], /<\*\* 451/);
    for (const out of burst.slice(1)) assert.match(out, /<\*\* 451 4\.7\.1 Unusual sending rate for alice@example\.test: try again later/);
    const delivered = await pf.waitForDelivered(2);
    assert.deepEqual(delivered.map((m) => m.headers.find(([n]) => n === 'Subject')?.[1]).sort(), ['burst 1', 'usual']);
    assert.match(themis.output(), /"policy":"submission".*predict: submission over the learned rate/);
  });
});
