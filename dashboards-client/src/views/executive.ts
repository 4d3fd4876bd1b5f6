//! Executive view (wall-friendly): portfolio KPIs, each with its change
//! against the chosen period (`/api/v1/compare/executive`) and its targets
//! (`/api/v1/targets`), health distribution, firing critical alerts, the
//! segment comparison, and trend charts from history
//! (`/api/v1/history/executive`, 7 days to a year) continued by the live
//! values, with the targets as goal lines. Channel `executive`:
//! `{as_of, portfolio: KPI, segments: {…}}`.

import type { Compared, Target } from '../api';
import { TrendChart } from '../charts';
import { count, dec1, money, moneyShort, pct } from '../format.js';
import {
  boundarySeries,
  chooseRange,
  DAY_MS,
  STEP_MS,
  TREND_RANGES,
  withLive,
  type ComparePeriod,
  type HistoryAnswer,
  type Series,
  type TrendRange,
} from '../history';
import type { JsonObject } from '../mergePatch';
import type { Alert } from '../protocol';
import { at, esc, keys, num, obj, tierBadge, TIERS, tile, val } from './common';
import { changeLine, drill, exportButtons, targetLine, type ViewContext } from './context';

/** The charted figures of the portfolio (paths inside its KPI object). */
const TREND_SERIES = [
  { key: 'revenue.arr', label: 'Total ARR', format: moneyShort },
  { key: 'revenue.nrr_qtd', label: 'NRR QTD', format: pct },
  { key: 'revenue.grr_qtd', label: 'GRR QTD', format: pct },
  { key: 'health.at_risk_share', label: 'At-risk share of ARR', format: pct },
  { key: 'usage.adoption_rate', label: 'Adoption rate', format: pct },
  { key: 'usage.active_users_7d', label: 'Active users (7 d)', format: count },
];

/** The figures each card compares and shows targets for (the first is its headline). */
const CARD_FIELDS: Record<string, string[]> = {
  arr: ['revenue.arr'],
  nrr: ['revenue.nrr_qtd'],
  grr: ['revenue.grr_qtd'],
  risk: ['health.at_risk_arr', 'health.at_risk_share'],
  adoption: ['usage.adoption_rate'],
  csat: ['tickets.csat_avg_90d'],
  p1: ['tickets.open.p1'],
  esc: ['tickets.escalated_open'],
  crit: ['alerts.critical'],
};
const COMPARED = Object.values(CARD_FIELDS).flat();

const RANGE_KEY = 'cspulse.trendRange';
const REFRESH_MS = 60_000;

function storedRange(): string | null {
  try {
    return localStorage.getItem(RANGE_KEY);
  } catch {
    return null;
  }
}

export class ExecutiveView {
  private charts: TrendChart[] = [];
  private root: HTMLElement | null = null;
  range: TrendRange = chooseRange(storedRange());
  /** The history read for the charts, and the query it answered. */
  history: { url: string; fromMs: number; stepMs: number; answer: HistoryAnswer } | null = null;
  historyError: string | null = null;
  private historyLoading = false;
  private historyAt = 0;
  /** Live samples (event time, seconds) since the page opened, per charted figure. */
  private readonly live = new Map<string, Series>(TREND_SERIES.map((s) => [s.key, { times: [], values: [] }]));
  compare: { period: ComparePeriod; data: JsonObject } | null = null;
  compareError: string | null = null;
  private compareAt = 0;
  private compareLoading = false;
  targets: Target[] = [];
  private targetsAt = 0;
  private lastAsOf: string | null = null;

  constructor(private readonly ctx: ViewContext) {}

  mount(root: HTMLElement): void {
    this.root = root;
    root.innerHTML = `
      <section class="kpis" data-part="kpis" aria-label="Portfolio KPIs"></section>
      <section class="panel" aria-labelledby="h-trend"><div class="panel-head"><h2 id="h-trend">Trends</h2>
        <div class="seg-buttons" role="group" aria-label="Trend range">${TREND_RANGES.map(
          (r) => `<button type="button" data-range="${r.key}" aria-pressed="${r.key === this.range.key}">${esc(r.label)}</button>`,
        ).join('')}</div><span class="muted" data-part="trend-note"></span></div>
        <div class="trends">${TREND_SERIES.map(
          (s) => `<figure class="trend"><figcaption>${esc(s.label)}</figcaption><div class="chart" data-trend="${s.key}"></div></figure>`,
        ).join('')}</div>
      </section>
      <div class="grid-2">
        <section class="panel" aria-labelledby="h-dist"><h2 id="h-dist">Health distribution</h2><div data-part="dist"></div></section>
        <section class="panel" aria-labelledby="h-crit"><h2 id="h-crit">Firing critical alerts</h2><div data-part="alerts"></div></section>
      </div>
      <section class="panel" aria-labelledby="h-seg"><div class="panel-head"><h2 id="h-seg">Segments</h2>${exportButtons(this.ctx, 'executive', 'segments')}</div><div class="table-wrap" data-part="segments"></div></section>`;
    this.charts = TREND_SERIES.map(
      (s) => new TrendChart(root.querySelector(`[data-trend="${s.key}"]`) as HTMLElement, s.label, s.format),
    );
    root.addEventListener('click', (ev) => {
      const b = (ev.target as HTMLElement).closest('[data-range]') as HTMLElement | null;
      if (!b) return;
      this.range = TREND_RANGES.find((r) => r.key === b.dataset.range) ?? this.range;
      try {
        localStorage.setItem(RANGE_KEY, this.range.key);
      } catch {
        /* storage disabled: the choice lasts for the page */
      }
      for (const x of root.querySelectorAll<HTMLElement>('[data-range]')) x.setAttribute('aria-pressed', String(x.dataset.range === this.range.key));
      this.history = null;
      this.historyAt = 0;
      this.ctx.changed();
    });
  }

  unmount(): void {
    for (const c of this.charts) c.destroy();
    this.charts = [];
    this.root = null;
  }

  /** Records a live sample from fresh channel data (also while hidden), at the data's event time. */
  sample(data: JsonObject): void {
    const asOf = typeof data.as_of === 'string' ? Date.parse(data.as_of) : NaN;
    if (!Number.isFinite(asOf)) return;
    const p = obj(data.portfolio);
    for (const s of TREND_SERIES) {
      const series = this.live.get(s.key)!;
      const t = asOf / 1000;
      const v = num(at(p, s.key));
      const last = series.times.length - 1;
      if (last >= 0 && t <= series.times[last]) {
        if (t === series.times[last]) series.values[last] = v;
        continue;
      }
      series.times.push(t);
      series.values.push(v);
      if (series.times.length > 2880) {
        series.times.shift();
        series.values.shift();
      }
    }
  }

  /** Reads history, compare and targets when due (first data, a new choice, or every minute). */
  private load(data: JsonObject): void {
    const now = Date.now();
    const asOf = typeof data.as_of === 'string' ? Date.parse(data.as_of) : NaN;
    if (!Number.isFinite(asOf)) return;
    if (!this.historyLoading && (this.history === null || now - this.historyAt > REFRESH_MS) && now - this.historyAt > 5000) {
      const range = this.range;
      const stepMs = STEP_MS[range.step];
      const fromMs = Math.floor((asOf - range.days * DAY_MS) / stepMs) * stepMs;
      const url = `/api/v1/history/executive?from=${encodeURIComponent(new Date(fromMs).toISOString())}&step=${range.step}&fields=${TREND_SERIES.map((s) => s.key).join(',')}`;
      this.historyLoading = true;
      this.historyAt = now;
      void this.ctx.fetch<HistoryAnswer>(url).then((r) => {
        this.historyLoading = false;
        if (range !== this.range) return; // a newer choice is loading
        if (r.ok && r.body) {
          this.history = { url, fromMs, stepMs, answer: r.body };
          this.historyError = null;
        } else this.historyError = r.error;
        this.ctx.changed();
      });
    }
    const period = this.ctx.period();
    const due =
      this.compare?.period !== period || now - this.compareAt > REFRESH_MS || (this.lastAsOf !== data.as_of && now - this.compareAt > 5000);
    if (!this.compareLoading && due) {
      this.compareLoading = true;
      this.compareAt = now;
      this.lastAsOf = typeof data.as_of === 'string' ? data.as_of : null;
      void this.ctx.fetch<{ data: JsonObject }>(`/api/v1/compare/executive?period=${period}&fields=${COMPARED.join(',')}`).then((r) => {
        this.compareLoading = false;
        if (r.ok && r.body) {
          this.compare = { period, data: r.body.data };
          this.compareError = null;
        } else this.compareError = r.error;
        this.ctx.changed();
      });
    }
    if (now - this.targetsAt > REFRESH_MS) {
      this.targetsAt = now;
      void this.ctx.fetch<{ targets: Target[] }>('/api/v1/targets').then((r) => {
        if (r.ok && r.body) this.targets = r.body.targets;
        this.ctx.changed();
      });
    }
  }

  /** The portfolio targets on a figure. */
  private targetsOf(path: string): Target[] {
    return this.targets.filter((t) => t.scope === 'portfolio' && t.metric === path);
  }

  private card(key: string): string {
    const period = this.compare?.period ?? this.ctx.period();
    const lines = CARD_FIELDS[key].map((path) => {
      const c = this.compare ? (at(this.compare.data, `portfolio.${path}`) as unknown as Compared | undefined) : undefined;
      return changeLine('portfolio', path, c && typeof c === 'object' ? c : null, period);
    });
    const goals = CARD_FIELDS[key].flatMap((path) => this.targetsOf(path).map(targetLine));
    return lines.join('') + goals.join('');
  }

  /** What the charts draw (for the browser test). */
  chartData(): Record<string, { times: number[]; values: (number | null)[]; goals: number[] }> {
    return Object.fromEntries(
      this.charts.map((c, i) => [TREND_SERIES[i].key, { times: c.series.times, values: c.series.values, goals: c.goalValues }]),
    );
  }

  update(data: JsonObject | null, alerts: Alert[]): void {
    const root = this.root;
    if (!root) return;
    const part = (name: string) => root.querySelector(`[data-part="${name}"]`) as HTMLElement;
    if (!data) {
      part('kpis').innerHTML = `<p class="empty">Waiting for data…</p>`;
      return;
    }
    this.load(data);
    const p = obj(data.portfolio);
    const f = (path: string) => at(p, path);
    const F = (path: string) => `portfolio.${path}`;
    /** A portfolio figure that opens its accounts. */
    const D = (path: string, fmt: (v: unknown) => string) => drill(this.ctx, 'executive', 'portfolio', path, val(F(path), f(path), fmt(f(path))));
    part('kpis').innerHTML = [
      tile('Total ARR', D('revenue.arr', money), `${D('revenue.paying_accounts', count)} paying accounts` + this.card('arr'), 'wide'),
      tile('NRR QTD', D('revenue.nrr_qtd', pct), `T12M ${D('revenue.nrr_t12m', pct)}` + this.card('nrr')),
      tile('GRR QTD', D('revenue.grr_qtd', pct), `T12M ${D('revenue.grr_t12m', pct)}` + this.card('grr')),
      tile('At-risk ARR', D('health.at_risk_arr', money), `${D('health.at_risk_share', pct)} of ARR` + this.card('risk'), 'wide risk'),
      tile('Adoption rate', D('usage.adoption_rate', pct), `${D('usage.active_users_7d', count)} active users (7 d)` + this.card('adoption')),
      tile('CSAT (90 d)', D('tickets.csat_avg_90d', dec1), `${D('tickets.csat_count_90d', count)} ratings` + this.card('csat')),
      tile('Open P1 tickets', D('tickets.open.p1', count), `${D('tickets.open.total', count)} open in all` + this.card('p1'), (num(f('tickets.open.p1')) ?? 0) > 0 ? 'risk' : ''),
      tile('Escalations', D('tickets.escalated_open', count), `${D('tickets.sla_breached', count)} SLA breaches` + this.card('esc')),
      tile('Critical alerts', D('alerts.critical', count), `${D('alerts.warning', count)} warnings (account)` + this.card('crit'), (num(f('alerts.critical')) ?? 0) > 0 ? 'risk' : ''),
    ].join('');

    const totalAccounts = num(f('health.accounts')) ?? 0;
    part('dist').innerHTML = `<div class="dist">${TIERS.map((t) => {
      const n = num(f(`health.tiers.${t}.accounts`)) ?? 0;
      const share = totalAccounts > 0 ? (n / totalAccounts) * 100 : 0;
      return `<div class="dist-row">
        <div class="dist-label">${tierBadge(t)}</div>
        <div class="bar" role="img" aria-label="${share.toFixed(0)}% of accounts"><div class="bar-fill tier-bg-${t}" style="width:${share.toFixed(1)}%"></div></div>
        <div class="dist-n">${D(`health.tiers.${t}.accounts`, count)} accts</div>
        <div class="dist-arr">${D(`health.tiers.${t}.arr`, moneyShort)}</div>
      </div>`;
    }).join('')}</div>
    <p class="muted">Average health score ${D('health.avg_score', dec1)} over ${D('health.accounts', count)} accounts</p>`;

    const critical = alerts.filter((a) => a.severity === 'critical');
    part('alerts').innerHTML = critical.length
      ? `<ul class="alert-list">${critical
          .slice(0, 8)
          .map((a) => `<li class="alert alert-critical"><span class="sev">■ Critical</span> ${esc(a.message)} <time>${esc(a.ts.slice(0, 16).replace('T', ' '))}</time></li>`)
          .join('')}</ul>${critical.length > 8 ? `<p class="muted">and ${critical.length - 8} more</p>` : ''}`
      : `<p class="ok">✓ No critical alerts firing</p>`;

    const segs = keys(data.segments);
    const seg = (s: string, path: string) => at(obj(data.segments)[s], path);
    const S = (s: string, path: string) => `segments.${s}.${path}`;
    const DS = (s: string, path: string, fmt: (v: unknown) => string) => drill(this.ctx, 'executive', `segment:${s}`, path, val(S(s, path), seg(s, path), fmt(seg(s, path))));
    part('segments').innerHTML = `<table class="data"><thead><tr>
      <th scope="col">Segment</th><th scope="col" class="n">Accounts</th><th scope="col" class="n">ARR</th><th scope="col" class="n">At-risk share</th>
      <th scope="col" class="n">Avg health</th><th scope="col" class="n">NRR QTD</th><th scope="col" class="n">GRR QTD</th><th scope="col" class="n">Adoption</th><th scope="col" class="n">CSAT</th><th scope="col" class="n">Open P1</th>
    </tr></thead><tbody>${segs
      .map(
        (s) => `<tr data-segment="${esc(s)}"><th scope="row">${drill(this.ctx, 'executive', `segment:${s}`, 'health.accounts', esc(s))}</th>
        <td class="n">${DS(s, 'health.accounts', count)}</td>
        <td class="n">${DS(s, 'revenue.arr', money)}</td>
        <td class="n">${DS(s, 'health.at_risk_share', pct)}</td>
        <td class="n">${DS(s, 'health.avg_score', dec1)}</td>
        <td class="n">${DS(s, 'revenue.nrr_qtd', pct)}</td>
        <td class="n">${DS(s, 'revenue.grr_qtd', pct)}</td>
        <td class="n">${DS(s, 'usage.adoption_rate', pct)}</td>
        <td class="n">${DS(s, 'tickets.csat_avg_90d', dec1)}</td>
        <td class="n">${DS(s, 'tickets.open.p1', count)}</td></tr>`,
      )
      .join('')}</tbody></table>`;

    this.drawTrends();
  }

  private drawTrends(): void {
    const note = this.root?.querySelector('[data-part="trend-note"]') as HTMLElement | null;
    const h = this.history;
    if (note) {
      note.textContent = this.historyError
        ? `History unavailable (${this.historyError}): live values since this page opened.`
        : h
          ? `${h.answer.points.length} history points, one per ${h.answer.step}${h.answer.gaps.length ? `, ${h.answer.gaps.length} gap(s) in the record` : ''}; then live.`
          : 'Loading history…';
    }
    this.charts.forEach((c, i) => {
      const key = TREND_SERIES[i].key;
      const past = h ? boundarySeries(h.answer.points, `portfolio.${key}`, h.fromMs, h.stepMs) : { times: [], values: [] };
      const goals = this.targetsOf(key).map((t) => ({ value: t.value, label: `${t.name} ${t.op === '>=' ? '≥' : '≤'} ${TREND_SERIES[i].format(t.value)}` }));
      c.setData(withLive(past, this.live.get(key)!), goals);
    });
  }
}
