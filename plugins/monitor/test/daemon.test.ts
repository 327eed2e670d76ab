// The monitor in a real daemon (`themis start`), driven by the milter client with a known traffic
// run: the Prometheus counters, /api/stats, /api/history and /api/top match it exactly; the status
// endpoint wants its token; the dashboard's files are served from the package.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { THEMIS_BIN } from '../../../test/helpers/themis.ts';
import { TOKEN, TRAFFIC, get, getJson, send, startMonitored } from './helpers.ts';

describe('monitor in a daemon', () => {
  it('counters, history and top lists match a known traffic run exactly', async (t) => {
    const { themis, http, file } = await startMonitored(t);

    const answers: string[] = [];
    for (const m of TRAFFIC) answers.push(await send(themis.port, m));
    assert.deepEqual(answers, ['accept', 'accept', 'accept', 'tempfail', 'tempfail', 'accept', 'accept', 'accept', 'accept']);

    const stats = await getJson(http, '/api/stats?minutes=10');
    assert.deepEqual(stats.totals, { messages: 9, recipients: 13, connections: 9, outcomes: { accepted: 7, tempfailed: 2 } });
    assert.deepEqual(stats.policies, [
      { name: 'catchall', messages: 9, outcomes: { accepted: 7, tempfailed: 2 } },
      { name: 'limited', messages: 5, outcomes: { accepted: 3, tempfailed: 2 } },
    ]);
    assert.deepEqual(stats.servers, [
      { name: 'mx1.test', messages: 5, outcomes: { accepted: 3, tempfailed: 2 } },
      { name: 'mx2.test', messages: 4, outcomes: { accepted: 4 } },
    ]);
    assert.deepEqual(stats.verdicts, [{ plugin: 'ratelimit', action: 'tempfail', count: 2 }]);
    assert.equal(stats.blocked.length, 1);
    assert.equal(stats.blocked[0].policy, 'limited');
    assert.equal(stats.blocked[0].subject, 'sender:a@busy.example');
    assert.equal(stats.blocked[0].reason, 'over 3/1h');
    // Until the oldest counted slot leaves the window: at most the window plus one slot (1/12 of it).
    assert.ok(stats.blocked[0].remainingSeconds > 0 && stats.blocked[0].remainingSeconds <= 3600 + 300, String(stats.blocked[0].remainingSeconds));

    const history = await getJson(http, '/api/history?minutes=10');
    assert.equal(history.series.length, 10);
    const sum = (k: 'messages' | 'recipients' | 'connections') => history.series.reduce((n: number, e: Record<string, number>) => n + e[k], 0);
    assert.deepEqual([sum('messages'), sum('recipients'), sum('connections')], [9, 13, 9]);
    assert.ok(history.series.every((e: { t: string }, i: number) => i === 0 || Date.parse(e.t) - Date.parse(history.series[i - 1].t) === 60_000), 'one entry per minute');

    const top = await getJson(http, '/api/top?minutes=60&limit=5');
    assert.deepEqual(top.senders, [{ key: 'a@busy.example', count: 5 }, { key: 'b@quiet.example', count: 4 }]);
    assert.deepEqual(top.senderIps, [{ key: 'b@quiet.example', count: 2 }, { key: 'a@busy.example', count: 1 }]);
    assert.deepEqual(top.subjects[0], { key: 'hello', count: 6 });
    assert.deepEqual(top.blocked, [{ key: 'limited sender:a@busy.example', count: 2 }]);

    const metrics = await get(http, '/metrics');
    assert.equal(metrics.status, 200);
    for (const line of [
      'themis_plugin_monitor_messages_total{outcome="accepted"} 7',
      'themis_plugin_monitor_messages_total{outcome="tempfailed"} 2',
      'themis_plugin_monitor_recipients_total{outcome="accepted"} 11',
      'themis_plugin_monitor_connections_total 9',
      'themis_plugin_monitor_policy_messages_total{policy="limited",outcome="tempfailed"} 2',
      'themis_plugin_monitor_server_messages_total{server="mx2.test",outcome="accepted"} 4',
      'themis_plugin_monitor_verdicts_total{plugin="ratelimit",action="tempfail"} 2',
      'themis_plugin_ratelimit_decisions_total{policy="limited",outcome="denied"} 2',
    ])
      assert.ok(metrics.body.includes(line), `missing ${line}`);
    assert.match(metrics.body, /^process_cpu_user_seconds_total \d/m, 'default process metrics');
    assert.match(metrics.body, /^themis_hook_calls_total\{plugin="ratelimit",hook="endOfMessage"\} 9$/m, 'hook latency per stage and plugin');
    assert.doesNotMatch(metrics.body, /busy\.example|quiet\.example/, 'no address is ever a label');

    // themis stats reads the same API: as JSON, and as a table.
    const run = (args: string[]) => promisify(execFile)(process.execPath, [THEMIS_BIN, 'stats', '--config', file, '--http', http, ...args]);
    const asJson = JSON.parse((await run(['--json', '--minutes', '10'])).stdout);
    assert.deepEqual(asJson.stats.totals, stats.totals);
    assert.deepEqual(asJson.top.senders, top.senders);
    const text = (await run(['--minutes', '10'])).stdout;
    assert.match(text, /messages\s+recipients\s+connections\s+accepted\s+rejected\s+tempfailed/);
    assert.match(text, /^\s+9\s+13\s+9\s+7\s+0\s+2\s/m);
    assert.match(text, /Blocked now\n.*\n.*\n\s+limited\s+sender:a@busy\.example\s+(\d+h )?\d+m( \d+s)?\s+over 3\/1h/);
    assert.match(text, /Top senders\n.*\n.*\n\s+a@busy\.example\s+5\n\s+b@quiet\.example\s+4/);
  });

  it('the status endpoint wants its token (header or ?token=), except /healthz; bad queries get 400; the dashboard files are served', async (t) => {
    const { http } = await startMonitored(t);
    for (const path of ['/api/stats', '/metrics', '/status', '/dashboard']) {
      const r = await get(http, path, null);
      assert.equal(r.status, 401, path);
      assert.match(r.body, /THEMIS_ERR_HTTP_UNAUTHORIZED/);
    }
    assert.equal((await get(http, '/api/stats', 'wrong-token-but-long-enough')).status, 401);
    assert.equal((await get(http, `/api/stats?token=${TOKEN}`, null)).status, 200);
    assert.equal((await get(http, '/healthz', null)).status, 200);
    const bad = await get(http, '/api/history?minutes=abc');
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).error, /minutes must be a whole number from 1 to 2880/);
    const page = await get(http, '/dashboard');
    assert.equal(page.status, 200);
    assert.equal(page.type, 'text/html; charset=utf-8');
    assert.match(page.body, /\/dashboard\/app\.js/);
    assert.equal((await get(http, '/dashboard/app.js')).type, 'text/javascript; charset=utf-8');
    assert.equal((await get(http, '/dashboard/style.css')).type, 'text/css; charset=utf-8');
    const missing = await get(http, '/nope');
    assert.equal(missing.status, 404);
    assert.match(missing.body, /\/api\/history, \/api\/stats, \/api\/top, \/dashboard/);
  });
});
