// Time under the test's control (useTestClock): a stateful plugin's delays, a rate limit's windows,
// the memory store's expiries and the kernel's hook deadlines move when the test advances the clock,
// not with the wall clock — nothing here sleeps.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import ratelimit from 'themis-plugin-ratelimit';
import { MemoryStore, definePlugin } from 'themis-milter';
import { createTestKernel, useTestClock } from 'themis-milter/testing';
import greylist from '../fixtures/greylist/index.ts';

const message = { client: { address: '198.51.100.7' }, from: 'a@example.org', rcpt: ['r@example.net'] };

describe('useTestClock', () => {
  it('greylisting: told to come back, still early after 4 minutes, passes after 5 — in simulated time', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const started = performance.now();
    const k = await createTestKernel({ plugins: [greylist], policies: [{ name: 'in', greylist: { delay: 300_000 } }] });
    assert.equal((await k.message(message)).recipients[0].action, 'tempfail');
    await clock.advance(240_000);
    assert.equal((await k.message(message)).recipients[0].action, 'tempfail', 'early');
    await clock.advance(60_000);
    assert.equal((await k.message(message)).recipients[0].action, 'continue', 'retried after the delay');
    assert.ok(performance.now() - started < 5_000, 'no real waiting');
    await k.close();
  });

  it('ratelimit: the window moves with the clock', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const k = await createTestKernel({ plugins: [ratelimit], policies: [{ name: 'p', ratelimit: { windows: '1/1m', by: 'sender' } }] });
    assert.equal((await k.message(message)).decision.action, 'accept');
    assert.equal((await k.message(message)).decision.action, 'tempfail');
    await clock.advance(65_000);
    assert.equal((await k.message(message)).decision.action, 'accept', 'a minute later the window has room');
    await k.close();
  });

  it('the memory store expires keys on the simulated clock', async (t) => {
    const clock = useTestClock(t.mock.timers);
    const store = new MemoryStore();
    await store.set('k', 'v', 1_000);
    await clock.advance(999);
    assert.equal(await store.get('k'), 'v');
    await clock.advance(1);
    assert.equal(await store.get('k'), undefined);
    assert.equal(clock.now(), Date.UTC(2026, 0, 1) + 1_000);
    await store.close();
  });

  it("a hook that never answers meets the kernel's deadline when the clock passes it", async (t) => {
    const clock = useTestClock(t.mock.timers);
    let entered!: () => void;
    const inHook = new Promise<void>((resolve) => (entered = resolve));
    const hanging = definePlugin({
      name: 'hanging',
      version: '1.0.0',
      kernel: '^1',
      onError: 'tempfail',
      setup: () => ({
        rcptTo: () => {
          entered();
          return new Promise<undefined>(() => undefined);
        },
      }),
    });
    const k = await createTestKernel({ plugins: [hanging], hookTimeout: 5_000 });
    let settled = false;
    const pending = k.message(message).then((r) => ((settled = true), r));
    // The deadline starts when the hook is called: advance from then on.
    await inHook;
    await clock.advance(4_999);
    assert.equal(settled, false, 'still waiting for the hook');
    await clock.advance(1);
    const r = await pending;
    assert.equal(r.recipients[0].action, 'tempfail', "the plugin's onError");
    await k.close();
  });
});
