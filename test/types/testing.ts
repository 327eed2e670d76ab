// Type tests of the `themis-milter/testing` harness, as a plugin author uses it. Checked by
// `tsc -p test/types` (test/types/types.test.ts); nothing here runs.
import { expectTypeOf } from 'expect-type';
import { createTestKernel, type StageOutcome, type TestConnection, type TestKernel, type TestResult } from 'themis-milter/testing';
import type { Decision, DecisionTrace, Kernel, Modification } from 'themis-milter';
import spf from 'themis-plugin-spf';
import headers from 'themis-plugin-headers';

export async function harness(): Promise<void> {
  const t = await createTestKernel({ plugins: [spf, { plugin: headers, priority: 5 }], policies: [{ name: 'p', spf: { mailFrom: { fail: 'reject' } } }] });
  expectTypeOf(t).toEqualTypeOf<TestKernel>();
  expectTypeOf(t.kernel).toEqualTypeOf<Kernel>();
  expectTypeOf(t.traces).toEqualTypeOf<DecisionTrace[]>();

  const r = await t.message({ from: 'a@example.com', rcpt: ['b@example.org'], headers: { Subject: 'hi' }, client: { address: '192.0.2.7' } });
  expectTypeOf(r).toEqualTypeOf<TestResult>();
  expectTypeOf(r.decision).toEqualTypeOf<StageOutcome>();
  expectTypeOf(r.decision.action).toEqualTypeOf<'continue' | 'accept' | 'reject' | 'tempfail' | 'discard' | 'skip'>();
  expectTypeOf(r.modifications).toEqualTypeOf<Modification[]>();
  expectTypeOf(r.decision.action).toEqualTypeOf<Decision['action']>();
  expectTypeOf(r.trace).toEqualTypeOf<DecisionTrace | undefined>();
  expectTypeOf(r.recipients[0].address).toBeString();

  const c = await t.connect({ address: '2001:db8::1' }, 'client.example');
  expectTypeOf(c).toEqualTypeOf<TestConnection>();
  expectTypeOf(c.message).parameter(0).not.toHaveProperty('client');
  await c.close();
  await t.close();

  // @ts-expect-error -- a message needs its recipients
  await t.message({ from: 'a@example.com' });
  // @ts-expect-error -- recipients are a list
  await t.message({ from: 'a@example.com', rcpt: 'b@example.org' });
  // @ts-expect-error -- a plugin is a definition or an entry, not a number
  await createTestKernel({ plugins: [42] });
  // @ts-expect-error -- the client family is one of 4, 6, L, U
  await t.connect({ family: '5' });
  // @ts-expect-error -- the harness types policies as defineConfig does: 'rejectt' is no SPF action
  await createTestKernel({ plugins: [spf], policies: [{ name: 'p', spf: { mailFrom: { fail: 'rejectt' } } }] });
  // @ts-expect-error -- nor may a policy carry a field no listed plugin claims
  await createTestKernel({ plugins: [spf], policies: [{ name: 'p', headers: [] }] });
}
