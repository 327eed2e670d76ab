/**
 * The `headers` policy field and the plugin options, as zod schemas that validate and compile in one
 * pass: regexes and globs become RE2 programs, templates are parsed, CIDRs become block lists. A bad
 * pattern, header name or placeholder is a configuration error whose path names the rule.
 * @module
 */
import { z } from 'zod';
import { RE2JS } from 're2js';
import { NetworkList, parseNetwork, replyConfigSchema } from 'themis-milter';
import { HEADER_NAME } from './encoding.ts';
import { parseTemplate, type Template } from './template.ts';

// ---------------------------------------------------------------------------------------------
// Value tests

/** What a successful test of one value captured: regex groups, by number and by name. */
export interface Captures {
  /** `match.0` is the whole match, `match.1` the first group… */
  readonly groups: readonly (string | null)[];
  /** Named groups (`(?P<score>\d+)` → `match.score`). */
  readonly named: Readonly<Record<string, string | null>>;
}

/** A compiled test of one value. */
export interface ValueTest {
  /** How the test reads in the decision trace (`~ /^YES$/i`, `= "YES"`, `present`). */
  readonly describe: string;
  /** Whether the test is about existence (`present`) rather than a value. */
  readonly presence?: boolean;
  /** For `present: true|false`. */
  readonly wanted?: boolean;
  /** Tests a value; captures for a regex, true/false for the others. */
  test(value: string): Captures | boolean;
}

const NO_CAPTURES: Captures = { groups: [], named: {} };

function regexTest(source: string, ignoreCase: boolean, describe: string): ValueTest | string {
  let re: RE2JS;
  try {
    re = RE2JS.compile(source, ignoreCase ? RE2JS.CASE_INSENSITIVE : 0);
  } catch (err) {
    return `invalid regex ${JSON.stringify(source)}: ${(err as Error).message} (RE2 syntax: no backreferences or lookaround, which is what keeps matching linear)`;
  }
  const names = Object.entries(re.namedGroups());
  return {
    describe,
    test(value) {
      const m = re.matcher(value);
      if (!m.find()) return false;
      const groups: (string | null)[] = [];
      for (let i = 0; i <= m.groupCount(); i++) groups.push(m.group(i));
      if (names.length === 0) return { groups, named: {} };
      const named: Record<string, string | null> = {};
      for (const [name, index] of names) named[name] = groups[index] ?? null;
      return { groups, named };
    },
  };
}

/** A glob (`*`, `?`, `[…]`) as an anchored RE2 program. */
function globToRegex(glob: string): string {
  let out = '^';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) {
        out += '\\[';
        continue;
      }
      let set = glob.slice(i + 1, end);
      if (set[0] === '!') set = '^' + set.slice(1);
      out += '[' + set.replace(/\\/g, '\\\\') + ']';
      i = end;
    } else out += /[\\^$.|?*+()[\]{}]/.test(c) ? '\\' + c : c;
  }
  return out + '$';
}

/** The ways a value can be tested; exactly one per condition. */
const matcherShape = {
  /** An RE2 regular expression, searched anywhere in the value (anchor with `^…$`). */
  regex: z.string().min(1).optional(),
  /** A glob over the whole value: `*`, `?`, `[abc]`, `[!abc]`. */
  glob: z.string().min(1).optional(),
  /** The whole value, exactly. */
  equals: z.string().optional(),
  /** Any of these values, exactly. */
  oneOf: z.array(z.string()).min(1).optional(),
  /** `true`: the header (or envelope value, or note) exists; `false`: it does not. */
  present: z.boolean().optional(),
  /** Client IP only: any of these addresses or CIDRs. */
  cidr: z.array(z.string()).min(1).optional(),
  /** Notes only: numeric comparisons (a value that is not a number never matches). */
  gt: z.number().optional(),
  gte: z.number().optional(),
  lt: z.number().optional(),
  lte: z.number().optional(),
  /** Compare without regard to case (default false; globs and `equals` included). */
  ignoreCase: z.boolean().default(false),
};

type MatcherInput = { regex?: string; glob?: string; equals?: string; oneOf?: string[]; present?: boolean; cidr?: string[]; gt?: number; gte?: number; lt?: number; lte?: number; ignoreCase: boolean };

const TEST_KEYS = ['regex', 'glob', 'equals', 'oneOf', 'present', 'cidr', 'numeric'] as const;

/** Compiles the matcher part of a condition; a string is the problem (with the key it is about). */
function compileMatcher(m: MatcherInput, allowed: readonly (typeof TEST_KEYS)[number][]): ValueTest | { key: string; problem: string } {
  const numeric = m.gt !== undefined || m.gte !== undefined || m.lt !== undefined || m.lte !== undefined;
  const given = TEST_KEYS.filter((k) => (k === 'numeric' ? numeric : m[k] !== undefined));
  if (given.length !== 1) return { key: given[1] ?? '', problem: `expected exactly one of ${allowed.map((k) => (k === 'numeric' ? 'gt/gte/lt/lte' : k)).join(', ')}; found ${given.length === 0 ? 'none' : given.join(' and ')}` };
  const kind = given[0];
  if (!allowed.includes(kind)) return { key: kind === 'numeric' ? 'gt' : kind, problem: `not available here: use one of ${allowed.map((k) => (k === 'numeric' ? 'gt/gte/lt/lte' : k)).join(', ')}` };
  const i = m.ignoreCase ? ' (any case)' : '';
  switch (kind) {
    case 'regex': {
      const t = regexTest(m.regex!, m.ignoreCase, `~ /${m.regex}/${m.ignoreCase ? 'i' : ''}`);
      return typeof t === 'string' ? { key: 'regex', problem: t } : t;
    }
    case 'glob': {
      const t = regexTest(globToRegex(m.glob!), m.ignoreCase, `glob ${JSON.stringify(m.glob)}${i}`);
      return typeof t === 'string' ? { key: 'glob', problem: t } : t;
    }
    case 'equals':
    case 'oneOf': {
      const fold = (s: string) => (m.ignoreCase ? s.toLowerCase() : s);
      const wanted = new Set((kind === 'equals' ? [m.equals!] : m.oneOf!).map(fold));
      return { describe: kind === 'equals' ? `= ${JSON.stringify(m.equals)}${i}` : `in ${JSON.stringify(m.oneOf)}${i}`, test: (v) => wanted.has(fold(v)) };
    }
    case 'present':
      return { describe: m.present ? 'present' : 'absent', presence: true, wanted: m.present, test: () => true };
    case 'cidr': {
      const list = new NetworkList();
      for (const entry of m.cidr!) {
        const network = parseNetwork(entry);
        if (network === undefined || network instanceof Error) return { key: 'cidr', problem: `${JSON.stringify(entry)} is not an IP address or CIDR` };
        list.add(network);
      }
      return { describe: `in ${m.cidr!.join(', ')}`, test: (v) => list.has(v) };
    }
    case 'numeric': {
      const parts = (['gt', 'gte', 'lt', 'lte'] as const).filter((k) => m[k] !== undefined);
      const ops = { gt: '>', gte: '>=', lt: '<', lte: '<=' };
      return {
        describe: parts.map((k) => `${ops[k]} ${m[k]}`).join(' and '),
        test(v) {
          const n = Number(v);
          if (v.trim() === '' || !Number.isFinite(n)) return false;
          return (m.gt === undefined || n > m.gt) && (m.gte === undefined || n >= m.gte) && (m.lt === undefined || n < m.lt) && (m.lte === undefined || n <= m.lte);
        },
      };
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Conditions

/** Which occurrences of a repeated header (or which recipients) must match. */
export type Occurrence = 'any' | 'every' | 'first' | 'last' | number;

/** Envelope values a condition can test. */
export type EnvelopeField = 'sender' | 'recipient' | 'helo' | 'auth' | 'clientIp' | 'clientName' | 'mta';

/** A compiled condition. */
export type Condition =
  | { readonly kind: 'header'; readonly name: string; readonly key: string; readonly occurrence: Occurrence; readonly decode: boolean; readonly test: ValueTest }
  | { readonly kind: 'envelope'; readonly field: EnvelopeField; readonly occurrence: 'any' | 'every'; readonly test: ValueTest }
  | { readonly kind: 'note'; readonly plugin: string; readonly path: readonly string[]; readonly test: ValueTest }
  | { readonly kind: 'all' | 'any'; readonly of: readonly Condition[] }
  | { readonly kind: 'not'; readonly of: Condition };

const headerName = z.string().regex(HEADER_NAME, 'expected a header name: printable ASCII without spaces or colons (RFC 5322 §2.2)').max(200);

const occurrence = z.union([z.enum(['any', 'every', 'first', 'last']), z.number().int().refine((n) => n !== 0, 'occurrences count from 1 (or from -1 for the last)')]);

const headerCondition = z.strictObject({
  /** The header, by name (case-insensitive). */
  header: headerName,
  /** Which occurrences must match (default `any`); a number picks one, 1 the first, -1 the last. */
  occurrence: occurrence.default('any'),
  /** Decode RFC 2047 encoded words before testing (default true). */
  decode: z.boolean().default(true),
  ...matcherShape,
});

const envelopeCondition = z.strictObject({
  /** The envelope value: sender, recipient (each accepted one), helo, auth (SASL login), clientIp, clientName, mta. */
  envelope: z.enum(['sender', 'recipient', 'helo', 'auth', 'clientIp', 'clientName', 'mta']),
  /** Recipients: must any or every recipient match (default any). */
  occurrence: z.enum(['any', 'every']).default('any'),
  ...matcherShape,
});

const noteCondition = z.strictObject({
  /** `<plugin>.<field>`: what another plugin left in the message notes (`spf.result`, `ratelimit.remaining`). */
  note: z.string().regex(/^[\w-]+(\.[\w-]+)+$/, 'expected <plugin>.<field>, e.g. spf.result'),
  ...matcherShape,
});

/** The input form of a condition (what the configuration holds). */
export type ConditionInput =
  | z.input<typeof headerCondition>
  | z.input<typeof envelopeCondition>
  | z.input<typeof noteCondition>
  | { all: ConditionInput[] }
  | { any: ConditionInput[] }
  | { not: ConditionInput };

/**
 * One of several object shapes, told apart by the key each must have. A plain union would answer
 * "invalid input" for a typo deep inside; this reports the problem of the shape the key selects.
 */
function keyedUnion<T extends Record<string, z.ZodType>>(shapes: T, what: string): z.ZodType<z.output<T[keyof T]>, unknown> {
  const keys = Object.keys(shapes);
  return z.unknown().transform((input, ctx) => {
    const key = input !== null && typeof input === 'object' && !Array.isArray(input) ? keys.find((k) => k in input) : undefined;
    if (key === undefined) {
      ctx.issues.push({ code: 'custom', input, message: `expected ${what}: an object with one of the keys ${keys.join(', ')}` });
      return z.NEVER;
    }
    const parsed = shapes[key].safeParse(input, { reportInput: true });
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.issues.push({ ...issue, input: (issue as { input?: unknown }).input } as never);
      return z.NEVER;
    }
    return parsed.data as z.output<T[keyof T]>;
  });
}

const conditionInput: z.ZodType<ConditionInput, unknown> = z.lazy(() =>
  keyedUnion({ header: headerCondition, envelope: envelopeCondition, note: noteCondition, all: z.strictObject({ all: z.array(conditionInput).min(1) }), any: z.strictObject({ any: z.array(conditionInput).min(1) }), not: z.strictObject({ not: conditionInput }) }, 'a condition'),
) as never;

/** Compiles a condition, reporting problems with their path (relative to the condition). */
function compileCondition(input: ConditionInput, path: (string | number)[], problems: { path: (string | number)[]; message: string }[]): Condition {
  const c = input as Record<string, unknown>;
  if ('all' in c || 'any' in c) {
    const kind = 'all' in c ? 'all' : 'any';
    return { kind, of: (c[kind] as ConditionInput[]).map((x, i) => compileCondition(x, [...path, kind, i], problems)) };
  }
  if ('not' in c) return { kind: 'not', of: compileCondition(c.not as ConditionInput, [...path, 'not'], problems) };
  const allowed = 'envelope' in c ? (c.envelope === 'clientIp' ? (['regex', 'glob', 'equals', 'oneOf', 'present', 'cidr'] as const) : (['regex', 'glob', 'equals', 'oneOf', 'present'] as const)) : 'note' in c ? (['regex', 'glob', 'equals', 'oneOf', 'present', 'numeric'] as const) : (['regex', 'glob', 'equals', 'oneOf', 'present'] as const);
  // Here input is a header, envelope or note condition (the all/any/not forms returned above): its matcher keys.
  const test = compileMatcher(input as MatcherInput, allowed);
  const failed = 'problem' in test;
  if (failed) problems.push({ path: [...path, ...(test.key ? [test.key] : [])], message: test.problem });
  const t: ValueTest = failed ? { describe: 'invalid', test: () => false } : test;
  if ('header' in c) return { kind: 'header', name: c.header as string, key: (c.header as string).toLowerCase(), occurrence: c.occurrence as Occurrence, decode: c.decode as boolean, test: t };
  if ('envelope' in c) return { kind: 'envelope', field: c.envelope as EnvelopeField, occurrence: c.occurrence as 'any' | 'every', test: t };
  const [plugin, ...rest] = (c.note as string).split('.');
  return { kind: 'note', plugin, path: rest, test: t };
}

/** A condition in words, for the decision trace (`not(X-Spam-Flag present)`). */
export function describeCondition(c: Condition): string {
  switch (c.kind) {
    case 'header':
      return `${c.name} ${c.test.describe}`;
    case 'envelope':
      return `${c.field} ${c.test.describe}`;
    case 'note':
      return `${c.plugin}.${c.path.join('.')} ${c.test.describe}`;
    case 'not':
      return `not(${describeCondition(c.of)})`;
    default:
      return `${c.kind}(${c.of.map(describeCondition).join(', ')})`;
  }
}

/** The plugins whose notes a condition reads. */
function notesRead(c: Condition, out: Set<string>): Set<string> {
  if (c.kind === 'note') out.add(c.plugin);
  else if (c.kind === 'all' || c.kind === 'any') for (const x of c.of) notesRead(x, out);
  else if (c.kind === 'not') notesRead(c.of, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Actions

const value = z.string().max(2000).refine((v) => !/[\r\n\0]/.test(v), 'a header value may not contain CR, LF or NUL: it would inject a header (values are folded for you)');

const actionInput = keyedUnion(
  {
    /** Appends a header. */
    add: z.strictObject({ add: headerName, value }),
    /** Inserts a header at a position (0 = top of the message, the default). */
    insert: z.strictObject({ insert: headerName, value, index: z.number().int().min(0).default(0) }),
    /** Changes one occurrence (1 the first, the default; -1 the last); `{value}` is its current value. */
    change: z.strictObject({ change: headerName, value, occurrence: z.number().int().refine((n) => n !== 0, 'occurrences count from 1 (or from -1 for the last)').default(1) }),
    /** Deletes one occurrence, or all (the default). */
    delete: z.strictObject({ delete: headerName, occurrence: z.union([z.literal('all'), z.number().int().refine((n) => n !== 0, 'occurrences count from 1 (or from -1 for the last)')]).default('all') }),
    /** Replaces every occurrence with one header of this value (adds it when absent). */
    set: z.strictObject({ set: headerName, value }),
  },
  'an action',
);

/** A compiled action. */
export type Action =
  | { readonly kind: 'add'; readonly name: string; readonly value: Template }
  | { readonly kind: 'set'; readonly name: string; readonly value: Template }
  | { readonly kind: 'insert'; readonly name: string; readonly value: Template; readonly index: number }
  | { readonly kind: 'change'; readonly name: string; readonly value: Template; readonly occurrence: number }
  | { readonly kind: 'delete'; readonly name: string; readonly occurrence: 'all' | number };

// ---------------------------------------------------------------------------------------------
// Rules and the policy field

/** Verdict actions a rule can return. */
export type RuleVerdictAction = 'accept' | 'reject' | 'tempfail' | 'discard' | 'quarantine';

const ruleInput = z.strictObject({
  /** A name for the trace, the logs and the metrics (default `rule-<n>`). */
  name: z.string().regex(/^[\w.-]+$/, 'expected letters, digits, dot, dash or underscore').max(64).optional(),
  /** When the rule applies (absent: always). */
  if: conditionInput.optional(),
  /** What it does to the headers, in order. */
  then: z.array(actionInput).default([]),
  /** A verdict to give when it applies. */
  verdict: z
    .strictObject({
      action: z.enum(['accept', 'reject', 'tempfail', 'discard', 'quarantine']),
      /** Why, for the trace and the hold reason; a template. */
      reason: z.string().max(400).optional(),
      /** The SMTP reply for reject and tempfail; its text is a template. */
      reply: replyConfigSchema.optional(),
    })
    .optional(),
  /** When to evaluate: `endOfHeaders`, `endOfMessage`, or `auto` (the default; see the README). */
  at: z.enum(['auto', 'endOfHeaders', 'endOfMessage']).default('auto'),
  /** Stop evaluating this policy's later rules once this one applied. */
  stop: z.boolean().default(false),
});

/** A compiled rule. */
export interface Rule {
  /** Its name. */
  readonly name: string;
  /** Its condition; undefined applies always. */
  readonly when: Condition | undefined;
  /** Its actions. */
  readonly actions: readonly Action[];
  /** Its verdict. */
  readonly verdict: { readonly action: RuleVerdictAction; readonly reason: Template | undefined; readonly reply: z.infer<typeof replyConfigSchema> | undefined; readonly replyText: Template | undefined } | undefined;
  /** The stage it runs at. */
  readonly at: 'endOfHeaders' | 'endOfMessage';
  /** Stops the policy's later rules. */
  readonly stop: boolean;
}

/** The `headers` field of a policy, compiled. */
export interface HeadersPolicy {
  /** Rules in order. */
  readonly rules: readonly Rule[];
  /**
   * `true`: once the policy's end-of-headers rules ran, the policy's other plugins skip this message
   * (the original's OnlyHeaders). `'matched'`: only when one of those rules applied.
   */
  readonly onlyHeaders: boolean | 'matched';
}

const fieldObject = z.strictObject({ rules: z.array(ruleInput), onlyHeaders: z.union([z.boolean(), z.literal('matched')]).default(false) });

/** What a configuration may write in the `headers` field: a list of rules, or `{ rules, onlyHeaders }`. */
export type HeadersInput = z.input<typeof ruleInput>[] | z.input<typeof fieldObject>;

/**
 * A list of rules, or `{ rules, onlyHeaders }`; problems keep the path as the configuration writes it.
 * `z.custom` without a check accepts anything, as `z.unknown()` would: it only gives the field its
 * input type, which `defineConfig` checks a configuration's `headers` fields against.
 */
const fieldInput = z.custom<HeadersInput>().transform((input, ctx): z.output<typeof fieldObject> & { listed: boolean } => {
  const listed = Array.isArray(input);
  const parsed = listed ? z.array(ruleInput).safeParse(input, { reportInput: true }) : fieldObject.safeParse(input, { reportInput: true });
  if (!parsed.success) {
    const wrongType = !listed && (input === null || typeof input !== 'object');
    if (wrongType) ctx.issues.push({ code: 'custom', input, message: 'expected a list of rules, or { rules, onlyHeaders }' });
    else for (const issue of parsed.error.issues) ctx.issues.push({ ...issue, input: (issue as { input?: unknown }).input } as never);
    return z.NEVER;
  }
  return listed ? { rules: parsed.data as z.output<typeof ruleInput>[], onlyHeaders: false, listed } : { ...(parsed.data as z.output<typeof fieldObject>), listed };
});

/** The `headers` policy field: a list of rules, or `{ rules, onlyHeaders }`. */
export const headersField = fieldInput.transform((input, ctx): HeadersPolicy => {
  const list = input.rules;
  const base: (string | number)[] = input.listed ? [] : ['rules'];
  const rules = list.map((r, index): Rule => {
    const problems: { path: (string | number)[]; message: string }[] = [];
    const name = r.name ?? `rule-${index + 1}`;
    const when = r.if === undefined ? undefined : compileCondition(r.if, ['if'], problems);
    const template = (source: string, path: (string | number)[]): Template => {
      const t = parseTemplate(source);
      if (typeof t === 'string') {
        problems.push({ path, message: t });
        return { source, parts: [source], notes: [] };
      }
      return t;
    };
    const actions = r.then.map((a, i): Action => {
      if ('add' in a) return { kind: 'add', name: a.add, value: template(a.value, ['then', i, 'value']) };
      if ('insert' in a) return { kind: 'insert', name: a.insert, value: template(a.value, ['then', i, 'value']), index: a.index };
      if ('change' in a) return { kind: 'change', name: a.change, value: template(a.value, ['then', i, 'value']), occurrence: a.occurrence };
      if ('set' in a) return { kind: 'set', name: a.set, value: template(a.value, ['then', i, 'value']) };
      return { kind: 'delete', name: a.delete, occurrence: a.occurrence };
    });
    const verdict = r.verdict && {
      action: r.verdict.action,
      reason: r.verdict.reason === undefined ? undefined : template(r.verdict.reason, ['verdict', 'reason']),
      reply: r.verdict.reply,
      replyText: r.verdict.reply?.text === undefined ? undefined : template(r.verdict.reply.text, ['verdict', 'reply', 'text']),
    };
    if (actions.length === 0 && !verdict) problems.push({ path: [], message: `rule ${name} does nothing: give it actions (then) or a verdict` });
    if (verdict?.action === 'accept' && r.at === 'endOfHeaders') problems.push({ path: ['at'], message: 'an accept ends the message before header changes are sent: an accepting rule runs at endOfMessage' });
    for (const p of problems) ctx.issues.push({ code: 'custom', input: p.path.reduce<unknown>((v, k) => (v as Record<string | number, unknown> | undefined)?.[k], r), path: [...base, index, ...p.path], message: `rule ${name}: ${p.message}` });
    // Rules that read other plugins' results wait for them: those plugins decide at end of message.
    const notes = new Set([...(when ? notesRead(when, new Set()) : []), ...actions.flatMap((a) => ('value' in a ? a.value.notes : [])), ...(verdict?.reason?.notes ?? []), ...(verdict?.replyText?.notes ?? [])]);
    const late = notes.size > 0 || verdict?.action === 'accept';
    return { name, when, actions, verdict, at: r.at === 'auto' ? (late ? 'endOfMessage' : 'endOfHeaders') : r.at, stop: r.stop };
  });
  const names = new Set<string>();
  rules.forEach((r, index) => {
    if (names.has(r.name)) ctx.issues.push({ code: 'custom', input: r.name, path: [...base, index, 'name'], message: `rule name ${r.name} is used twice in this policy` });
    names.add(r.name);
  });
  return { rules, onlyHeaders: input.onlyHeaders };
});

/** The plugin options. */
export const headersOptions = z.strictObject({
  /**
   * Time budget for matching per message, in ms (default 50). RE2 matching is linear, so this is a
   * second line of defence: past it, the remaining rules of the message are skipped and logged.
   */
  matchBudgetMs: z.number().min(0).default(50),
  /** Longest header value tested, in characters (default 16,384); longer values are tested on their start. */
  maxValueLength: z.number().int().min(64).default(16_384),
});

/** The plugin options, validated. */
export type HeadersOptions = z.infer<typeof headersOptions>;
