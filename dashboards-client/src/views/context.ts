//! What the views share besides the channel data: the REST reader, the
//! chosen comparison period, and how a change or a target is written.

import type { Compared, Fetcher, Target } from '../api';
import { count, dec1, moneyShort, pct } from '../format.js';
import { changeArrow, changeTone, type ComparePeriod } from '../history';
import { drillHref } from '../explore';
import { esc } from './common';

export interface ViewContext {
  fetch: Fetcher;
  period: () => ComparePeriod;
  /** Something loaded: render again. */
  changed: () => void;
  /** Whether figures open their accounts (not on a wall, not for a role without the accounts list). */
  drillable: boolean;
  /** Whether tables offer their export (not on a wall). */
  exportable: boolean;
}

/**
 * A figure that opens the accounts behind it (SPEC §19): a link to the
 * explorer with the figure's filters (`#accounts?…&from=&scope=&metric=`),
 * or the figure alone where there is nothing to open.
 */
export function drill(ctx: ViewContext, from: string, scope: string, metric: string, inner: string): string {
  const href = ctx.drillable ? drillHref({ from, scope, metric }) : null;
  return href ? `<a class="drill" href="${esc(href)}" data-drill="${esc(`${scope}|${metric}`)}" title="Open the accounts behind this figure">${inner}</a>` : inner;
}

/** The CSV and XLSX export buttons of a channel's table (`GET /api/v1/channels/{channel}/export.*?table=`). */
export function exportButtons(ctx: ViewContext, channel: string, table: string): string {
  if (!ctx.exportable) return '';
  const path = (ext: string) => `/api/v1/channels/${encodeURIComponent(channel)}/export.${ext}?table=${encodeURIComponent(table)}`;
  return `<span class="exports" role="group" aria-label="Export ${esc(table)}">${['csv', 'xlsx']
    .map((ext) => `<button type="button" class="btn-small" data-export-path="${esc(path(ext))}" data-export-name="${esc(`${channel.replace(':', '-')}-${table}.${ext}`)}">⤓ ${ext.toUpperCase()}</button>`)
    .join('')}</span>`;
}

/** How a figure at `path` is written (for its change and target lines). */
export function unitOf(path: string): 'money' | 'ratio' | 'score' | 'count' {
  if (/arr|_arr_/.test(path.split('.').pop() ?? '') || path.endsWith('.arr')) return 'money';
  if (/share|rate|nrr|grr/.test(path)) return 'ratio';
  if (/score|csat_avg/.test(path)) return 'score';
  return 'count';
}

export function fmtValue(path: string, v: unknown): string {
  switch (unitOf(path)) {
    case 'money':
      return moneyShort(v);
    case 'ratio':
      return pct(v);
    case 'score':
      return dec1(v);
    default:
      return count(v);
  }
}

const signed = (s: string, v: number) => (v > 0 ? `+${s}` : s);

/** A change as text: money and counts absolute and relative, ratios in points. */
export function fmtChange(path: string, c: Compared): string {
  if (c.change === null) return c.then === null ? 'no history that far back' : '—';
  const u = unitOf(path);
  if (u === 'ratio') return `${signed((c.change * 100).toFixed(1), c.change)} pp`;
  const abs = u === 'money' ? signed(moneyShort(c.change), c.change) : u === 'score' ? signed(c.change.toFixed(1), c.change) : signed(count(c.change), c.change);
  const rel = c.change_ratio === null ? '' : ` (${signed((c.change_ratio * 100).toFixed(1), c.change_ratio)}%)`;
  return abs + rel;
}

const PERIOD_WORD: Record<ComparePeriod, string> = { day: 'a day ago', week: 'a week ago', month: 'a month ago', quarter: 'a quarter ago', year: 'a year ago' };

/** The change line of a card: arrow, coloured by whether it is good for the figure. */
export function changeLine(scopeKey: string, path: string, c: Compared | null, period: ComparePeriod): string {
  if (!c) return '';
  const tone = changeTone(path, c.change);
  return `<div class="tile-change tone-${tone}" data-cmp="${esc(`${scopeKey}.${path}`)}" data-change="${esc(JSON.stringify(c.change))}" data-ratio="${esc(
    JSON.stringify(c.change_ratio),
  )}"><span aria-hidden="true">${changeArrow(c.change)}</span> ${esc(fmtChange(path, c))} <span class="muted">vs ${PERIOD_WORD[period]}</span>${
    tone === 'good' || tone === 'bad' ? `<span class="sr-only"> (${tone === 'good' ? 'better' : 'worse'})</span>` : ''
  }</div>`;
}

const STATUS: Record<string, string> = { on_track: '● On track', off_track: '▲ Off track', met: '● Met', missed: '■ Missed' };

/** A target's line on a card: goal, actual, projection, status. */
export function targetLine(t: Target): string {
  const status = t.status ? STATUS[t.status] ?? t.status : 'no status yet';
  return `<div class="tile-target status-${esc(t.status ?? 'none')}" data-target="${esc(t.name)}" data-metric="${esc(t.metric)}" data-goal="${esc(
    JSON.stringify(t.value),
  )}" data-actual="${esc(JSON.stringify(t.actual))}" data-projected="${esc(JSON.stringify(t.projected))}" data-status="${esc(JSON.stringify(t.status))}">
    <span class="muted">${esc(t.name)}:</span> goal ${esc(t.op === '>=' ? '≥' : '≤')} ${esc(fmtValue(t.metric, t.value))} · actual ${esc(
      fmtValue(t.metric, t.actual),
    )} · projected ${esc(fmtValue(t.metric, t.projected))} · <strong>${esc(status)}</strong></div>`;
}
