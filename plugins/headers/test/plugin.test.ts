// The headers plugin against the real kernel (themis/testing): every condition and action kind,
// repeated and folded headers, encoded words, templates, verdicts, onlyHeaders, and the safety rules
// (load-time refusal of bad patterns and injections, escaping of computed values, the time budget).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { definePlugin, isThemisError, type PolicyInput } from 'themis-milter';
import { createTestKernel, type TestConnectionMessage, type TestResult } from 'themis-milter/testing';
import headers, { decodeWords } from '../src/index.ts';
import tag from '../../../test/fixtures/plugins/tag.ts';

/** A plugin that leaves a note, as spf and ratelimit do, for rules to read. */
const noter = definePlugin({
  name: 'scanner',
  version: '1.0.0',
  kernel: '^1',
  priority: 40,
  setup() {
    return {
      endOfMessage(ctx) {
        ctx.message!.notes.set({ result: 'fail', score: 7.5, evil: 'x\r\nBcc: victim@example.com' });
        return undefined;
      },
    };
  },
});

const base: TestConnectionMessage = { from: 'alice@example.org', rcpt: ['bob@example.net'], headers: [['Subject', 'Hello']] };

async function run(policies: PolicyInput[], message: Partial<TestConnectionMessage> = {}, extra: Parameters<typeof createTestKernel>[0]['plugins'] = [], options: object = {}): Promise<TestResult> {
  const t = await createTestKernel({ plugins: [{ plugin: headers, options }, ...extra], policies });
  try {
    return await t.message({ ...base, ...message });
  } finally {
    await t.close();
  }
}

const rules = (...list: unknown[]): PolicyInput[] => [{ name: 'inbound', headers: list }];
const mods = (r: TestResult) => r.modifications.map((m) => ('name' in m ? `${m.type} ${'index' in m ? m.index + ' ' : ''}${m.name}: ${m.value}` : `${m.type}`));
const traceOf = (r: TestResult) => r.trace!.entries.filter((e) => e.plugin === 'headers' && e.reason).map((e) => `${e.stage}: ${e.reason}`).join('\n');
const tagIt = (cond: unknown) => rules({ name: 'r', if: cond, then: [{ add: 'X-Hit', value: 'yes' }] });
const hits = async (cond: unknown, message: Partial<TestConnectionMessage> = {}, extra: Parameters<typeof createTestKernel>[0]['plugins'] = []) => mods(await run(tagIt(cond), message, extra)).includes('addHeader X-Hit: yes');

describe('headers: conditions on headers', () => {
  const repeated: Partial<TestConnectionMessage> = { headers: [['Received', 'from a by b'], ['X-Score', '3'], ['received', 'from c by d'], ['X-Score', '97.2']] };

  it('regex, glob, equals, oneOf and presence; header names are case-insensitive', async () => {
    assert.equal(await hits({ header: 'x-score', regex: '^(9[6-9]|100)' }, repeated), true);
    assert.equal(await hits({ header: 'X-Score', regex: '^100' }, repeated), false);
    assert.equal(await hits({ header: 'RECEIVED', glob: 'from c *' }, repeated), true);
    assert.equal(await hits({ header: 'Received', glob: 'from c' }, repeated), false, 'a glob covers the whole value');
    assert.equal(await hits({ header: 'Subject', equals: 'hello' }), false);
    assert.equal(await hits({ header: 'Subject', equals: 'hello', ignoreCase: true }), true);
    assert.equal(await hits({ header: 'Subject', oneOf: ['Hi', 'Hello'] }), true);
    assert.equal(await hits({ header: 'X-Spam-Flag', present: true }), false);
    assert.equal(await hits({ header: 'X-Spam-Flag', present: false }), true);
    assert.equal(await hits({ header: 'subject', present: true }), true);
  });

  it('any, every, first, last or the n-th occurrence of a repeated header', async () => {
    assert.equal(await hits({ header: 'X-Score', equals: '3', occurrence: 'any' }, repeated), true);
    assert.equal(await hits({ header: 'X-Score', regex: '^\\d', occurrence: 'every' }, repeated), true);
    assert.equal(await hits({ header: 'X-Score', equals: '3', occurrence: 'every' }, repeated), false);
    assert.equal(await hits({ header: 'X-Score', equals: '3', occurrence: 'first' }, repeated), true);
    assert.equal(await hits({ header: 'X-Score', equals: '3', occurrence: 'last' }, repeated), false);
    assert.equal(await hits({ header: 'X-Score', equals: '97.2', occurrence: 2 }, repeated), true);
    assert.equal(await hits({ header: 'X-Score', equals: '97.2', occurrence: -1 }, repeated), true);
    assert.equal(await hits({ header: 'X-Score', equals: '97.2', occurrence: 3 }, repeated), false);
    assert.equal(await hits({ header: 'X-Absent', regex: '.*', occurrence: 'every' }), false, 'every of nothing is not a match');
  });

  it('folded lines are unfolded before matching', async () => {
    const folded: Partial<TestConnectionMessage> = { headers: [['X-Long', 'first part\n\tsecond part']] };
    assert.equal(await hits({ header: 'X-Long', equals: 'first part\tsecond part' }, folded), true);
    assert.equal(await hits({ header: 'X-Long', regex: 'part\\ssecond' }, folded), true);
  });

  it('RFC 2047 encoded words are decoded for matching (B and Q, split characters, other charsets), unless decode is false', async () => {
    const encoded: Partial<TestConnectionMessage> = { headers: [['Subject', '=?UTF-8?B?R3LDvA==?= =?UTF-8?B?w59l?= aus =?ISO-8859-1?Q?K=F6ln?=']] };
    assert.equal(await hits({ header: 'Subject', equals: 'Grüße aus Köln' }, encoded), true);
    assert.equal(await hits({ header: 'Subject', regex: 'Grüße' }, encoded), true);
    assert.equal(await hits({ header: 'Subject', regex: 'Grüße', decode: false }, encoded), false);
    assert.equal(decodeWords('=?utf-8?q?caf=C3=A9_cr=C3=A8me?='), 'café crème');
    assert.equal(decodeWords('=?x-unknown?B?AAAA?= plain'), '=?x-unknown?B?AAAA?= plain', 'an undecodable word stays as written');
  });

  it('a pathological regex cannot stall the session: RE2 matches in linear time', async () => {
    // (x+x+)+y against 50,000 x's takes a backtracking engine longer than the universe's age;
    // RE2 answers in linear time, so this test finishes (and the regex does not match).
    const big: Partial<TestConnectionMessage> = { headers: [['X-Evil', 'x'.repeat(50_000)]] };
    const r = await run(rules({ name: 'evil', if: { header: 'X-Evil', regex: '(x+x+)+y' }, then: [{ add: 'X-Hit', value: 'yes' }] }, { name: 'after', then: [{ add: 'X-After', value: 'ran' }] }), big);
    assert.deepEqual(mods(r), ['addHeader X-After: ran']);
    // Values past maxValueLength are tested on their start only.
    const cut = await run(rules({ name: 'tail', if: { header: 'X-Evil', regex: 'y$' }, then: [{ add: 'X-Hit', value: 'yes' }] }), { headers: [['X-Evil', 'x'.repeat(100) + 'y']] }, [], { maxValueLength: 64 });
    assert.deepEqual(mods(cut), []);
  });

  it('past the per-message match budget the remaining rules are skipped, logged in the trace and counted', async () => {
    const warnings: { fields: Record<string, unknown>; message?: string }[] = [];
    const logger = { debug() {}, info() {}, error() {}, warn: (fields: object, message?: string) => warnings.push({ fields: fields as Record<string, unknown>, message }), child: () => logger };
    const t = await createTestKernel({ logger, plugins: [{ plugin: headers, options: { matchBudgetMs: 0 } }], policies: rules({ name: 'one', if: { header: 'Subject', regex: '.' }, then: [{ add: 'X-One', value: '1' }] }, { name: 'two', then: [{ add: 'X-Two', value: '2' }] }, { name: 'three', then: [{ add: 'X-Three', value: '3' }] }) });
    const r = await t.message(base);
    assert.deepEqual(mods(r), ['addHeader X-One: 1']);
    assert.match(traceOf(r), /match budget of 0 ms spent: 2 rules skipped/);
    assert.match(await t.kernel.registry.getSingleMetricAsString('themis_plugin_headers_budget_exceeded_total'), / 1$/m);
    // The warning carries the plugin's registered code, its message built from the code's template.
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0].fields.code, 'THEMIS_HEADERS_BUDGET');
    assert.equal(t.kernel.errors.get('THEMIS_HEADERS_BUDGET')?.owner, 'headers');
    assert.match(warnings[0].message!, /^header matching ran past its time budget \(\d+ ms of 0 ms\); the remaining 2 rule\(s\) were skipped$/);
    await t.close();
  });
});

describe('headers: envelope, notes and combinations', () => {
  it('tests sender, recipients (any or every), client IP by CIDR, SASL login and HELO', async () => {
    assert.equal(await hits({ envelope: 'sender', glob: '*@example.org' }), true);
    assert.equal(await hits({ envelope: 'sender', equals: '' }, { from: '' }), true, 'the null sender is the empty value');
    const two: Partial<TestConnectionMessage> = { rcpt: ['a@example.net', 'b@other.example'] };
    assert.equal(await hits({ envelope: 'recipient', glob: '*@other.example' }, two), true);
    assert.equal(await hits({ envelope: 'recipient', glob: '*@other.example', occurrence: 'every' }, two), false);
    assert.equal(await hits({ envelope: 'recipient', regex: '@', occurrence: 'every' }, two), true);
    assert.equal(await hits({ envelope: 'clientIp', cidr: ['192.0.2.0/24'] }, { client: { address: '192.0.2.77' } }), true);
    assert.equal(await hits({ envelope: 'clientIp', cidr: ['2001:db8::/32'] }, { client: { address: '192.0.2.77' } }), false);
    assert.equal(await hits({ envelope: 'auth', present: true }), false);
    assert.equal(await hits({ envelope: 'auth', equals: 'alice' }, { auth: 'alice' }), true);
    assert.equal(await hits({ envelope: 'helo', regex: '^mx\\.' }, { helo: 'mx.example.org' }), true);
  });

  it('reads other plugins’ notes (text, numbers, presence), waiting for them at end of message', async () => {
    assert.equal(await hits({ note: 'scanner.result', equals: 'fail' }, {}, [noter]), true);
    assert.equal(await hits({ note: 'scanner.score', gt: 5, lte: 7.5 }, {}, [noter]), true);
    assert.equal(await hits({ note: 'scanner.score', lt: 5 }, {}, [noter]), false);
    assert.equal(await hits({ note: 'scanner.missing', present: false }, {}, [noter]), true);
    const r = await run(tagIt({ note: 'scanner.result', equals: 'fail' }), {}, [noter]);
    assert.match(traceOf(r), /^endOfMessage: inbound\/r: scanner\.result "fail" = "fail"/);
  });

  it('all, any and not combine', async () => {
    const m: Partial<TestConnectionMessage> = { headers: [['X-Spam-Flag', 'YES'], ['X-Spam-Score', '12']] };
    assert.equal(await hits({ all: [{ header: 'X-Spam-Flag', equals: 'YES' }, { not: { envelope: 'auth', present: true } }] }, m), true);
    assert.equal(await hits({ all: [{ header: 'X-Spam-Flag', equals: 'YES' }, { header: 'X-Spam-Score', regex: '^[0-4]$' }] }, m), false);
    assert.equal(await hits({ any: [{ header: 'X-Virus', present: true }, { header: 'X-Spam-Score', regex: '^1\\d$' }] }, m), true);
    assert.equal(await hits({ not: { any: [{ header: 'X-Virus', present: true }, { header: 'X-Spam-Flag', present: true }] } }, m), false);
  });
});

describe('headers: actions', () => {
  const repeated: Partial<TestConnectionMessage> = { headers: [['Subject', 'Hello'], ['X-Tag', 'one'], ['X-Tag', 'two'], ['X-Tag', 'three']] };

  it('add, insert at a position, change the n-th, delete one or all, set', async () => {
    const r = await run(
      rules({
        name: 'all-kinds',
        then: [
          { add: 'X-Added', value: 'a' },
          { insert: 'X-Top', value: 'top' },
          { insert: 'X-Third', value: '3rd', index: 2 },
          { change: 'X-Tag', occurrence: 2, value: '<{value}>' },
          { delete: 'X-Tag', occurrence: -1 },
        ],
      }),
      repeated,
    );
    assert.deepEqual(mods(r), ['addHeader X-Added: a', 'insertHeader 0 X-Top: top', 'insertHeader 2 X-Third: 3rd', 'changeHeader 2 X-Tag: <two>', 'changeHeader 3 X-Tag: ']);
    const all = await run(rules({ name: 'd', then: [{ delete: 'x-tag' }] }), repeated);
    assert.deepEqual(mods(all), ['changeHeader 3 x-tag: ', 'changeHeader 2 x-tag: ', 'changeHeader 1 x-tag: '], 'from the last to the first, so indexes stay valid');
    const set = await run(rules({ name: 's', then: [{ set: 'X-Tag', value: 'only' }] }), repeated);
    assert.deepEqual(mods(set), ['changeHeader 1 X-Tag: only', 'changeHeader 3 X-Tag: ', 'changeHeader 2 X-Tag: ']);
    const setAbsent = await run(rules({ name: 's', then: [{ set: 'X-New', value: 'v' }] }), repeated);
    assert.deepEqual(mods(setAbsent), ['addHeader X-New: v']);
    const absent = await run(rules({ name: 'c', then: [{ change: 'X-Nope', value: 'v' }, { delete: 'X-Tag', occurrence: 9 }] }), repeated);
    assert.deepEqual(mods(absent), []);
    assert.match(traceOf(absent), /X-Nope#1 absent, not changed; X-Tag#9 absent, nothing deleted/);
  });

  it('templates: envelope, policy, captures by number and name, decoded headers, notes, now', async () => {
    const r = await run(
      [
        {
          name: 'inbound',
          headers: [
            {
              name: 'tpl',
              if: { header: 'X-Score', regex: '^(?P<score>\\d+)\\.(\\d)' },
              then: [
                { add: 'X-Info', value: '{policy}/{rule} {sender} {sender.domain} {recipients.count} {client.ip} {helo}' },
                { add: 'X-Score-Int', value: '{match.score} {match.2} {match.0}' },
                { add: 'X-Subject-Was', value: '{header.subject}' },
                { add: 'X-Scan', value: '{scanner.result}:{scanner.score} {scanner.nothing}' },
                { add: 'X-When', value: '{now}' },
              ],
            },
          ],
        },
      ],
      { headers: [['Subject', '=?UTF-8?Q?caf=C3=A9?='], ['X-Score', '97.25']], client: { address: '192.0.2.9' }, helo: 'mx.example.org' },
      [noter],
    );
    const m = mods(r);
    assert.equal(m[0], 'addHeader X-Info: inbound/tpl alice@example.org example.org 1 192.0.2.9 mx.example.org');
    assert.equal(m[1], 'addHeader X-Score-Int: 97 2 97.2');
    assert.equal(m[2], 'addHeader X-Subject-Was: =?UTF-8?B?Y2Fmw6k=?=', 'non-ASCII is written as an RFC 2047 encoded word');
    assert.equal(decodeWords(m[2].slice('addHeader X-Subject-Was: '.length)), 'café');
    assert.equal(m[3], 'addHeader X-Scan: fail:7.5', 'a missing note reads as empty');
    assert.match(m[4], /^addHeader X-When: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000$/);
  });

  it('a header is added once per message: not twice across rules or policies, not when already present', async () => {
    const twice: PolicyInput[] = [
      { name: 'first', priority: 1, headers: [{ name: 'a', then: [{ add: 'X-Themis-Policy', value: 'inbound' }] }, { name: 'b', then: [{ add: 'X-Themis-Policy', value: 'inbound' }] }] },
      { name: 'second', priority: 2, headers: [{ name: 'c', then: [{ add: 'x-themis-policy', value: 'inbound' }, { add: 'X-Loop', value: 'seen' }] }] },
    ];
    const r = await run(twice, { headers: [['Subject', 'Hi'], ['X-Loop', 'seen']] });
    assert.deepEqual(mods(r), ['addHeader X-Themis-Policy: inbound']);
    assert.match(traceOf(r), /first\/b: always → X-Themis-Policy already present with that value, not added again/);
    assert.match(traceOf(r), /X-Loop already present with that value/);
  });

  it('two rules changing the same header: the first in policy order wins, the second is reported', async () => {
    const r = await run(rules({ name: 'spam', then: [{ change: 'Subject', value: '[SPAM] {value}' }] }, { name: 'bulk', then: [{ set: 'Subject', value: '[BULK] {value}' }] }));
    assert.deepEqual(mods(r), ['changeHeader 1 Subject: [SPAM] Hello']);
    assert.match(traceOf(r), /Subject already changed by inbound\/spam/);
  });

  it('long values are folded under 78 characters per line with LF + space; a word that no line can hold is cut', async () => {
    const words = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ');
    const r = await run(rules({ name: 'long', then: [{ add: 'X-Long', value: words }, { add: 'X-Huge', value: 'z'.repeat(1500) }] }));
    const long = r.modifications[0] as { value: string };
    assert.ok(long.value.includes('\n '));
    for (const [i, line] of long.value.split('\n').entries()) assert.ok((i === 0 ? 'X-Long: '.length : 0) + line.length <= 78, line);
    assert.equal(long.value.replaceAll('\n', ''), words);
    const huge = r.modifications[1] as { value: string };
    assert.equal('X-Huge: '.length + huge.value.length, 998);
  });

  it('computed values cannot inject headers: CR, LF and other controls become spaces', async () => {
    const r = await run(rules({ name: 'inject', then: [{ add: 'X-Scan', value: 'evil={scanner.evil}' }] }), {}, [noter]);
    assert.deepEqual(r.modifications, [{ type: 'addHeader', name: 'X-Scan', value: 'evil=x Bcc: victim@example.com' }]);
  });
});

describe('headers: verdicts, onlyHeaders and the trace', () => {
  it('a rule can quarantine (X-Virus: infected) or reject with a templated reply; the most severe wins', async () => {
    const virus = rules(
      { name: 'virus', if: { header: 'X-Virus', equals: 'infected' }, verdict: { action: 'quarantine', reason: 'virus found by {header.x-virus-scanner}' } },
      { name: 'tag', if: { header: 'X-Virus', present: true }, then: [{ add: 'X-Themis-Checked', value: 'yes' }] },
    );
    const held = await run(virus, { headers: [['X-Virus', 'infected'], ['X-Virus-Scanner', 'ClamAV']] });
    assert.equal(held.decision.action, 'accept');
    // The hold carries the configured reason alone (Sendmail's mailq -qQ shows it); the rules are the trace's detail.
    assert.deepEqual(held.modifications.at(-1), { type: 'quarantine', reason: 'virus found by ClamAV' });
    const entry = held.trace!.entries.find((e) => e.plugin === 'headers' && e.action === 'quarantine')!;
    assert.equal(entry.detail, 'inbound/virus: X-Virus#1 "infected" = "infected" → quarantine; inbound/tag: X-Virus present → added X-Themis-Checked: "yes"');
    assert.equal(held.trace!.outcome, 'quarantined');

    const refused = await run(rules({ name: 'big', if: { header: 'X-Spam-Score', regex: '^(\\d+)', }, verdict: { action: 'reject', reply: { code: 554, text: 'Spam score {match.1} too high ({policy})' } } }, { name: 'q', if: { header: 'X-Spam-Score', present: true }, verdict: { action: 'quarantine' } }), { headers: [['X-Spam-Score', '31']] });
    assert.deepEqual(refused.decision, { stage: 'endOfHeaders', action: 'reject', reply: { code: 554, enhanced: '5.7.1', text: 'Spam score 31 too high (inbound)' } });
  });

  it('onlyHeaders: the policy’s other plugins skip the message; `matched` only when a rule applied', async () => {
    const policies = (only: boolean | 'matched'): PolicyInput[] => [{ name: 'inbound', tag: { value: 'x', reject: true }, headers: { onlyHeaders: only, rules: [{ name: 'flag', if: { header: 'X-Spam-Flag', present: true }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }] }] } }];
    const flagged: Partial<TestConnectionMessage> = { headers: [['X-Spam-Flag', 'YES']] };
    assert.equal((await run(policies(false), flagged, [tag])).decision.action, 'reject', 'without onlyHeaders the tag plugin refuses');
    const only = await run(policies(true), flagged, [tag]);
    assert.equal(only.decision.action, 'accept');
    assert.deepEqual(mods(only), ['addHeader X-Themis-Policy: inbound']);
    assert.match(traceOf(only), /inbound: onlyHeaders, its other plugins skip this message/);
    assert.equal((await run(policies(true), {}, [tag])).decision.action, 'accept', 'true skips whether or not a rule applied');
    assert.equal((await run(policies('matched'), flagged, [tag])).decision.action, 'accept');
    assert.equal((await run(policies('matched'), {}, [tag])).decision.action, 'reject', '`matched` skips only when a rule applied');
  });

  it('the decision trace names the rule, the header it matched and what was done', async () => {
    const r = await run(rules({ name: 'spam-flag', if: { header: 'X-Spam-Flag', equals: 'YES', ignoreCase: true }, then: [{ add: 'X-Themis-Policy', value: '{policy}' }, { change: 'Subject', value: '[SPAM] {value}' }] }), { headers: [['Subject', 'Win'], ['X-Spam-Flag', 'yes']] });
    assert.equal(traceOf(r), 'endOfHeaders: inbound/spam-flag: X-Spam-Flag#1 "yes" = "YES" (any case) → added X-Themis-Policy: "inbound"; changed Subject#1 to "[SPAM] Win"');
    assert.match(await (await createTestKernel({ plugins: [headers], policies: [] })).kernel.registry.metrics(), /themis_plugin_headers_rules_applied_total/);
  });

  it('the original Themis --actionheaders example: X-CMAE-Score (9[6-9]|100).* adds X-Spam-Flag: YES', async () => {
    const original = rules({ name: 'cmae', if: { header: 'X-CMAE-Score', regex: '^(9[6-9]|100)' }, then: [{ add: 'X-Spam-Flag', value: 'YES' }] });
    assert.deepEqual(mods(await run(original, { headers: [['X-CMAE-Score', '97']] })), ['addHeader X-Spam-Flag: YES']);
    assert.deepEqual(mods(await run(original, { headers: [['X-CMAE-Score', '95']] })), []);
    assert.deepEqual(mods(await run(original, { headers: [['X-CMAE-Score', '100']] })), ['addHeader X-Spam-Flag: YES']);
  });
});

describe('headers: configuration errors name the rule and the field', () => {
  const refused = async (field: unknown, pattern: RegExp) => {
    await assert.rejects(createTestKernel({ plugins: [headers], policies: [{ name: 'inbound', headers: field as never }] }), (e: unknown) => {
      assert.ok(isThemisError(e), String(e));
      assert.match(e.message, pattern);
      return true;
    });
  };

  it('bad regexes, globs, header names, injected values, placeholders and empty rules', async () => {
    await refused([{ name: 'bad', if: { header: 'Subject', regex: '(unclosed' }, then: [{ add: 'X-A', value: 'b' }] }], /headers\[0\]\.if\.regex.*rule bad: invalid regex "\(unclosed": .*missing closing \)/);
    await refused([{ name: 'look', if: { header: 'Subject', regex: '(?=x)' }, then: [{ add: 'X-A', value: 'b' }] }], /rule look: invalid regex.*no backreferences or lookaround/);
    await refused([{ if: { header: 'Bad Name', present: true }, then: [{ add: 'X-A', value: 'b' }] }], /headers\[0\]\.if\.header.*expected a header name/);
    await refused([{ then: [{ add: 'X-A: b', value: 'b' }] }], /headers\[0\]\.then\[0\]\.add.*expected a header name/);
    await refused([{ then: [{ add: 'X-A', value: 'b\r\nBcc: victim@example.com' }] }], /headers\[0\]\.then\[0\]\.value.*may not contain CR, LF or NUL/);
    await refused([{ name: 'typo', then: [{ add: 'X-A', value: '{sendr}' }] }], /then\[0\]\.value.*rule typo: unknown placeholder \{sendr\}/);
    await refused([{ name: 'typo2', then: [{ add: 'X-A', value: '{sender.domian}' }] }], /unknown placeholder \{sender\.domian\}: sender has \{sender\}, \{sender\.domain\}, \{sender\.local\}/);
    await refused([{ name: 'idle', if: { header: 'Subject', present: true } }], /rule idle does nothing/);
    await refused([{ name: 'two', if: { header: 'Subject', regex: 'a', equals: 'b' }, then: [{ add: 'X-A', value: 'b' }] }], /expected exactly one of .*found regex and equals/);
    await refused([{ if: { header: 'Subject', cidr: ['10.0.0.0/8'] }, then: [{ add: 'X-A', value: 'b' }] }], /if\.cidr.*not available here/);
    await refused([{ if: { envelope: 'clientIp', cidr: ['10.0.0.0/33'] }, then: [{ add: 'X-A', value: 'b' }] }], /"10\.0\.0\.0\/33" is not an IP address or CIDR/);
    await refused([{ if: { heder: 'Subject' }, then: [{ add: 'X-A', value: 'b' }] }], /headers\[0\]\.if.*expected a condition: an object with one of the keys header, envelope, note, all, any, not; found \{"heder":"Subject"\}/);
    await refused([{ then: [{ append: 'X-A', value: 'b' }] }], /then\[0\].*expected an action: an object with one of the keys add, insert, change, delete, set/);
    await refused([{ name: 'same', then: [{ add: 'X-A', value: 'b' }] }, { name: 'same', then: [{ add: 'X-B', value: 'b' }] }], /headers\[1\]\.name.*used twice/);
    await refused({ rules: [{ name: 'acc', at: 'endOfHeaders', verdict: { action: 'accept' } }] }, /rules\[0\]\.at.*an accepting rule runs at endOfMessage/);
  });

  it('valid configurations compile to rules at the stage their inputs need', async () => {
    const { headersField } = await import('../src/schema.ts');
    const field = headersField.parse([
      { name: 'early', if: { header: 'X-A', present: true }, then: [{ add: 'X-B', value: '{sender}' }] },
      { name: 'notes', if: { note: 'spf.result', equals: 'fail' }, then: [{ add: 'X-B', value: 'x' }] },
      { name: 'tpl', then: [{ add: 'X-B', value: '{ratelimit.remaining}' }] },
      { name: 'acc', verdict: { action: 'accept' } },
      { name: 'forced', at: 'endOfMessage', then: [{ add: 'X-B', value: 'x' }] },
    ]);
    assert.deepEqual(field.rules.map((r) => `${r.name}@${r.at}`), ['early@endOfHeaders', 'notes@endOfMessage', 'tpl@endOfMessage', 'acc@endOfMessage', 'forced@endOfMessage']);
    assert.equal(field.onlyHeaders, false);
  });
});
