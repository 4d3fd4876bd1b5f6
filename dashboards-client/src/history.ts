//! History on screen (SPEC §15), as pure functions: the trend ranges and
//! their steps, history points laid on the step's boundaries (a missing row
//! is a gap, never interpolated), the 18 weekly health bars of an account
//! from its daily rows, and which way a change of a figure is good.

import type { Json } from './mergePatch';
import { at, num } from './views/common';

/** A comparison period of `GET /api/v1/compare` (the KPI cards' "vs."). */
export type ComparePeriod = 'day' | 'week' | 'month' | 'quarter' | 'year';
export const COMPARE_PERIODS: ComparePeriod[] = ['day', 'week', 'month', 'quarter', 'year'];
export const DEFAULT_PERIOD: ComparePeriod = 'week';

/** A trend chart's range, with the history step that gives it a sensible number of points. */
export interface TrendRange {
  key: string;
  label: string;
  days: number;
  step: '5m' | '1h' | '1d';
}
export const TREND_RANGES: TrendRange[] = [
  { key: '7d', label: '7 days', days: 7, step: '1h' },
  { key: '30d', label: '30 days', days: 30, step: '1h' },
  { key: '90d', label: '90 days', days: 90, step: '1d' },
  { key: '1y', label: '1 year', days: 365, step: '1d' },
];
export const DEFAULT_RANGE = '30d';

export const STEP_MS: Record<TrendRange['step'], number> = { '5m': 300_000, '1h': 3_600_000, '1d': 86_400_000 };
export const DAY_MS = 86_400_000;

/** The period named by `?period=`, else the stored one, else the default. */
export function choosePeriod(fromUrl: string | null, stored: string | null): ComparePeriod {
  for (const p of [fromUrl, stored]) if (COMPARE_PERIODS.includes(p as ComparePeriod)) return p as ComparePeriod;
  return DEFAULT_PERIOD;
}

export function chooseRange(stored: string | null): TrendRange {
  return TREND_RANGES.find((r) => r.key === stored) ?? TREND_RANGES.find((r) => r.key === DEFAULT_RANGE)!;
}

/** One answer of `GET /api/v1/history/{channel}`. */
export interface HistoryAnswer {
  channel: string;
  step: string;
  points: { at: string; data: Json }[];
  gaps: { from: string; to: string }[];
}

/** A chart's columns: times in seconds, one value (or null: a gap) per time. */
export interface Series {
  times: number[];
  values: (number | null)[];
}

/**
 * The history points of one figure (`path` inside `data`, e.g.
 * `portfolio.revenue.arr`) on every multiple of `stepMs` from `fromMs` to
 * the last point: a boundary without a row (or with a null figure) is null,
 * which the chart draws as a break in the line. Boundaries after the last
 * row are left out (the newest rows may not be written yet); so are those
 * before the range.
 */
export function boundarySeries(points: HistoryAnswer['points'], path: string, fromMs: number, stepMs: number): Series {
  const byAt = new Map<number, number | null>();
  let last = -Infinity;
  for (const p of points) {
    const t = Date.parse(p.at);
    if (!Number.isFinite(t)) continue;
    byAt.set(t, num(at(p.data, path)));
    last = Math.max(last, t);
  }
  const times: number[] = [];
  const values: (number | null)[] = [];
  if (last === -Infinity) return { times, values };
  const first = Math.ceil(fromMs / stepMs) * stepMs;
  // Off-grid rows (should not happen) still show, at their own time.
  const grid = new Set<number>();
  for (let t = first; t <= last; t += stepMs) grid.add(t);
  for (const t of byAt.keys()) if (t >= fromMs) grid.add(t);
  for (const t of [...grid].sort((a, b) => a - b)) {
    times.push(t / 1000);
    values.push(byAt.has(t) ? byAt.get(t)! : null);
  }
  return { times, values };
}

/**
 * `history` continued by live samples: every live sample later than the
 * last history time is appended (a sample within `minGapS` of the previous
 * live one replaces it, so a burst of updates does not crowd the line).
 */
export function withLive(history: Series, live: Series, minGapS = 2): Series {
  const times = [...history.times];
  const values = [...history.values];
  const lastHistory = times.length ? times[times.length - 1] : -Infinity;
  let lastLive = -Infinity;
  live.times.forEach((t, i) => {
    if (t <= lastHistory) return;
    if (t - lastLive < minGapS && times.length > 0) {
      times[times.length - 1] = t;
      values[values.length - 1] = live.values[i];
    } else {
      times.push(t);
      values.push(live.values[i]);
    }
    lastLive = t;
  });
  return { times, values };
}

/** A daily account row of `GET /api/v1/accounts/{id}/history`. */
export interface AccountDay {
  at: string;
  account: Json;
}

/** One weekly bar: the week [start, end), its days' average score and worst tier. */
export interface WeekBar {
  start: string;
  end: string;
  days: number;
  score: number | null;
  tier: 'green' | 'yellow' | 'red' | null;
}

const TIER_ORDER = { red: 0, yellow: 1, green: 2 } as const;

/**
 * `weeks` weekly bars (oldest first) ending at `endMs` (exclusive, e.g. the
 * next UTC midnight after the data's `as_of`): each is the mean
 * `health.score` of the daily rows whose `at` falls in its 7 days, with
 * the worst tier among them; a week without rows is a gap (null).
 */
export function weeklyBars(days: AccountDay[], endMs: number, weeks = 18): WeekBar[] {
  const bars: WeekBar[] = [];
  for (let i = weeks - 1; i >= 0; i--) {
    const end = endMs - i * 7 * DAY_MS;
    const start = end - 7 * DAY_MS;
    let sum = 0;
    let n = 0;
    let tier: WeekBar['tier'] = null;
    for (const d of days) {
      const t = Date.parse(d.at);
      if (!(t >= start && t < end)) continue;
      const s = num(at(d.account, 'health.score'));
      if (s !== null) {
        sum += s;
        n += 1;
      }
      const dt = at(d.account, 'health.tier');
      if ((dt === 'green' || dt === 'yellow' || dt === 'red') && (tier === null || TIER_ORDER[dt] < TIER_ORDER[tier])) tier = dt;
    }
    bars.push({
      start: new Date(start).toISOString(),
      end: new Date(end).toISOString(),
      days: n,
      score: n ? Math.round((sum / n) * 10) / 10 : null,
      tier,
    });
  }
  return bars;
}

/** The next UTC midnight after `ms` (the end of the day it falls in). */
export function endOfUtcDay(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS + DAY_MS;
}

/** Figures where less is better; every other charted or carded figure is better higher. */
const LOWER_IS_BETTER = [
  'health.at_risk_arr',
  'health.at_risk_share',
  'health.tiers.red',
  'health.tiers.yellow',
  'tickets.open',
  'tickets.escalated_open',
  'tickets.sla_breached',
  'tickets.first_response_minutes',
  'revenue.contraction_arr_qtd',
  'revenue.churned_arr_qtd',
  'alerts',
];
/** Figures whose change is neither good nor bad (sizes of a scope). */
const NEUTRAL = ['health.accounts', 'tickets.csat_count_90d'];

export type Tone = 'good' | 'bad' | 'flat' | 'none';

/** Whether a change of `change` in the figure at `path` is good news. */
export function changeTone(path: string, change: number | null | undefined): Tone {
  if (change === null || change === undefined || !Number.isFinite(change)) return 'none';
  if (change === 0) return 'flat';
  const under = (p: string) => path === p || path.startsWith(`${p}.`);
  if (NEUTRAL.some(under)) return 'flat';
  const better = LOWER_IS_BETTER.some(under) ? change < 0 : change > 0;
  return better ? 'good' : 'bad';
}

/** The arrow of a change: up, down, or level. */
export function changeArrow(change: number | null | undefined): string {
  if (change === null || change === undefined || !Number.isFinite(change)) return '';
  return change > 0 ? '▲' : change < 0 ? '▼' : '◆';
}
