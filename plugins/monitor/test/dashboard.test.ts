/// <reference lib="dom" />
// The dashboard in headless Chromium (Debian's, driven by playwright-core) against a real daemon
// during a traffic run: the tiles, the charts' data points, the blocked-subjects table and the top
// lists show exactly what was sent, the page follows new traffic live, and a screenshot is saved.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { startThemis } from '../../../test/helpers/themis.ts';
import { TOKEN, TRAFFIC, send, writeConfig } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} not installed (Debian package chromium; .ci/run installs it)`;
/** Where the screenshot goes (ignored by git). */
const OUTPUT = fileURLToPath(new URL('../../../test-output/', import.meta.url));

describe('the dashboard in a browser', { skip }, () => {
  it('shows the traffic run exactly, follows new traffic live, and is saved as a screenshot', async (t) => {
    const { chromium } = await import('playwright-core');
    const dir = mkdtempSync(join(tmpdir(), 'themis-dashboard-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'themis.config.json');
    writeConfig(file);
    const themis = await startThemis(['--config', file], {}, { http: true });
    t.after(() => themis.stop());
    const [, port, host] = /^inet:(\d+)@(.+)$/.exec(themis.http!)!;

    for (const m of TRAFFIC) await send(themis.port, m);

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    t.after(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://${host}:${port}/dashboard?token=${TOKEN}&minutes=15`);
    await page.waitForFunction(() => document.body.dataset.loaded === '1', undefined, { timeout: 15_000 });

    const tile = (id: string) => page.getAttribute(`[data-testid="${id}"]`, 'data-value').then((v) => (v === null ? page.textContent(`[data-testid="${id}"] .value`) : v));
    assert.deepEqual(await Promise.all(['tile-messages', 'tile-recipients', 'tile-connections', 'tile-accepted', 'tile-refused', 'tile-quarantined'].map(tile)), ['9', '13', '9', '7', '2', '0']);

    // The charts' data points add up to the traffic, minute by minute.
    const rate = await page.$$eval('[data-testid="chart-rate"] [data-minute][data-value]', (els) => els.map((e) => Number(e.getAttribute('data-value'))));
    assert.equal(rate.length, 15);
    assert.equal(rate.reduce((a, b) => a + b, 0), 9);
    const bars = await page.$$eval('[data-testid="chart-policies"] rect[data-policy][data-value]', (els) => els.map((e) => [e.getAttribute('data-policy'), Number(e.getAttribute('data-value'))] as [string, number]));
    const byPolicy = Object.fromEntries(['limited', 'catchall'].map((p) => [p, bars.filter(([q]) => q === p).reduce((n, [, v]) => n + v, 0)]));
    assert.deepEqual(byPolicy, { limited: 5, catchall: 9 });

    // Blocked now: the busy sender, its limit, and a countdown that runs.
    const blocked = await page.$$eval('[data-testid="blocked-row"]', (rows) => rows.map((r) => ['policy', 'subject', 'remaining', 'reason'].map((c) => r.querySelector(`.${c}`)?.textContent?.trim() ?? '')));
    assert.equal(blocked.length, 1);
    assert.deepEqual([blocked[0][0], blocked[0][1], blocked[0][3]], ['limited', 'sender:a@busy.example', 'over 3/1h']);
    assert.match(blocked[0][2], /^(\d+h )?\d+m \d+s$/);
    await page.waitForFunction((before) => document.querySelector('[data-testid="blocked-row"] .remaining')?.textContent !== before, blocked[0][2], { timeout: 5_000 });

    const rows = (id: string) => page.$$eval(`[data-testid="${id}"] tbody tr:not(.empty)`, (trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent?.trim())));
    assert.deepEqual((await rows('top-senders')).map((r) => [r[0], r.at(-1)]), [['a@busy.example', '5'], ['b@quiet.example', '4']]);
    assert.deepEqual((await rows('top-sender-ips'))[0].filter(Boolean).slice(0, 2), ['b@quiet.example', '2']);
    assert.equal((await rows('top-subjects'))[0][0], 'hello');
    assert.deepEqual((await rows('servers-table')).map((r) => r[0]), ['mx1.test', 'mx2.test']);

    // Live: more traffic shows up without reloading the page.
    const refreshes = Number(await page.evaluate(() => document.body.dataset.refreshes));
    for (let i = 0; i < 3; i++) await send(themis.port, { from: `new${i}@fresh.example`, to: ['r@example.test'], ip: '192.0.2.50', mta: 'mx1.test', subject: 'live' });
    await page.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, refreshes, { timeout: 15_000 });
    await page.waitForFunction(() => document.querySelector('[data-testid="tile-messages"]')?.getAttribute('data-value') === '12', undefined, { timeout: 15_000 });
    assert.match((await page.textContent('[data-testid="status"]')) ?? '', /live/);

    mkdirSync(OUTPUT, { recursive: true });
    const shot = join(OUTPUT, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);
    assert.deepEqual(errors, [], 'no script error on the page');
  });
});
