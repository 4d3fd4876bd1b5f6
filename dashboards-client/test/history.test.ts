import { describe, expect, it } from 'vitest';
import {
  boundarySeries,
  changeArrow,
  changeTone,
  choosePeriod,
  chooseRange,
  endOfUtcDay,
  weeklyBars,
  withLive,
  type AccountDay,
} from '../src/history';
import { fmtChange, unitOf } from '../src/views/context';

const H = 3_600_000;
const D = 86_400_000;
const iso = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z');
const T0 = Date.parse('2026-11-02T00:00:00Z');

describe('boundarySeries', () => {
  const point = (ms: number, arr: number | null) => ({ at: iso(ms), data: { portfolio: { revenue: { arr } } } });

  it('puts every boundary from `from` to the last row on the line, a missing row as null (a gap)', () => {
    const points = [point(T0 + H, 10), point(T0 + 2 * H, 11), point(T0 + 5 * H, 14)];
    const s = boundarySeries(points, 'portfolio.revenue.arr', T0, H);
    expect(s.times).toEqual([0, 1, 2, 3, 4, 5].map((i) => (T0 + i * H) / 1000));
    expect(s.values).toEqual([null, 10, 11, null, null, 14]);
  });

  it('keeps a null figure as a gap and leaves out boundaries after the last row', () => {
    const s = boundarySeries([point(T0, 1), point(T0 + H, null)], 'portfolio.revenue.arr', T0, H);
    expect(s.values).toEqual([1, null]);
    expect(boundarySeries([], 'portfolio.revenue.arr', T0, H)).toEqual({ times: [], values: [] });
  });

  it('starts at the first boundary at or after `from`', () => {
    const s = boundarySeries([point(T0 + 2 * H, 5)], 'portfolio.revenue.arr', T0 + H / 2, H);
    expect(s.times).toEqual([(T0 + H) / 1000, (T0 + 2 * H) / 1000]);
    expect(s.values).toEqual([null, 5]);
  });
});

describe('withLive', () => {
  it('appends live samples after the last history time, replacing ones closer than minGap', () => {
    const history = { times: [10, 20], values: [1, null] };
    const live = { times: [5, 20, 30, 31, 40], values: [9, 9, 3, 4, 5] };
    expect(withLive(history, live, 2)).toEqual({ times: [10, 20, 31, 40], values: [1, null, 4, 5] });
    expect(history.times).toEqual([10, 20]); // not changed in place
  });
});

describe('weeklyBars', () => {
  const day = (ms: number, score: number | null, tier: string) => ({ at: iso(ms), account: { health: { score, tier } } }) as AccountDay;

  it('makes 18 weeks ending at `end`, each the mean score of its days, the worst tier, gaps as null', () => {
    const end = endOfUtcDay(T0 + 10 * H); // 2026-11-03T00:00Z
    const days = [day(end - D, 80, 'green'), day(end - 2 * D, 60, 'yellow'), day(end - 8 * D, 40, 'red'), day(end - 30 * 7 * D, 1, 'red')];
    const bars = weeklyBars(days, end);
    expect(bars).toHaveLength(18);
    expect(bars[17]).toMatchObject({ end: iso(end).replace('Z', '.000Z'), days: 2, score: 70, tier: 'yellow' });
    expect(bars[16]).toMatchObject({ days: 1, score: 40, tier: 'red' });
    expect(bars.slice(0, 16).every((b) => b.score === null && b.days === 0 && b.tier === null)).toBe(true);
    expect(Date.parse(bars[0].start)).toBe(end - 18 * 7 * D);
  });

  it('rounds the mean to one decimal and ignores days without a score', () => {
    const end = T0 + 7 * D;
    const bars = weeklyBars([day(T0, 70, 'green'), day(T0 + D, 70.15, 'green'), day(T0 + 2 * D, null, 'green')], end, 1);
    expect(bars).toEqual([{ start: iso(T0).replace('Z', '.000Z'), end: iso(end).replace('Z', '.000Z'), days: 2, score: 70.1, tier: 'green' }]);
  });
});

describe('change colouring', () => {
  it('is good when a figure moves the right way for it', () => {
    expect(changeTone('revenue.arr', 100)).toBe('good');
    expect(changeTone('revenue.arr', -1)).toBe('bad');
    expect(changeTone('health.at_risk_share', 0.02)).toBe('bad');
    expect(changeTone('health.at_risk_arr', -500)).toBe('good');
    expect(changeTone('tickets.open.p1', 1)).toBe('bad');
    expect(changeTone('alerts.critical', -1)).toBe('good');
    expect(changeTone('health.tiers.red.accounts', 1)).toBe('bad');
    expect(changeTone('health.tiers.green.accounts', 1)).toBe('good');
    expect(changeTone('usage.adoption_rate', 0.1)).toBe('good');
  });

  it('is flat for no change or a neutral figure, none without a change', () => {
    expect(changeTone('revenue.arr', 0)).toBe('flat');
    expect(changeTone('health.accounts', 3)).toBe('flat');
    expect(changeTone('revenue.arr', null)).toBe('none');
    expect(changeArrow(2)).toBe('▲');
    expect(changeArrow(-2)).toBe('▼');
    expect(changeArrow(0)).toBe('◆');
    expect(changeArrow(null)).toBe('');
  });

  it('writes ratios in points, money and counts with their relative change', () => {
    expect(unitOf('revenue.nrr_qtd')).toBe('ratio');
    expect(unitOf('health.at_risk_arr')).toBe('money');
    expect(fmtChange('revenue.nrr_qtd', { now: 1.05, then: 1.0, change: 0.05, change_ratio: 0.05 })).toBe('+5.0 pp');
    expect(fmtChange('revenue.arr', { now: 110000, then: 100000, change: 10000, change_ratio: 0.1 })).toBe('+$10.0K (+10.0%)');
    expect(fmtChange('tickets.open.p1', { now: 1, then: 3, change: -2, change_ratio: -2 / 3 })).toBe('-2 (-66.7%)');
    expect(fmtChange('revenue.arr', { now: 1, then: null, change: null, change_ratio: null })).toBe('no history that far back');
  });
});

describe('choices', () => {
  it('takes ?period= over the stored period over the default', () => {
    expect(choosePeriod('month', 'year')).toBe('month');
    expect(choosePeriod(null, 'year')).toBe('year');
    expect(choosePeriod('bogus', null)).toBe('week');
    expect(chooseRange('90d').step).toBe('1d');
    expect(chooseRange(null).key).toBe('30d');
  });
});
