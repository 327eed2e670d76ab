/**
 * Runs a predict-style plugin over simulated traffic through the real kernel (`themis/testing`), with
 * the simulator's clock: every event becomes one message from its login (SASL-authenticated, as on
 * the submission port) to as many recipients as the event has, from its client address, with the
 * headers its mail client writes (From with the display name, Reply-To, User-Agent/X-Mailer: traits.ts). A tiny observer plugin reads the
 * plugin's note after each message (`{ subject, over, shadow, timeframes }`) and the runner records,
 * per event, whether it was flagged, and whether the MTA was told anything but a plain accept.
 * @module
 */
import { appendFileSync } from 'node:fs';
import { definePlugin, MemoryStore, type DecisionTrace, type KernelLogger, type PluginDefinition } from 'themis-milter';
import { createTestKernel } from 'themis-milter/testing';
import { recipientAddresses, type Traffic } from './traffic.ts';
import { messageTraits } from './traits.ts';

/** One configuration of a detector: a policy field and plugin options. */
export interface DetectorSpec {
  /** Short id (`ewma-k3`). */
  id: string;
  /** Row label of the report. */
  label: string;
  /** `predict`: the real plugin (themis-plugin-predict); `reference`: bench/predict/reference.ts. */
  source: 'predict' | 'reference';
  /** The policy's `predict` field; a list makes one policy per field (a subject is flagged when any is over). */
  policy: Record<string, unknown> | Record<string, unknown>[];
  /** Plugin options (the clock is added by the runner). */
  options?: Record<string, unknown>;
  /** For a shadow row: the id of the acting configuration it must match exactly. */
  twinOf?: string;
}

/** The note both plugins leave (the part the runner reads). */
export interface DetectorNote {
  subject: string;
  over: boolean;
  shadow: boolean;
  timeframes: { minutes: number; count: number; bound: number | null }[];
}

/** What one run gives. */
export interface RunResult {
  id: string;
  /** Per event: 1 when the plugin's note said `over`. */
  flagged: Uint8Array;
  /** Messages with a note, and messages without one (e.g. the store did not answer). */
  noted: number;
  missingNote: number;
  /** Messages flagged in shadow mode (`shadow: true` in the note). */
  shadowFlags: number;
  /** Messages whose handling differs from a plain accept: a refusal or hold at any stage, or a modification (a header). */
  acted: number;
  /** Trace outcomes (`accepted`, `tempfailed`, `quarantined`…). */
  outcomes: Record<string, number>;
  /** Final decisions as the MTA saw them (`accept`, `continue`, `tempfail`…). */
  decisions: Record<string, number>;
  /** Warnings and errors the kernel or plugin logged, and the first of them. */
  warnings: number;
  firstWarning?: string;
  elapsedMs: number;
}


/**
 * Drives every event of the traffic through a kernel holding the plugin (with `spec`'s policy and
 * options plus the simulator's clock) and the observer. `progress` is called every `every` events.
 */
export async function runDetector(traffic: Traffic, plugin: PluginDefinition<any, any>, spec: DetectorSpec, progress?: (done: number, total: number) => void, every = 50_000): Promise<RunResult> {
  const started = performance.now();
  const noteName = plugin.name;
  const dump = process.env.PREDICT_EVAL_DUMP;
  const dumpAttacks = process.env.PREDICT_EVAL_DUMP_ATTACKS === '1';
  const flagged = new Uint8Array(traffic.n);
  let clock = traffic.start;
  let current = -1;
  let noted = 0;
  let missingNote = 0;
  let shadowFlags = 0;
  const outcomes: Record<string, number> = {};
  const decisions: Record<string, number> = {};
  let warnings = 0;
  let firstWarning: string | undefined;

  const observer = definePlugin({
    name: 'predict-eval-observer',
    version: '0.0.0',
    kernel: '^1',
    setup() {
      return {
        decision(ctx, trace: DecisionTrace) {
          outcomes[trace.outcome] = (outcomes[trace.outcome] ?? 0) + 1;
          const note = ctx.message?.notes.of<DetectorNote>(noteName);
          if (current < 0) return;
          if (!note) {
            missingNote++;
            return;
          }
          noted++;
          if (note.over) {
            flagged[current] = 1;
            if (note.shadow) shadowFlags++;
          }
          // PREDICT_EVAL_DUMP=file: one JSON line per flagged message (which event, the note), to read what moved;
          // with PREDICT_EVAL_DUMP_ATTACKS=1, every attack message too, flagged or not (what the missed ones scored).
          if (dump && (note.over || (dumpAttacks && traffic.compromise[current] >= 0))) appendFileSync(dump, `${JSON.stringify({ config: spec.id, event: current, sender: traffic.sender[current], compromise: traffic.compromise[current], note })}\n`);
        },
      };
    },
  });

  const warn = (fields: object, message?: string) => {
    warnings++;
    firstWarning ??= `${message ?? ''} ${JSON.stringify(fields)}`.trim();
  };
  const logger: KernelLogger = { debug() {}, info() {}, warn, error: warn, child: () => logger, isLevelEnabled: (l) => l === 'warn' || l === 'error' };

  const store = new MemoryStore({ testClock: true });
  const t = await createTestKernel({
    plugins: [{ plugin, options: { ...spec.options, now: () => clock } }, { plugin: observer }],
    policies: Array.isArray(spec.policy) ? spec.policy.map((p, i) => ({ name: `submission${i + 1}`, predict: p })) : [{ name: 'submission', predict: spec.policy }],
    store,
    logger,
  });
  let acted = 0;
  const recipientsOf = recipientAddresses(traffic);
  try {
    for (let i = 0; i < traffic.n; i++) {
      clock = traffic.t[i];
      current = i;
      const login = traffic.logins[traffic.sender[i]];
      const traits = messageTraits(traffic.traits, traffic, i, traffic.sender[i], login, traffic.compromise[i]);
      // What Postfix hands the milter: the client address at CONNECT, TLS at HELO ({tls_version}, {cipher},
      // {cipher_bits}, {cert_subject}), the SASL login and mechanism at MAIL ({auth_authen}, {auth_type}), the headers.
      const macros: Record<string, string> = { '{auth_type}': traits.authType, '{tls_version}': traits.tlsVersion, '{cipher}': traits.cipher, '{cipher_bits}': String(traits.cipherBits) };
      if (traits.certSubject) macros['{cert_subject}'] = traits.certSubject;
      const r = await t.message({ from: login, rcpt: recipientsOf(i), auth: login, client: { address: traits.address, macros }, headers: traits.headers });
      const d = r.decision.action;
      decisions[d] = (decisions[d] ?? 0) + 1;
      if ((d !== 'accept' && d !== 'continue') || r.modifications.length > 0 || r.recipients.some((x) => x.action !== 'continue' && x.action !== 'accept')) acted++;
      // The harness keeps every trace; this run reads them through the observer instead.
      if (t.traces.length > 1000) t.traces.length = 0;
      if (progress && (i + 1) % every === 0) progress(i + 1, traffic.n);
    }
  } finally {
    current = -1;
    await t.close();
    await store.close();
  }
  return { id: spec.id, flagged, noted, missingNote, shadowFlags, acted, outcomes, decisions, warnings, ...(firstWarning ? { firstWarning } : {}), elapsedMs: performance.now() - started };
}
