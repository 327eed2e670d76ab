/**
 * themis-plugin-greylist: classic greylisting. A recipient is told to try again later (451 4.7.1)
 * the first time a client network, sender and recipient are seen together; a retry after the
 * delay, within the retry window, passes, and the triplet is then known for a while. Real MTAs retry;
 * most spam engines do not.
 *
 * Policies switch it on with the `greylist` field; see README.md.
 * @module
 */
import { NetworkList, definePlugin, resolveReply, type AppliedPolicy } from 'themis-milter';
import { clientNetwork, normalizeClientAddress } from './network.ts';
import { DEFAULT_REPLY, greylistField, type GreylistConfig } from './schema.ts';
import { TRIPLET, tripletKey, type TripletState } from './triplet.ts';

export { clientNetwork, normalizeClientAddress, parseClientAddress } from './network.ts';
export { DEFAULT_REPLY, formatDuration, greylistField, parseDuration, type GreylistConfig, type GreylistInput } from './schema.ts';
export { TRIPLET, tripletKey, type TripletCheck, type TripletState, type TripletStateName } from './triplet.ts';

/** Why a policy let a recipient through without asking the store. */
type Exemption = 'authenticated' | 'client' | 'no-address';

/** The exempt networks of a policy's field, built once per field object (a reload brings new objects). */
const exemptLists = new WeakMap<GreylistConfig, NetworkList>();

function exemptList(config: GreylistConfig): NetworkList {
  let list = exemptLists.get(config);
  if (!list) {
    list = new NetworkList();
    for (const network of config.exemptClients) list.add(network);
    exemptLists.set(config, list);
  }
  return list;
}

/** Whether, and why, a policy exempts this client. */
function exemption(config: GreylistConfig, client: string | undefined, auth: string | undefined): Exemption | undefined {
  if (config.exemptAuthenticated && auth) return 'authenticated';
  const address = client === undefined ? undefined : normalizeClientAddress(client);
  // Local submissions (sendmail(1), no IP address) cannot be retried by a remote MTA: never greylisted.
  if (address === undefined) return 'no-address';
  const list = exemptList(config);
  return list.has(address) || (client !== undefined && list.has(client)) ? 'client' : undefined;
}

/** The plugin: load it by package name (`plugins: ['themis-plugin-greylist']`) or import it. */
export default definePlugin({
  name: 'greylist',
  version: '0.1.0',
  // The kernel API this plugin is written against: checked when Themis loads it.
  kernel: '^1',
  claims: { field: 'greylist', schema: greylistField },
  // Below the plugins that refuse for good (ratelimit, spf, an allowlist at 40–50): where one of them
  // refuses a recipient at the same stage, its answer wins over "try again later".
  priority: 30,
  // A hook that throws or misses its deadline: try again later. (`accept` at RCPT would accept the
  // whole message and end every other plugin's filtering of it.) Store errors are handled in the
  // hook, by the policy's `onStoreError`.
  onError: 'tempfail',
  setup({ log, metrics, store }) {
    const greylisted = metrics.counter({ name: 'greylisted_total', help: 'Recipients greylisted (told to try again later), by policy and triplet state (new, early)', labelNames: ['policy', 'state'] as const });
    const passed = metrics.counter({ name: 'passed_total', help: 'Triplets that passed: retried after the delay, within the retry window', labelNames: ['policy'] as const });
    const known = metrics.counter({ name: 'known_total', help: 'Recipients of triplets that had passed before (accepted, expiry renewed)', labelNames: ['policy'] as const });
    const exempt = metrics.counter({ name: 'exempt_total', help: 'Recipients not greylisted because the client is exempt (authenticated, client, no-address)', labelNames: ['policy', 'reason'] as const });
    const storeErrors = metrics.counter({ name: 'store_errors_total', help: 'Checks the store could not answer (onStoreError applied)', labelNames: ['policy'] as const });

    return {
      async rcptTo(ctx, rcpt) {
        const client = ctx.session.client?.address;
        const sender = ctx.message?.sender?.address ?? '';
        const checked: { policy: AppliedPolicy<GreylistConfig>; key: string }[] = [];
        for (const policy of ctx.policies) {
          const why = exemption(policy.config, client, ctx.session.auth);
          if (why) {
            exempt.inc({ policy: policy.name, reason: why });
            continue;
          }
          const network = clientNetwork(client!, policy.config.ipv4Prefix, policy.config.ipv6Prefix)!;
          checked.push({ policy, key: tripletKey(policy.name, network, sender, rcpt.address) });
        }
        if (checked.length === 0) return undefined;

        let states: TripletState[];
        try {
          // One round trip for every policy's triplet of this recipient.
          states = await store.atomic(TRIPLET, checked.map(({ policy, key }) => ({ key, args: { delayMs: policy.config.delay, retryWindowMs: policy.config.retryWindow, expiryMs: policy.config.expiry } })));
        } catch (err) {
          for (const { policy } of checked) storeErrors.inc({ policy: policy.name });
          const strict = checked.find(({ policy }) => policy.config.onStoreError === 'tempfail');
          log.warn({ err, policies: checked.map(({ policy }) => policy.name) }, strict ? 'greylist store failed: recipient tempfailed' : 'greylist store failed: recipient passed');
          if (!strict) return undefined;
          return { action: 'tempfail', reply: resolveReply(strict.policy.config.reply, { ...DEFAULT_REPLY, text: 'Greylisted, try again later' }, { wait: 'a few', policy: strict.policy.name }), reason: `greylist store unavailable (policy ${strict.policy.name})` };
        }

        // The recipient waits for the policy that makes it wait longest.
        let waiting: { policy: AppliedPolicy<GreylistConfig>; state: TripletState } | undefined;
        checked.forEach(({ policy, key }, i) => {
          const s = states[i];
          ctx.log.debug({ policy: policy.name, key, state: s.state, attempts: s.attempts, ageMs: s.ageMs, waitMs: s.waitMs }, 'greylist triplet checked');
          if (s.state === 'passed') passed.inc({ policy: policy.name });
          else if (s.state === 'known') known.inc({ policy: policy.name });
          else {
            greylisted.inc({ policy: policy.name, state: s.state });
            if (!waiting || s.waitMs > waiting.state.waitMs) waiting = { policy, state: s };
          }
        });
        if (!waiting) return undefined;
        const { policy, state } = waiting;
        const wait = Math.max(1, Math.ceil(state.waitMs / 1000));
        return {
          action: 'tempfail',
          reply: resolveReply(policy.config.reply, DEFAULT_REPLY, { wait, policy: policy.name }),
          reason: `greylisted by policy ${policy.name} (${state.state}, attempt ${state.attempts}, ${wait}s left)`,
        };
      },
    };
  },
});
