//! Executive view (wall-friendly): portfolio KPIs, health distribution,
//! firing critical alerts, segment comparison and trend lines since the page
//! opened. Channel `executive`: `{as_of, portfolio: KPI, segments: {…}}`.

import { TrendChart } from '../charts';
import { count, dec1, money, moneyShort, pct } from '../format.js';
import type { JsonObject } from '../mergePatch';
import type { Alert } from '../protocol';
import { Trends } from '../trends';
import { at, esc, keys, num, obj, tierBadge, TIERS, tile, val } from './common';

const TREND_SERIES = [
  { key: 'arr', label: 'Total ARR', format: moneyShort },
  { key: 'at_risk_share', label: 'At-risk share', format: pct },
  { key: 'nrr_qtd', label: 'NRR QTD', format: pct },
  { key: 'adoption_rate', label: 'Adoption rate', format: pct },
];

export class ExecutiveView {
  readonly trends = new Trends(TREND_SERIES);
  private charts: TrendChart[] = [];
  private root: HTMLElement | null = null;

  mount(root: HTMLElement): void {
    this.root = root;
    root.innerHTML = `
      <section class="kpis" data-part="kpis" aria-label="Portfolio KPIs"></section>
      <div class="grid-2">
        <section class="panel" aria-labelledby="h-dist"><h2 id="h-dist">Health distribution</h2><div data-part="dist"></div></section>
        <section class="panel" aria-labelledby="h-crit"><h2 id="h-crit">Firing critical alerts</h2><div data-part="alerts"></div></section>
      </div>
      <section class="panel" aria-labelledby="h-seg"><h2 id="h-seg">Segments</h2><div class="table-wrap" data-part="segments"></div></section>
      <section class="panel" aria-labelledby="h-trend"><h2 id="h-trend">Trends since this page opened</h2>
        <div class="trends">${TREND_SERIES.map(
          (s) => `<figure class="trend"><figcaption>${esc(s.label)}</figcaption><div class="chart" data-trend="${s.key}"></div></figure>`,
        ).join('')}</div>
      </section>`;
    this.charts = TREND_SERIES.map(
      (s) => new TrendChart(root.querySelector(`[data-trend="${s.key}"]`) as HTMLElement, s.label, s.format),
    );
  }

  unmount(): void {
    for (const c of this.charts) c.destroy();
    this.charts = [];
    this.root = null;
  }

  /** Records a trend sample from fresh channel data (also while hidden). */
  sample(data: JsonObject, nowMs: number): void {
    const p = obj(data.portfolio);
    this.trends.add(nowMs / 1000, {
      arr: num(at(p, 'revenue.arr')),
      at_risk_share: num(at(p, 'health.at_risk_share')),
      nrr_qtd: num(at(p, 'revenue.nrr_qtd')),
      adoption_rate: num(at(p, 'usage.adoption_rate')),
    });
  }

  update(data: JsonObject | null, alerts: Alert[]): void {
    const root = this.root;
    if (!root) return;
    const part = (name: string) => root.querySelector(`[data-part="${name}"]`) as HTMLElement;
    if (!data) {
      part('kpis').innerHTML = `<p class="empty">Waiting for data…</p>`;
      return;
    }
    const p = obj(data.portfolio);
    const f = (path: string) => at(p, path);
    const F = (path: string) => `portfolio.${path}`;
    part('kpis').innerHTML = [
      tile('Total ARR', val(F('revenue.arr'), f('revenue.arr'), money(f('revenue.arr'))), `${val(F('revenue.paying_accounts'), f('revenue.paying_accounts'), count(f('revenue.paying_accounts')))} paying accounts`, 'wide'),
      tile('NRR QTD', val(F('revenue.nrr_qtd'), f('revenue.nrr_qtd'), pct(f('revenue.nrr_qtd'))), `T12M ${val(F('revenue.nrr_t12m'), f('revenue.nrr_t12m'), pct(f('revenue.nrr_t12m')))}`),
      tile('GRR QTD', val(F('revenue.grr_qtd'), f('revenue.grr_qtd'), pct(f('revenue.grr_qtd'))), `T12M ${val(F('revenue.grr_t12m'), f('revenue.grr_t12m'), pct(f('revenue.grr_t12m')))}`),
      tile('At-risk ARR', val(F('health.at_risk_arr'), f('health.at_risk_arr'), money(f('health.at_risk_arr'))), `${val(F('health.at_risk_share'), f('health.at_risk_share'), pct(f('health.at_risk_share')))} of ARR`, 'wide risk'),
      tile('Adoption rate', val(F('usage.adoption_rate'), f('usage.adoption_rate'), pct(f('usage.adoption_rate'))), `${val(F('usage.active_users_7d'), f('usage.active_users_7d'), count(f('usage.active_users_7d')))} active users (7 d)`),
      tile('CSAT (90 d)', val(F('tickets.csat_avg_90d'), f('tickets.csat_avg_90d'), dec1(f('tickets.csat_avg_90d'))), `${val(F('tickets.csat_count_90d'), f('tickets.csat_count_90d'), count(f('tickets.csat_count_90d')))} ratings`),
      tile('Open P1 tickets', val(F('tickets.open.p1'), f('tickets.open.p1'), count(f('tickets.open.p1'))), `${val(F('tickets.open.total'), f('tickets.open.total'), count(f('tickets.open.total')))} open in all`, (num(f('tickets.open.p1')) ?? 0) > 0 ? 'risk' : ''),
      tile('Escalations', val(F('tickets.escalated_open'), f('tickets.escalated_open'), count(f('tickets.escalated_open'))), `${val(F('tickets.sla_breached'), f('tickets.sla_breached'), count(f('tickets.sla_breached')))} SLA breaches`),
      tile('Critical alerts', val(F('alerts.critical'), f('alerts.critical'), count(f('alerts.critical'))), `${val(F('alerts.warning'), f('alerts.warning'), count(f('alerts.warning')))} warnings (account)`, (num(f('alerts.critical')) ?? 0) > 0 ? 'risk' : ''),
    ].join('');

    const totalAccounts = num(f('health.accounts')) ?? 0;
    part('dist').innerHTML = `<div class="dist">${TIERS.map((t) => {
      const n = num(f(`health.tiers.${t}.accounts`)) ?? 0;
      const share = totalAccounts > 0 ? (n / totalAccounts) * 100 : 0;
      return `<div class="dist-row">
        <div class="dist-label">${tierBadge(t)}</div>
        <div class="bar" role="img" aria-label="${share.toFixed(0)}% of accounts"><div class="bar-fill tier-bg-${t}" style="width:${share.toFixed(1)}%"></div></div>
        <div class="dist-n">${val(F(`health.tiers.${t}.accounts`), n, count(n))} accts</div>
        <div class="dist-arr">${val(F(`health.tiers.${t}.arr`), f(`health.tiers.${t}.arr`), moneyShort(f(`health.tiers.${t}.arr`)))}</div>
      </div>`;
    }).join('')}</div>
    <p class="muted">Average health score ${val(F('health.avg_score'), f('health.avg_score'), dec1(f('health.avg_score')))} over ${val(F('health.accounts'), f('health.accounts'), count(f('health.accounts')))} accounts</p>`;

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
    part('segments').innerHTML = `<table class="data"><thead><tr>
      <th scope="col">Segment</th><th scope="col" class="n">Accounts</th><th scope="col" class="n">ARR</th><th scope="col" class="n">At-risk share</th>
      <th scope="col" class="n">Avg health</th><th scope="col" class="n">NRR QTD</th><th scope="col" class="n">GRR QTD</th><th scope="col" class="n">Adoption</th><th scope="col" class="n">CSAT</th><th scope="col" class="n">Open P1</th>
    </tr></thead><tbody>${segs
      .map(
        (s) => `<tr data-segment="${esc(s)}"><th scope="row">${esc(s)}</th>
        <td class="n">${val(S(s, 'health.accounts'), seg(s, 'health.accounts'), count(seg(s, 'health.accounts')))}</td>
        <td class="n">${val(S(s, 'revenue.arr'), seg(s, 'revenue.arr'), money(seg(s, 'revenue.arr')))}</td>
        <td class="n">${val(S(s, 'health.at_risk_share'), seg(s, 'health.at_risk_share'), pct(seg(s, 'health.at_risk_share')))}</td>
        <td class="n">${val(S(s, 'health.avg_score'), seg(s, 'health.avg_score'), dec1(seg(s, 'health.avg_score')))}</td>
        <td class="n">${val(S(s, 'revenue.nrr_qtd'), seg(s, 'revenue.nrr_qtd'), pct(seg(s, 'revenue.nrr_qtd')))}</td>
        <td class="n">${val(S(s, 'revenue.grr_qtd'), seg(s, 'revenue.grr_qtd'), pct(seg(s, 'revenue.grr_qtd')))}</td>
        <td class="n">${val(S(s, 'usage.adoption_rate'), seg(s, 'usage.adoption_rate'), pct(seg(s, 'usage.adoption_rate')))}</td>
        <td class="n">${val(S(s, 'tickets.csat_avg_90d'), seg(s, 'tickets.csat_avg_90d'), dec1(seg(s, 'tickets.csat_avg_90d')))}</td>
        <td class="n">${val(S(s, 'tickets.open.p1'), seg(s, 'tickets.open.p1'), count(seg(s, 'tickets.open.p1')))}</td></tr>`,
      )
      .join('')}</tbody></table>`;

    this.charts.forEach((c, i) => c.setData(this.trends.times, this.trends.values.get(TREND_SERIES[i].key)!));
  }
}
