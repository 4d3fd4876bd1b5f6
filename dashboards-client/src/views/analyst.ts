//! Analyst view: segments and regions side by side, feature adoption,
//! the health histogram and first-response percentiles. Channel `analyst`:
//! `{as_of, portfolio, segments, regions, features, health_histogram}`.

import { count, dec1, minutes, money, pct } from '../format.js';
import type { Json, JsonObject } from '../mergePatch';
import { at, esc, keys, num, obj, val } from './common';
import { drill, exportButtons, type ViewContext } from './context';

function scopeTable(ctx: ViewContext, kind: 'segments' | 'regions', title: string, scopes: JsonObject): string {
  const names = keys(scopes);
  const F = (n: string, p: string) => `${kind}.${n}.${p}`;
  const g = (n: string, p: string) => at(scopes[n], p);
  const scope = (n: string) => `${kind === 'segments' ? 'segment' : 'region'}:${n}`;
  const D = (n: string, p: string, fmt: (v: unknown) => string) => drill(ctx, 'analyst', scope(n), p, val(F(n, p), g(n, p), fmt(g(n, p))));
  return `<section class="panel" aria-labelledby="h-${kind}"><div class="panel-head"><h2 id="h-${kind}">${title}</h2>${exportButtons(ctx, 'analyst', kind)}</div><div class="table-wrap" data-scroll="${kind}"><table class="data">
    <thead><tr><th scope="col">${kind === 'segments' ? 'Segment' : 'Region'}</th><th scope="col" class="n">Accounts</th><th scope="col" class="n">ARR</th>
    <th scope="col" class="n">At risk</th><th scope="col" class="n">Health</th><th scope="col" class="n">NRR QTD</th><th scope="col" class="n">GRR QTD</th>
    <th scope="col" class="n">Adoption</th><th scope="col" class="n">Open</th><th scope="col" class="n">CSAT</th></tr></thead>
    <tbody>${names
      .map(
        (n) => `<tr><th scope="row">${drill(ctx, 'analyst', scope(n), 'health.accounts', esc(n))}</th>
      <td class="n">${D(n, 'health.accounts', count)}</td>
      <td class="n">${D(n, 'revenue.arr', money)}</td>
      <td class="n">${D(n, 'health.at_risk_share', pct)}</td>
      <td class="n">${D(n, 'health.avg_score', dec1)}</td>
      <td class="n">${D(n, 'revenue.nrr_qtd', pct)}</td>
      <td class="n">${D(n, 'revenue.grr_qtd', pct)}</td>
      <td class="n">${D(n, 'usage.adoption_rate', pct)}</td>
      <td class="n">${D(n, 'tickets.open.total', count)}</td>
      <td class="n">${D(n, 'tickets.csat_avg_90d', dec1)}</td></tr>`,
      )
      .join('')}</tbody></table></div></section>`;
}

function percentiles(ctx: ViewContext, scope: string, label: string, field: string, frm: Json | undefined): string {
  const D = (p: string, text: string) => drill(ctx, 'analyst', scope, `tickets.first_response_minutes.${p}`, val(`${field}.${p}`, at(frm, p) ?? null, text));
  return `<tr><th scope="row">${esc(label)}</th>
    <td class="n">${D('count', count(at(frm, 'count')))}</td>
    <td class="n">${D('p50', minutes(at(frm, 'p50')))}</td>
    <td class="n">${D('p90', minutes(at(frm, 'p90')))}</td>
    <td class="n">${D('p99', minutes(at(frm, 'p99')))}</td></tr>`;
}

export class AnalystView {
  private root: HTMLElement | null = null;

  constructor(private readonly ctx: ViewContext) {}

  mount(root: HTMLElement): void {
    this.root = root;
    root.innerHTML = `<div data-part="body"></div>`;
  }

  unmount(): void {
    this.root = null;
  }

  update(data: JsonObject | null): void {
    const root = this.root;
    if (!root) return;
    const body = root.querySelector('[data-part="body"]') as HTMLElement;
    if (!data) {
      body.innerHTML = `<p class="empty">Waiting for data…</p>`;
      return;
    }
    const features = obj(data.features);
    const names = Object.keys(features).sort(
      (a, b) => (num(at(features[b], 'accounts_30d')) ?? 0) - (num(at(features[a], 'accounts_30d')) ?? 0) || a.localeCompare(b),
    );
    const maxAccounts = Math.max(1, ...names.map((n) => num(at(features[n], 'accounts_30d')) ?? 0));
    const hist = Array.isArray(data.health_histogram) ? (data.health_histogram as Json[]) : [];
    const maxBucket = Math.max(1, ...hist.map((n) => num(n) ?? 0));
    const segs = obj(data.segments);
    body.innerHTML = `
      <div class="grid-2">${scopeTable(this.ctx, 'segments', 'Segments', segs)}${scopeTable(this.ctx, 'regions', 'Regions', obj(data.regions))}</div>
      <div class="grid-2">
        <section class="panel" aria-labelledby="h-features"><div class="panel-head"><h2 id="h-features">Feature adoption (30 days)</h2>${exportButtons(this.ctx, 'analyst', 'features')}</div><div class="table-wrap"><table class="data features">
          <thead><tr><th scope="col">Feature</th><th scope="col">Accounts</th><th scope="col" class="n">Users</th></tr></thead>
          <tbody>${names
            .map((n) => {
              const acc = num(at(features[n], 'accounts_30d')) ?? 0;
              return `<tr data-feature="${esc(n)}"><th scope="row">${esc(n)}</th>
                <td><div class="inline-bar"><div class="bar"><div class="bar-fill" style="width:${((acc / maxAccounts) * 100).toFixed(1)}%"></div></div>${drill(this.ctx, 'analyst', 'portfolio', `features.${n}.accounts_30d`, val(`features.${n}.accounts_30d`, acc, count(acc)))}</div></td>
                <td class="n">${val(`features.${n}.users_30d`, at(features[n], 'users_30d'), count(at(features[n], 'users_30d')))}</td></tr>`;
            })
            .join('')}</tbody></table></div></section>
        <section class="panel" aria-labelledby="h-hist"><h2 id="h-hist">Health histogram</h2>
          <div class="histogram" role="group" aria-label="Accounts per health score bucket">${hist
            .map((n, i) => {
              const v = num(n) ?? 0;
              const tier = i >= 7 ? 'green' : i >= 4 ? 'yellow' : 'red';
              return `<div class="hbar"><div class="hbar-n">${drill(this.ctx, 'analyst', 'portfolio', `health_histogram.${i}`, val(`health_histogram.${i}`, v, count(v)))}</div><div class="hbar-col"><div class="hbar-fill tier-bg-${tier}" style="height:${((v / maxBucket) * 100).toFixed(1)}%"></div></div><div class="hbar-label">${i * 10}</div></div>`;
            })
            .join('')}</div>
          <p class="muted">Accounts by health score, buckets of 10 (0–9 … 90–100); colour follows the default tier thresholds.</p>
          <div class="panel-head"><h2 id="h-frt">First-response time (30 days)</h2>${exportButtons(this.ctx, 'analyst', 'segments')}</div>
          <div class="table-wrap"><table class="data"><thead><tr><th scope="col">Scope</th><th scope="col" class="n">Tickets</th><th scope="col" class="n">p50</th><th scope="col" class="n">p90</th><th scope="col" class="n">p99</th></tr></thead>
          <tbody>${percentiles(this.ctx, 'portfolio', 'Portfolio', 'portfolio.tickets.first_response_minutes', at(data.portfolio, 'tickets.first_response_minutes'))}${keys(segs)
            .map((s) => percentiles(this.ctx, `segment:${s}`, s, `segments.${s}.tickets.first_response_minutes`, at(segs[s], 'tickets.first_response_minutes')))
            .join('')}</tbody></table></div>
        </section>
      </div>`;
  }
}
