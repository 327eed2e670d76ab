/**
 * The soak run's chart, as a hand-written SVG: resident memory (MB, left axis, one line per process)
 * and the store's key count (right axis) against time, with the settle band (±10 % of the
 * post-warm-up level), the 250 MB ceiling, the end of the warm-up (10 % of the messages) and the end
 * of the load marked.
 * @module
 */

/** One line of the chart. */
export interface Series {
  label: string;
  color: string;
  /** [seconds, value]; NaN values are skipped. */
  points: [number, number][];
  /** Which axis: left (MB) or right (keys). */
  axis: 'left' | 'right';
  dashed?: boolean;
}

/** What the chart shows. */
export interface ChartSpec {
  title: string;
  series: Series[];
  /** Horizontal band on the left axis (the settle band), MB. */
  band?: { low: number; high: number; label: string };
  /** Horizontal line on the left axis (the ceiling), MB. */
  ceiling?: { value: number; label: string };
  /** Vertical markers, seconds. */
  markers: { at: number; label: string }[];
}

const W = 960;
const H = 480;
const M = { left: 70, right: 80, top: 50, bottom: 60 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A "nice" axis maximum and step above `max`. */
function niceAxis(max: number): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 1 };
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  return { top: Math.ceil(max / step) * step, step };
}

/** Renders the chart as an SVG document. */
export function renderChart(spec: ChartSpec): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const all = spec.series.flatMap((s) => s.points.map((p) => p[0]));
  const tMax = Math.max(1, ...all, ...spec.markers.map((m) => m.at));
  const leftVals = spec.series.filter((s) => s.axis === 'left').flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const rightVals = spec.series.filter((s) => s.axis === 'right').flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const left = niceAxis(Math.max(1, ...leftVals, spec.ceiling?.value ?? 0, spec.band?.high ?? 0) * 1.05);
  const right = niceAxis(Math.max(1, ...rightVals) * 1.05);
  const x = (t: number) => M.left + (t / tMax) * pw;
  const yl = (v: number) => M.top + ph - (v / left.top) * ph;
  const yr = (v: number) => M.top + ph - (v / right.top) * ph;
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(spec.title)}</text>`);
  // Grid and axes.
  for (let v = 0; v <= left.top + 1e-9; v += left.step) {
    o.push(`<line x1="${M.left}" y1="${yl(v).toFixed(1)}" x2="${M.left + pw}" y2="${yl(v).toFixed(1)}" stroke="#eee"/>`);
    o.push(`<text x="${M.left - 6}" y="${(yl(v) + 4).toFixed(1)}" text-anchor="end">${+v.toFixed(2)}</text>`);
  }
  for (let v = 0; v <= right.top + 1e-9; v += right.step) {
    o.push(`<text x="${M.left + pw + 6}" y="${(yr(v) + 4).toFixed(1)}" fill="#7a4">${v >= 10_000 ? `${+(v / 1000).toFixed(1)}k` : +v.toFixed(2)}</text>`);
  }
  const tStep = niceAxis(tMax).step;
  for (let t = 0; t <= tMax + 1e-9; t += tStep) {
    o.push(`<text x="${x(t).toFixed(1)}" y="${M.top + ph + 18}" text-anchor="middle">${+t.toFixed(1)}</text>`);
  }
  o.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  o.push(`<text x="${M.left + pw / 2}" y="${H - 20}" text-anchor="middle">seconds since the load started</text>`);
  o.push(`<text transform="translate(18 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">resident memory, MB</text>`);
  o.push(`<text transform="translate(${W - 14} ${M.top + ph / 2}) rotate(90)" text-anchor="middle" fill="#7a4">store keys (DBSIZE)</text>`);
  if (spec.band) {
    const b = spec.band;
    o.push(`<rect x="${M.left}" y="${yl(b.high).toFixed(1)}" width="${pw}" height="${(yl(b.low) - yl(b.high)).toFixed(1)}" fill="#4a90d9" fill-opacity="0.12"/>`);
    o.push(`<text x="${M.left + 4}" y="${(yl(b.high) - 4).toFixed(1)}" fill="#4a90d9">${esc(b.label)}</text>`);
  }
  if (spec.ceiling) {
    const c = spec.ceiling;
    o.push(`<line x1="${M.left}" y1="${yl(c.value).toFixed(1)}" x2="${M.left + pw}" y2="${yl(c.value).toFixed(1)}" stroke="#d33" stroke-dasharray="6 4"/>`);
    o.push(`<text x="${M.left + pw - 4}" y="${(yl(c.value) - 4).toFixed(1)}" text-anchor="end" fill="#d33">${esc(c.label)}</text>`);
  }
  for (const m of spec.markers) {
    o.push(`<line x1="${x(m.at).toFixed(1)}" y1="${M.top}" x2="${x(m.at).toFixed(1)}" y2="${M.top + ph}" stroke="#999" stroke-dasharray="2 3"/>`);
    o.push(`<text x="${(x(m.at) + 3).toFixed(1)}" y="${M.top + 12}" fill="#666">${esc(m.label)}</text>`);
  }
  // Lines.
  for (const s of spec.series) {
    const y = s.axis === 'left' ? yl : yr;
    const pts = s.points.filter((p) => Number.isFinite(p[1])).map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`);
    if (pts.length) o.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${s.color}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
  }
  // Legend.
  let lx = M.left;
  for (const s of spec.series) {
    o.push(`<line x1="${lx}" y1="${M.top - 12}" x2="${lx + 18}" y2="${M.top - 12}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    o.push(`<text x="${lx + 22}" y="${M.top - 8}">${esc(s.label)}</text>`);
    lx += 30 + s.label.length * 7;
  }
  o.push('</svg>');
  return o.join('\n') + '\n';
}
