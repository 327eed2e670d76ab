// The estimators on known series: known learned state in, known center, spread and bound out.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { boundWords, decide, estimate, explain, mad, median, type BoundSettings, type LearnedTimeframe } from '../src/estimate.ts';

const settings = (over: Partial<BoundSettings> = {}): BoundSettings => ({ estimator: 'robust', k: 4, factor: 1, floor: 0, minHistory: 5, prior: { mean: 2, sd: 4, weight: 0 }, ...over });
const learned = (history: number[], count: number, extra: Partial<LearnedTimeframe> = {}): LearnedTimeframe => {
  // The EW statistics of the same series (alpha = 1/n throughout: a plain mean and variance).
  const mean = history.reduce((a, b) => a + b, 0) / history.length;
  const variance = history.reduce((a, b) => a + (b - mean) ** 2, 0) / history.length;
  return { minutes: 5, count, n: history.length, mean, variance, history, ...extra };
};

describe('predict estimators', () => {
  it('median and MAD', () => {
    assert.equal(median([5, 1, 3]), 3);
    assert.equal(median([4, 1, 3, 2]), 2.5);
    assert.equal(median([]), 0);
    assert.equal(mad([1, 1, 2, 2, 4, 6, 9]), 1); // median 2; deviations 1 1 0 0 2 4 7 → 1
  });

  it('robust: median + k·1.4826·MAD, not pulled up by one past burst', () => {
    const series = [2, 3, 2, 4, 3, 2, 3, 60, 3, 2];
    const r = estimate(learned(series, 0), 'robust');
    assert.equal(r.center, 3);
    assert.equal(r.spread, 1.4826); // MAD 1
    const e = estimate(learned(series, 0), 'ewma');
    assert.ok(e.center > 8 && e.spread > 17, 'the EW mean and deviation are dragged up by the 60');
  });

  it('a MAD of 0 falls back to the EW deviation', () => {
    const r = estimate(learned([1, 1, 1, 1, 1, 1, 5], 0), 'robust');
    assert.equal(r.center, 1);
    assert.ok(r.spread > 1.3 && r.spread < 1.5, String(r.spread));
  });

  it('the bound: max(floor, factor·(center + k·spread)), over only when the count exceeds it', () => {
    const t = learned([4, 4, 6, 2, 4, 5, 3], 37);
    const d = decide(t, settings({ estimator: 'ewma', k: 3 }));
    // mean 4, variance 10/7 → sd 1.195: bound 4 + 3·1.195 = 7.59
    assert.equal(Math.round(d.bound! * 100) / 100, 7.59);
    assert.equal(d.over, true);
    assert.equal(explain(d, 'recipients'), '37 recipients in 5 min, learned normal 4 ± 1.2, bound 7.6');
    assert.equal(decide(t, settings({ estimator: 'ewma', k: 3, floor: 40 })).over, false, 'the floor wins');
    // A bound the signals divided far below one is said as it is, not rounded to 0 (found through a real Postfix).
    assert.deepEqual([123.4, 7.59, 1, 0.5, 0.02934, 0.000123, 0].map(boundWords), ['123', '7.6', '1', '0.5', '0.029', '0.00012', '0']);
    assert.equal(explain({ ...d, count: 8, minutes: 1, bound: 19 / 678.6 }, 'recipients'), '8 recipients in 1 min, learned normal 4 ± 1.2, bound 0.028');
    assert.equal(decide(t, settings({ estimator: 'ewma', k: 3, factor: 5 })).bound! > 37, true, 'a lenient factor');
  });

  it('no action before minHistory active buckets; the prior dominates a new subject and fades', () => {
    const young = decide(learned([1, 1], 500), settings({ minHistory: 5 }));
    assert.equal(young.bound, null);
    assert.equal(young.over, false);
    assert.match(explain(young, 'recipients'), /not acting before more history \(2 buckets\)/);
    const prior = { mean: 10, sd: 5, weight: 5 };
    const five = decide(learned([1, 1, 1, 1, 1], 0), settings({ prior }));
    const fifty = decide(learned(Array(50).fill(1), 0), settings({ prior }));
    assert.equal(five.center, 5.5); // (5·1 + 5·10) / 10
    assert.ok(fifty.center < 2, `the prior fades: ${fifty.center}`);
  });
});
