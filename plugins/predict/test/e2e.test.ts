// Through a real Postfix with SMTP AUTH and a real Redis: an authenticated sender whose learned rate
// is about 3 recipients a minute sends 30 recipients within a minute (10×: three messages of ten) and
// gets the configured tempfail, while a message at the usual rate goes through; and the README's
// recommended configuration (new recipients and a rate backstop) refuses and jails a sender who suddenly
// mails forty addresses it never wrote to, while mail to its usual correspondents and colleagues passes. The history is learned through the same
// store script the daemon uses, fed with past timestamps (a daemon learns in real time: minutes).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { RedisStore } from 'themis-milter';
import { postfixAvailable, postfixUnavailableReason } from '../../../test/helpers/postfix.ts';
import { redisAvailable, startRedis } from '../../../test/helpers/redis.ts';
import { saslUnavailableReason, startSaslPostfix } from '../../../test/helpers/sasl.ts';
import { startThemis } from '../../../test/helpers/themis.ts';
import { predictField, predictOptions, profileRequest, profileUpdate, recipientHash, recipientMemoryKey, seenAdd } from '../src/index.ts';

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
    for (let m = 0; m < 120; m++) await profileUpdate(seeder, [profileRequest(o, c, 'alice@example.test', 3, start + m * 60_000)]);
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

  it('the README’s recommended configuration: mail to the usual correspondents and colleagues passes, however many; a sudden mail to addresses never written to is refused and the sender jailed', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    // The configuration block at the top of the README, out of shadow mode.
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
    assert.ok(block?.includes("count: 'newRecipients'"), 'the README starts with the recommended configuration');
    const dir = mkdtempSync(join(tmpdir(), 'themis-predict-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.ts');
    writeFileSync(file, `export default {\nstore: { type: 'redis', url: ${JSON.stringify(redis.url)} },\n${block.replaceAll('shadow: true', 'shadow: false')}};\n`);
    const config = (await import(pathToFileURL(file).href)).default as { policies: { name: string; predict?: object }[] };
    const fields = Object.fromEntries(config.policies.map((p) => [p.name, predictField.parse(p.predict)]));
    const cn = fields['submission-new'];
    const cr = fields['submission'];
    assert.equal(cn.count, 'newRecipients');

    // Two hours of history: eight recipients a minute, all among twelve correspondents but for a new address
    // every eight minutes (learned through the same store scripts the daemon uses, with past timestamps).
    const contacts = Array.from({ length: 12 }, (_, i) => `friend${i}@partner.example`);
    const seeder = new RedisStore({ url: redis.url }, { testClock: true });
    const o = predictOptions.parse({});
    const start = Date.now() - 122 * 60_000;
    await seenAdd(seeder, recipientMemoryKey(o.keyPrefix, cn, 'bob@example.test'), contacts.map(recipientHash), { keep: o.recipientMemory, ttlMs: 86_400_000 });
    for (let m = 0; m < 120; m++) {
      await profileUpdate(seeder, [profileRequest(o, cn, 'bob@example.test', m % 8 === 0 ? 1 : 0, start + m * 60_000), profileRequest(o, cr, 'bob@example.test', 8, start + m * 60_000)]);
    }
    await seeder.close();

    const themis = await startThemis(['--config', file]);
    t.after(() => themis.stop());
    const pf = await startSaslPostfix(t, `inet:127.0.0.1:${themis.port}`, [{ login: 'bob@example.test', password: 'battery staple' }]);
    const auth = ['--auth', 'PLAIN', '--auth-user', 'bob@example.test', '--auth-password', 'battery staple', '--from', 'bob@example.test'];

    // All twelve correspondents at once, and thirty colleagues (internalDomains: example.com): nothing new.
    const usual = await pf.swaks([...auth, '--to', contacts.join(','), '--header', 'Subject: to the usual people']);
    assert.equal(usual.code, 0, usual.stdout);
    const team = await pf.swaks([...auth, '--to', Array.from({ length: 30 }, (_, i) => `colleague${i}@example.com`).join(','), '--header', 'Subject: to the team']);
    assert.equal(team.code, 0, team.stdout);
    // Forty addresses never written to, in one message: refused by the new-recipients policy, which jails the
    // sender in ratelimit's policy: the next message, to a usual correspondent, is refused too.
    const spam = await pf.swaks([...auth, '--to', Array.from({ length: 40 }, (_, i) => `target${i}@victims.example`).join(','), '--header', 'Subject: spam']);
    assert.match(spam.stdout, /<\*\* 451 4\.7\.1 Unusual sending rate for bob@example\.test: try again later/);
    const after = await pf.swaks([...auth, '--to', contacts[0], '--header', 'Subject: after']);
    assert.match(after.stdout, /<\*\* 4\d\d /);
    const delivered = await pf.waitForDelivered(2);
    assert.deepEqual(delivered.map((m) => m.headers.find(([n]) => n === 'Subject')?.[1]).sort(), ['to the team', 'to the usual people']);
    assert.match(themis.output(), /"policy":"submission-new".*predict: submission-new over the learned rate/);
  });
});
