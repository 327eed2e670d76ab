// Themis monitor dashboard: plain browser JavaScript (ES2022), no dependencies, no build step.
//
// Reads /api/stats, /api/history and /api/top every 5 s and renders them. Every string that comes from the
// API (senders, subjects, policy and server names, reasons) reaches the DOM through textContent or
// setAttribute only — never through innerHTML — because most of it is chosen by whoever sends the mail.
(() => {
  'use strict';

  const REFRESH_MS = 5000;
  const FETCH_TIMEOUT_MS = 10000;
  const STALE_AFTER_MS = 3 * REFRESH_MS;
  const WINDOWS = [15, 60, 360, 1440];
  const TOP_LIMIT = 10;
  const OUTCOMES = ['accepted', 'rejected', 'tempfailed', 'discarded', 'quarantined', 'aborted'];
  const REFUSED = ['rejected', 'tempfailed', 'discarded'];
  // Colour-blind friendly, distinguishable on white; assigned to policies in first-seen order and kept.
  const PALETTE = ['#3b6fb6', '#e08a2c', '#3c9a5f', '#c2453d', '#7b5ea7', '#2a9d9f', '#c8a02a', '#d0679b', '#6b7a8f', '#8c6a46'];
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const TOKEN_MESSAGE = 'token required: open /dashboard?token=…';

  const params = new URLSearchParams(location.search);
  const token = params.get('token') ?? '';
  let minutes = WINDOWS.includes(Number(params.get('minutes'))) ? Number(params.get('minutes')) : 60;

  const state = {
    stats: null, history: null, top: null,
    receivedAt: 0, lastOk: 0, lastError: null,
    refreshes: 0, failures: 0,
    generation: 0, timer: 0, controller: null,
  };
  const policyColors = new Map();

  // ---------------------------------------------------------------- small helpers

  const $ = (id) => document.getElementById(id);
  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

  /** An HTML element; `text` goes through textContent, everything else through setAttribute. */
  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'text') node.textContent = String(value);
      else if (key === 'class') node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  /** An SVG element, same conventions as el(). */
  function svgEl(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null) continue;
      node.setAttribute(key, String(value));
    }
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const num = (v) => (Number.isFinite(Number(v)) ? Number(v) : 0);
  const str = (v) => (v === undefined || v === null ? '' : String(v));
  const intFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const fmtInt = (v) => intFormat.format(num(v));
  const fmtRate = (v) => (num(v) >= 10 ? intFormat.format(num(v)) : num(v).toFixed(1));
  const pad2 = (n) => String(n).padStart(2, '0');
  const hhmm = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  const hhmmss = (d) => `${hhmm(d)}:${pad2(d.getSeconds())}`;
  const ymd = (d) => `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
  const outcome = (o, key) => num(o && typeof o === 'object' ? o[key] : 0);
  const sumOutcomes = (o) => (o && typeof o === 'object' ? Object.values(o).reduce((s, v) => s + num(v), 0) : 0);
  const list = (v) => (Array.isArray(v) ? v : []);

  function pct(part, whole) {
    if (!whole) return '—';
    const p = (part / whole) * 100;
    if (p > 0 && p < 0.1) return '<0.1%';
    if (p > 99.9 && p < 100) return '>99.9%';
    return `${(p > 0 && p < 10) || (p > 99 && p < 100) ? p.toFixed(1) : Math.round(p)}%`;
  }

  /** 299 → "4m 59s", 3725 → "1h 2m 5s", 42 → "42s". */
  function fmtRemaining(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = s % 60;
    if (h > 0) return `${h}h ${m}m ${sec}s`;
    if (m > 0) return `${m}m ${sec}s`;
    return `${sec}s`;
  }

  function fmtWindow(m) {
    return m < 60 ? `${m} min` : `${m / 60} h`;
  }

  // ---------------------------------------------------------------- fetching

  class HttpError extends Error {
    constructor(status, path) {
      super(`HTTP ${status} from ${path}`);
      this.status = status;
    }
  }

  async function getJson(path, signal) {
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    // The token travels in the header only, never in the URL, so it stays out of access logs.
    const res = await fetch(path, { headers, signal, cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) throw new HttpError(res.status, path.split('?')[0]);
    return res.json();
  }

  async function refresh() {
    clearTimeout(state.timer);
    state.controller?.abort();
    const generation = ++state.generation;
    const controller = new AbortController();
    state.controller = controller;
    const timeout = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    const started = Date.now();
    const m = minutes;
    try {
      const [stats, history, top] = await Promise.all([
        getJson(`/api/stats?minutes=${m}`, controller.signal),
        getJson(`/api/history?minutes=${m}`, controller.signal),
        getJson(`/api/top?minutes=${m}&limit=${TOP_LIMIT}`, controller.signal),
      ]);
      if (generation !== state.generation) return; // superseded by a window change
      state.stats = stats ?? {};
      state.history = history ?? {};
      state.top = top ?? {};
      state.receivedAt = Date.now();
      render();
      state.lastOk = Date.now();
      state.lastError = null;
      state.refreshes += 1;
      hideAlert();
      document.body.dataset.loaded = '1';
      document.body.dataset.refreshes = String(state.refreshes);
    } catch (err) {
      if (generation !== state.generation) return;
      state.lastError = controller.signal.aborted ? new Error('request timed out') : err;
      state.failures += 1;
      document.body.dataset.failures = String(state.failures);
      if (err instanceof HttpError && err.status === 401) {
        showAlert(token ? `${TOKEN_MESSAGE} (the token in this address was not accepted)` : TOKEN_MESSAGE);
      } else if (!(err instanceof HttpError) && !(err instanceof TypeError) && !controller.signal.aborted) {
        // Not a network or HTTP failure: a bug in rendering, worth a console line (no token in it).
        console.error('dashboard render failed:', err);
      }
    } finally {
      clearTimeout(timeout);
      if (generation === state.generation) {
        state.controller = null;
        state.timer = setTimeout(refresh, Math.max(500, REFRESH_MS - (Date.now() - started)));
        updateStatus();
      }
    }
  }

  // ---------------------------------------------------------------- status, alert, countdowns

  function updateStatus() {
    const status = $('status');
    const text = status.querySelector('.status-text');
    const now = Date.now();
    if (!state.lastOk && !state.lastError) {
      status.dataset.state = 'loading';
      text.textContent = 'connecting…';
      status.title = '';
      return;
    }
    const last = state.lastOk ? hhmmss(new Date(state.lastOk)) : 'never';
    if (state.lastError || now - state.lastOk > STALE_AFTER_MS) {
      status.dataset.state = 'stale';
      const why = state.lastError
        ? (state.lastError instanceof HttpError ? `HTTP ${state.lastError.status}` : 'no answer')
        : 'no update';
      text.textContent = `stale · ${why} · last update ${last}`;
      status.title = state.lastError ? `refresh failed: ${state.lastError.message}` : 'no successful refresh recently';
    } else {
      status.dataset.state = 'live';
      text.textContent = `live · ${last}`;
      status.title = `refreshed every ${REFRESH_MS / 1000} s; last refresh at ${last}`;
    }
  }

  function showAlert(message) {
    const alert = $('alert');
    alert.textContent = message;
    alert.hidden = false;
  }

  function hideAlert() {
    const alert = $('alert');
    alert.hidden = true;
    alert.textContent = '';
  }

  function updateCountdowns() {
    const now = Date.now();
    for (const row of document.querySelectorAll('[data-testid="blocked-row"], [data-testid="over-row"]')) {
      const until = row.dataset.untilMs === '' ? NaN : Number(row.dataset.untilMs);
      const cell = row.querySelector('.remaining');
      if (!cell || !Number.isFinite(until)) continue;
      const left = Math.ceil((until - now) / 1000);
      if (left > 0) {
        cell.textContent = fmtRemaining(left);
        row.classList.remove('expired');
      } else {
        cell.textContent = 'expired';
        row.classList.add('expired');
      }
    }
  }

  // ---------------------------------------------------------------- rendering

  function render() {
    renderHeader();
    renderTiles();
    assignPolicyColors();
    renderCharts();
    renderPolicyTable();
    renderBlocked();
    renderOver();
    renderTops();
    renderAuth();
    renderServers();
  }

  function renderHeader() {
    const at = $('generated-at');
    const d = new Date(str(state.stats.generatedAt));
    if (Number.isNaN(d.getTime())) {
      at.textContent = '—';
      at.removeAttribute('datetime');
    } else {
      at.textContent = `${ymd(d)} ${hhmmss(d)}`;
      at.setAttribute('datetime', d.toISOString());
    }
  }

  function setTile(id, value, display, sub, title) {
    const tile = byTestId(`tile-${id}`);
    tile.dataset.value = String(value);
    tile.querySelector('.value').textContent = display;
    tile.querySelector('.sub').textContent = sub;
    if (title) tile.title = title; else tile.removeAttribute('title');
  }

  function renderTiles() {
    const totals = state.stats.totals ?? {};
    const o = totals.outcomes ?? {};
    const messages = num(totals.messages);
    const recipients = num(totals.recipients);
    const connections = num(totals.connections);
    const accepted = outcome(o, 'accepted');
    const refused = REFUSED.reduce((s, k) => s + outcome(o, k), 0);
    const quarantined = outcome(o, 'quarantined');
    const rate = state.stats.rate ?? {};
    const w = fmtWindow(num(state.stats.minutes) || minutes);

    setTile('messages', messages, fmtInt(messages), `in the last ${w}`);
    setTile('recipients', recipients, fmtInt(recipients),
      messages ? `${(recipients / messages).toFixed(1)} per message` : '');
    setTile('connections', connections, fmtInt(connections),
      connections ? `${(messages / connections).toFixed(1)} messages each` : '');
    setTile('accepted', accepted, fmtInt(accepted), `${pct(accepted, messages)} of messages`);
    setTile('refused', refused, fmtInt(refused),
      `rej ${fmtInt(outcome(o, 'rejected'))} · temp ${fmtInt(outcome(o, 'tempfailed'))} · disc ${fmtInt(outcome(o, 'discarded'))}`,
      'rejected + tempfailed + discarded');
    setTile('quarantined', quarantined, fmtInt(quarantined), `${pct(quarantined, messages)} of messages`);
    setTile('rate', num(rate.lastMinute), `${fmtInt(rate.lastMinute)}/min`, `average ${fmtRate(rate.perMinute)}/min`,
      'messages in the last complete minute; average over the window');

    document.title = `Themis · ${fmtInt(rate.lastMinute)}/min`;
  }

  /** Policies in display order: busiest first (from stats), then any only seen in the history. */
  function policyOrder() {
    const names = [];
    const seen = new Set();
    const fromStats = list(state.stats.policies).slice().sort((a, b) => num(b?.messages) - num(a?.messages));
    for (const p of fromStats) {
      const name = str(p?.name);
      if (!seen.has(name)) { seen.add(name); names.push(name); }
    }
    const extra = new Set();
    for (const point of list(state.history.series)) {
      for (const name of Object.keys(point?.policies ?? {})) if (!seen.has(name)) extra.add(name);
    }
    names.push(...[...extra].sort());
    return names;
  }

  function assignPolicyColors() {
    for (const name of [...policyOrder()].sort()) {
      if (!policyColors.has(name)) policyColors.set(name, PALETTE[policyColors.size % PALETTE.length]);
    }
  }

  const colorOf = (name) => policyColors.get(name) ?? PALETTE[PALETTE.length - 1];

  // ---- charts

  const MARGIN = { top: 10, right: 12, bottom: 22, left: 40 };

  /** Size the svg's coordinate system to its on-screen size so text is never stretched. */
  function prepareSvg(svg) {
    const box = svg.getBoundingClientRect();
    const width = Math.max(240, Math.floor(box.width || svg.parentElement.clientWidth || 600));
    const height = Math.max(120, Math.floor(box.height || 200));
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.replaceChildren();
    return { width, height, plotW: width - MARGIN.left - MARGIN.right, plotH: height - MARGIN.top - MARGIN.bottom };
  }

  /** Integer y ticks from 0 to a round top value above max. */
  function yTicks(max) {
    const m = Math.max(1, max);
    const raw = m / 4;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / mag;
    const step = Math.max(1, (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag);
    const top = Math.ceil(m / step) * step;
    const ticks = [];
    for (let v = 0; v <= top + step / 2; v += step) ticks.push(Math.round(v * 100) / 100);
    return { top, ticks };
  }

  function timeInterval(n, plotW) {
    const maxLabels = Math.max(2, Math.floor(plotW / 62));
    for (const iv of [1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720]) if (n / iv <= maxLabels) return iv;
    return 1440;
  }

  function parseSeries() {
    return list(state.history.series).map((p) => {
      const d = new Date(str(p?.t));
      return { t: str(p?.t), date: d, valid: !Number.isNaN(d.getTime()), raw: p ?? {} };
    });
  }

  /** Grid lines, y labels and HH:MM labels shared by both charts. x(i) is the centre of minute i's band. */
  function drawAxes(svg, dims, points, top, ticks, x) {
    const { plotW, plotH } = dims;
    const y = (v) => MARGIN.top + plotH - (v / top) * plotH;
    const grid = svgEl('g', { class: 'grid' });
    for (const v of ticks) {
      const yy = Math.round(y(v)) + 0.5;
      grid.append(svgEl('line', { x1: MARGIN.left, x2: MARGIN.left + plotW, y1: yy, y2: yy, class: v === 0 ? 'baseline' : '' }));
      grid.append(svgEl('text', { x: MARGIN.left - 6, y: yy, class: 'ytick', 'text-anchor': 'end', 'dominant-baseline': 'middle' },
        Number.isInteger(v) ? fmtInt(v) : String(v)));
    }
    svg.append(grid);
    const axis = svgEl('g', { class: 'xaxis' });
    const iv = timeInterval(points.length, plotW);
    points.forEach((p, i) => {
      if (!p.valid) return;
      const minuteOfDay = p.date.getHours() * 60 + p.date.getMinutes();
      if (minuteOfDay % iv !== 0) return;
      const xx = Math.round(x(i)) + 0.5;
      axis.append(svgEl('line', { x1: xx, x2: xx, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 4, class: 'tick' }));
      axis.append(svgEl('text', { x: xx, y: MARGIN.top + plotH + 15, 'text-anchor': 'middle', class: 'xtick' }, hhmm(p.date)));
    });
    svg.append(axis);
    return y;
  }

  function emptyChart(svg, dims, message) {
    svg.append(svgEl('text', { x: dims.width / 2, y: dims.height / 2, 'text-anchor': 'middle', class: 'empty-text' }, message));
  }

  function renderRateChart() {
    const svg = $('chart-rate');
    const dims = prepareSvg(svg);
    const points = parseSeries();
    const n = points.length;
    const values = points.map((p) => num(p.raw.messages));
    const peak = values.reduce((a, b) => Math.max(a, b), 0);
    const total = values.reduce((a, b) => a + b, 0);
    $('rate-note').textContent = n ? `messages per minute · peak ${fmtInt(peak)} · avg ${fmtRate(n ? total / n : 0)}` : '';
    if (!n) return emptyChart(svg, dims, 'No data');

    const band = dims.plotW / n;
    const x = (i) => MARGIN.left + (i + 0.5) * band;
    const { top, ticks } = yTicks(peak);
    const y = drawAxes(svg, dims, points, top, ticks, x);
    const base = y(0);

    // The current minute is still filling up: shade its band so a low last value is not misread as a drop.
    svg.append(svgEl('rect', {
      class: 'current-minute', x: MARGIN.left + (n - 1) * band, y: MARGIN.top, width: band, height: dims.plotH,
    }));

    const coords = values.map((v, i) => [x(i), y(v)]);
    const line = coords.map(([cx, cy], i) => `${i ? 'L' : 'M'}${cx.toFixed(1)},${cy.toFixed(1)}`).join('');
    const area = `${line}L${coords[n - 1][0].toFixed(1)},${base}L${coords[0][0].toFixed(1)},${base}Z`;
    svg.append(svgEl('path', { d: area, class: 'area' }));
    svg.append(svgEl('path', { d: line, class: band < 3 ? 'line thin' : 'line' }));

    // Markers are hover targets; on a dense or all-zero chart they stay invisible until hovered.
    const dots = svgEl('g', { class: band < 7 || peak === 0 ? 'dots dense' : 'dots' });
    const r = band < 7 ? Math.max(1.5, band / 2) : Math.min(3.5, band / 3);
    points.forEach((p, i) => {
      const partial = i === n - 1;
      const circle = svgEl('circle', {
        cx: coords[i][0].toFixed(1), cy: coords[i][1].toFixed(1), r: r.toFixed(1),
        class: partial ? 'pt partial' : 'pt', 'data-minute': p.t, 'data-value': values[i],
      });
      const when = p.valid ? hhmm(p.date) : p.t;
      circle.append(svgEl('title', {}, `${when} · ${fmtInt(values[i])} messages${partial ? ' (current minute, incomplete)' : ''}`));
      dots.append(circle);
    });
    svg.append(dots);
    if (peak === 0) {
      svg.append(svgEl('text', { x: dims.width / 2, y: MARGIN.top + dims.plotH / 2, 'text-anchor': 'middle', class: 'empty-text' },
        'No messages in this window'));
    }
  }

  function renderPolicyChart() {
    const svg = $('chart-policies');
    const dims = prepareSvg(svg);
    const points = parseSeries();
    const n = points.length;
    const order = policyOrder();
    const legend = $('policy-legend');
    legend.replaceChildren();

    // value of policy p in minute i = the sum of that policy's outcomes in that minute
    const values = points.map((p) => {
      const per = p.raw.policies && typeof p.raw.policies === 'object' ? p.raw.policies : {};
      return order.map((name) => sumOutcomes(per[name]));
    });
    const totals = order.map((_, k) => values.reduce((s, row) => s + row[k], 0));
    order.forEach((name, k) => {
      legend.append(el('li', { 'data-policy': name }, [
        el('span', { class: 'swatch', style: `background:${colorOf(name)}` }),
        el('span', { class: 'legend-name', text: name }),
        el('span', { class: 'legend-total', text: fmtInt(totals[k]) }),
      ]));
    });
    if (!n) return emptyChart(svg, dims, 'No data');

    const band = dims.plotW / n;
    const x = (i) => MARGIN.left + (i + 0.5) * band;
    const peak = values.reduce((m, row) => Math.max(m, row.reduce((a, b) => a + b, 0)), 0);
    const { top, ticks } = yTicks(peak);
    const y = drawAxes(svg, dims, points, top, ticks, x);
    if (!order.length || peak === 0) {
      svg.append(svgEl('text', { x: dims.width / 2, y: MARGIN.top + dims.plotH / 2, 'text-anchor': 'middle', class: 'empty-text' },
        'No messages in this window'));
      return;
    }

    const gap = band >= 4 ? Math.min(2, band * 0.25) : 0;
    // Dense windows (24 h): bars narrower than a pixel overlap slightly, so anti-aliasing leaves no stripes.
    const barW = band >= 4 ? band - gap : band + 0.6;
    const bars = svgEl('g', { class: 'bars' });
    points.forEach((p, i) => {
      let acc = 0;
      const when = p.valid ? hhmm(p.date) : p.t;
      order.forEach((name, k) => {
        const v = values[i][k];
        if (!(v > 0)) return;
        const y0 = y(acc);
        acc += v;
        const y1 = y(acc);
        const rect = svgEl('rect', {
          x: (MARGIN.left + i * band + gap / 2).toFixed(2), y: y1.toFixed(2),
          width: barW.toFixed(2), height: Math.max(0.5, y0 - y1).toFixed(2),
          fill: colorOf(name), 'data-policy': name, 'data-minute': p.t, 'data-value': v,
        });
        rect.append(svgEl('title', {}, `${when} · ${name}: ${fmtInt(v)} messages${i === n - 1 ? ' (current minute, incomplete)' : ''}`));
        bars.append(rect);
      });
    });
    svg.append(bars);
  }

  function renderCharts() {
    if (!state.stats || !state.history) return;
    renderRateChart();
    renderPolicyChart();
  }

  // ---- tables

  function fillBody(table, rows, emptyText, columns) {
    const tbody = table.tBodies[0];
    if (rows.length) tbody.replaceChildren(...rows);
    else tbody.replaceChildren(el('tr', { class: 'empty' }, [el('td', { colspan: columns, text: emptyText })]));
  }

  function outcomeCells(o) {
    return OUTCOMES.map((key) => {
      const v = outcome(o, key);
      return el('td', { class: `num ${key}${v ? '' : ' zero'}`, text: fmtInt(v) });
    });
  }

  function renderPolicyTable() {
    const table = byTestId('policies-table');
    const rows = list(state.stats.policies)
      .slice()
      .sort((a, b) => num(b?.messages) - num(a?.messages))
      .map((p) => {
        const name = str(p?.name);
        return el('tr', { 'data-testid': 'policy-row', 'data-policy': name }, [
          el('td', { class: 'name' }, [
            el('span', { class: 'swatch', style: `background:${colorOf(name)}` }),
            el('span', { class: 'name-text', text: name, title: name }),
          ]),
          el('td', { class: 'num messages', text: fmtInt(p?.messages) }),
          ...outcomeCells(p?.outcomes),
        ]);
      });
    fillBody(table, rows, 'No policy matched any message in this window', 8);
  }

  function renderBlocked() {
    const table = byTestId('blocked-table');
    const receivedAt = state.receivedAt;
    const blocked = list(state.stats.blocked);
    const rows = blocked.map((b) => {
      // An administrator's block has no end (remainingSeconds null): no countdown.
      const lifted = b?.remainingSeconds === null;
      const untilMs = lifted ? '' : receivedAt + num(b?.remainingSeconds) * 1000;
      const until = new Date(str(b?.until));
      const untilText = Number.isNaN(until.getTime()) ? '' : `until ${ymd(until)} ${hhmmss(until)}`;
      return el('tr', { 'data-testid': 'blocked-row', 'data-until-ms': untilMs }, [
        el('td', { class: 'policy', text: str(b?.policy), title: str(b?.policy) }),
        el('td', { class: 'subject', text: str(b?.subject), title: str(b?.subject) }),
        el('td', { class: 'num remaining', text: lifted ? 'until lifted' : fmtRemaining(num(b?.remainingSeconds)), title: untilText }),
        el('td', { class: 'reason', text: str(b?.reason), title: str(b?.reason) }),
      ]);
    });
    fillBody(table, rows, 'Nothing blocked', 4);
    $('blocked-count').textContent = blocked.length ? String(blocked.length) : '';
    updateCountdowns();
  }

  function renderOver() {
    const table = byTestId('over-table');
    const receivedAt = state.receivedAt;
    const over = list(state.stats.overRate);
    const rows = over.map((o) =>
      el('tr', { 'data-testid': 'over-row', 'data-until-ms': receivedAt + num(o?.remainingSeconds) * 1000 }, [
        el('td', { class: 'policy', text: str(o?.policy) + (o?.shadow ? ' (shadow)' : ''), title: str(o?.policy) }),
        el('td', { class: 'subject', text: str(o?.subject), title: str(o?.subject) }),
        el('td', { class: 'num remaining', text: fmtRemaining(num(o?.remainingSeconds)) }),
        el('td', { class: 'reason', text: str(o?.reason), title: str(o?.reason) }),
      ]),
    );
    fillBody(table, rows, 'Every sender within its learned rate', 4);
    $('over-count').textContent = over.length ? String(over.length) : '';
  }

  function renderTop(testid, items, emptyText) {
    const table = byTestId(testid);
    const entries = list(items);
    const max = entries.reduce((m, e) => Math.max(m, num(e?.count)), 0);
    const rows = entries.map((e) => {
      const key = str(e?.key);
      const count = num(e?.count);
      return el('tr', { 'data-testid': 'top-row' }, [
        el('td', { class: 'key', title: key }, [
          el('div', { class: 'key-text', text: key }),
          el('div', { class: 'bar', style: `width:${max ? Math.max(2, (count / max) * 100).toFixed(1) : 0}%` }),
        ]),
        el('td', { class: 'num count', text: fmtInt(count) }),
      ]);
    });
    fillBody(table, rows, emptyText, 2);
  }

  function renderTops() {
    const top = state.top;
    renderTop('top-senders', top.senders, 'No mail in this window');
    renderTop('top-sender-ips', top.senderIps, 'No sender used several client IPs');
    renderTop('top-subjects', top.subjects, 'No repeated subjects');
    renderTop('top-blocked', top.blocked, 'Nobody was blocked');
  }

  function sparkline(values) {
    const w = 120;
    const h = 22;
    const svg = svgEl('svg', { class: 'spark', viewBox: `0 0 ${w} ${h}`, width: w, height: h, 'aria-hidden': 'true' });
    if (values.length < 2) return svg;
    const max = Math.max(1, ...values);
    const pts = values.map((v, i) => `${((i / (values.length - 1)) * (w - 2) + 1).toFixed(1)},${(h - 1 - (v / max) * (h - 3)).toFixed(1)}`);
    svg.append(svgEl('polyline', { points: pts.join(' ') }));
    return svg;
  }

  function renderAuth() {
    const table = byTestId('auth-table');
    const rows = list(state.stats.authentication).map((a) => {
      const results = a?.results && typeof a.results === 'object' ? a.results : {};
      const checked = num(a?.checked);
      const pass = num(results.pass);
      const fail = num(results.fail);
      const other = Object.entries(results)
        .filter(([r, n]) => r !== 'pass' && r !== 'fail' && num(n) > 0)
        .map(([r, n]) => `${r} ${fmtInt(n)}`)
        .join(', ');
      return el('tr', { 'data-testid': 'auth-row', 'data-method': str(a?.method) }, [
        el('td', { class: 'name', text: str(a?.method).toUpperCase() }),
        el('td', { class: 'num', text: fmtInt(checked) }),
        el('td', { class: `num accepted${pass ? '' : ' zero'}`, text: fmtInt(pass) }),
        el('td', { class: 'num share', text: pct(pass, checked) }),
        el('td', { class: `num rejected${fail ? '' : ' zero'}`, text: fmtInt(fail) }),
        el('td', { class: 'other', text: other || '—' }),
      ]);
    });
    fillBody(table, rows, 'No SPF, DKIM or DMARC result in this window (those plugins not loaded, or no mail)', 6);
  }

  function renderServers() {
    const table = byTestId('servers-table');
    const servers = list(state.stats.servers).slice().sort((a, b) => num(b?.messages) - num(a?.messages));
    const all = servers.reduce((s, v) => s + num(v?.messages), 0);
    const series = list(state.history.series);
    const rows = servers.map((srv) => {
      const name = str(srv?.name);
      const messages = num(srv?.messages);
      const o = srv?.outcomes ?? {};
      const handled = sumOutcomes(o);
      const mix = el('div', { class: 'mix', title: OUTCOMES.filter((k) => outcome(o, k)).map((k) => `${k} ${fmtInt(outcome(o, k))}`).join(', ') });
      for (const key of OUTCOMES) {
        const v = outcome(o, key);
        if (v > 0 && handled > 0) mix.append(el('span', { class: `seg ${key}`, style: `width:${((v / handled) * 100).toFixed(2)}%` }));
      }
      const perMinute = series.map((p) => num(p?.servers && typeof p.servers === 'object' ? p.servers[name] : 0));
      return el('tr', { 'data-testid': 'server-row', 'data-server': name }, [
        el('td', { class: 'name', text: name, title: name }),
        el('td', { class: 'num messages', text: fmtInt(messages) }),
        el('td', { class: 'num share', text: pct(messages, all) }),
        ...outcomeCells(o),
        el('td', { class: 'mix-cell' }, [mix]),
        el('td', { class: 'spark-cell' }, [sparkline(perMinute)]),
      ]);
    });
    fillBody(table, rows, 'No server reported in this window', 11);
  }

  // ---------------------------------------------------------------- wiring

  function setWindow(m) {
    if (!WINDOWS.includes(m) || m === minutes) return;
    minutes = m;
    const url = new URL(location.href);
    url.searchParams.set('minutes', String(m));
    history.replaceState(null, '', url); // keeps ?token=… in place, so a reload keeps working
    refresh();
  }

  function start() {
    const select = $('window');
    select.value = String(minutes);
    select.addEventListener('change', () => setWindow(Number(select.value)));

    // Redraw the charts at their new size (the svg coordinate system follows the on-screen width).
    let pending = 0;
    const observer = new ResizeObserver(() => {
      cancelAnimationFrame(pending);
      pending = requestAnimationFrame(() => { if (state.lastOk) renderCharts(); });
    });
    for (const box of document.querySelectorAll('.chart-box')) observer.observe(box);

    setInterval(() => { updateCountdowns(); updateStatus(); }, 1000);
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
