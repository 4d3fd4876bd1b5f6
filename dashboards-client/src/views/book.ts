//! A CSM's book (channel `csm:<id>`): accounts in priority order (§3.4, the
//! server's `health.rank`), seven columns, paged to fit one screen, and the
//! detail of one account beside it: health components, its health over the
//! last 18 weeks (weekly bars from its daily rows), its tier log with the
//! causes and its alert log (`GET /api/v1/accounts/{id}/history`). The
//! book's KPIs show their change against the chosen period
//! (`GET /api/v1/compare/csm:<id>`) and the book's targets. Used by the CSM
//! view and by the manager's drill-down; everything it reads is the one
//! book's (a csm token reads nothing else).

import { ago, count, date, dec1, instant, money, pct } from '../format.js';
import type { Json, JsonObject } from '../mergePatch';
import type { Alert } from '../protocol';
import type { Compared, Target } from '../api';
import { DAY_MS, endOfUtcDay, weeklyBars, type AccountDay, type ComparePeriod } from '../history';
import { at, esc, num, obj, tierBadge, tierOf, tile, val } from './common';
import { changeLine, drill, exportButtons, targetLine, type ViewContext } from './context';

/** `GET /api/v1/accounts/{id}/history`. */
interface AccountHistory {
  account_id: string;
  days: AccountDay[];
  tier_changes: { ts: string; from: string | null; to: string; score: number | null; cause: { topic?: string; event_id?: string; time?: boolean } }[];
  alerts: Alert[];
}

const WEEKS = 18;
const BOOK_FIELDS = ['health.accounts', 'revenue.arr', 'health.at_risk_arr'];

function causeText(c: AccountHistory['tier_changes'][number]['cause']): string {
  if (c?.time) return 'time passing (window, SLA clock or renewal)';
  if (c?.topic) return `${c.topic} ${c.event_id ?? ''}`.trim();
  return '—';
}

const COMPONENTS: [string, string][] = [
  ['adoption', 'Adoption'],
  ['engagement', 'Engagement'],
  ['support', 'Support'],
  ['sentiment', 'Sentiment'],
];

export function bookOrder(accounts: JsonObject): [string, JsonObject][] {
  return Object.entries(accounts)
    .map(([id, a]) => [id, obj(a)] as [string, JsonObject])
    .sort(([ia, a], [ib, b]) => {
      const ra = num(at(a, 'health.rank')) ?? Number.MAX_SAFE_INTEGER;
      const rb = num(at(b, 'health.rank')) ?? Number.MAX_SAFE_INTEGER;
      return ra - rb || ia.localeCompare(ib);
    });
}

export class BookView {
  private root: HTMLElement | null = null;
  page = 0;
  selected: string | null = null;
  private pageSize = 12;
  private data: JsonObject | null = null;
  /** The channel shown (`csm:<id>`): every read below is of this book only. */
  channel: string | null = null;
  /** Account histories read, by account id (kept a minute). */
  private readonly histories = new Map<string, { at: number; result: AccountHistory | null; error: string | null; loading: boolean }>();
  compare: { channel: string; period: ComparePeriod; data: JsonObject } | null = null;
  private compareAt = 0;
  private compareLoading = false;
  targets: { channel: string; list: Target[] } | null = null;
  private targetsAt = 0;

  constructor(
    private readonly onChange: () => void,
    private readonly ctx: ViewContext,
  ) {}

  /** The book's compare and targets, when due. */
  private loadBook(channel: string): void {
    const now = Date.now();
    const period = this.ctx.period();
    if (!this.compareLoading && (this.compare?.channel !== channel || this.compare.period !== period || now - this.compareAt > 60_000) && now - this.compareAt > 1000) {
      this.compareLoading = true;
      this.compareAt = now;
      void this.ctx.fetch<{ data: JsonObject }>(`/api/v1/compare/${encodeURIComponent(channel)}?period=${period}&fields=${BOOK_FIELDS.join(',')}`).then((r) => {
        this.compareLoading = false;
        this.compare = r.ok && r.body ? { channel, period, data: r.body.data } : null;
        this.onChange();
      });
    }
    if (this.targets?.channel !== channel || now - this.targetsAt > 60_000) {
      this.targetsAt = now;
      this.targets = { channel, list: this.targets?.channel === channel ? this.targets.list : [] };
      void this.ctx.fetch<{ targets: Target[] }>('/api/v1/targets').then((r) => {
        // Only this book's targets (the server lists a csm nothing else anyway).
        if (r.ok && r.body) this.targets = { channel, list: r.body.targets.filter((t) => t.scope === channel) };
        this.onChange();
      });
    }
  }

  /** The selected account's history, read once a minute at most. */
  private loadHistory(id: string, asOfMs: number): void {
    const now = Date.now();
    const had = this.histories.get(id);
    if (had && (had.loading || now - had.at < 60_000)) return;
    const from = new Date(endOfUtcDay(asOfMs) - WEEKS * 7 * DAY_MS).toISOString();
    this.histories.set(id, { at: now, result: had?.result ?? null, error: null, loading: true });
    void this.ctx.fetch<AccountHistory>(`/api/v1/accounts/${encodeURIComponent(id)}/history?from=${encodeURIComponent(from)}`).then((r) => {
      this.histories.set(id, { at: now, result: r.ok ? r.body : null, error: r.ok ? null : r.error, loading: false });
      this.onChange();
    });
  }

  mount(root: HTMLElement): void {
    this.root = root;
    root.innerHTML = `
      <div class="book-layout">
        <section class="book-main panel" aria-labelledby="h-book">
          <div class="book-head"><h2 id="h-book">Book</h2><div data-part="kpis" class="mini-kpis"></div><div data-part="exports"></div><div data-part="pager" class="pager"></div></div>
          <div data-part="targets" class="book-targets"></div>
          <div class="book-table" data-part="table"></div>
        </section>
        <aside class="book-side">
          <section class="panel" aria-labelledby="h-detail" data-part="detail-panel"><h2 id="h-detail">Account</h2><div data-part="detail"><p class="muted">Select an account for its health components.</p></div></section>
          <section class="panel" aria-labelledby="h-alerts"><h2 id="h-alerts">Alerts</h2><div data-part="alerts" class="alerts-box"></div></section>
        </aside>
      </div>`;
    root.addEventListener('click', (ev) => {
      const t = ev.target as HTMLElement;
      if (t.closest('a[data-drill], [data-export-path]')) return;
      const row = t.closest('[data-account]') as HTMLElement | null;
      const pager = t.closest('[data-page]') as HTMLElement | null;
      const close = t.closest('[data-close-detail]');
      if (close) {
        this.selected = null;
      } else if (pager) {
        this.page = Math.max(0, this.page + Number(pager.dataset.page));
      } else if (row) {
        this.selected = row.dataset.account ?? null;
      } else {
        return;
      }
      this.onChange();
    });
    root.addEventListener('keydown', (ev) => {
      const row = (ev.target as HTMLElement).closest('[data-account]') as HTMLElement | null;
      if (row && (ev.key === 'Enter' || ev.key === ' ')) {
        ev.preventDefault();
        this.selected = row.dataset.account ?? null;
        this.onChange();
      }
    });
  }

  unmount(): void {
    this.root = null;
  }

  /** Rows that fit the table's height (one screen, no scrolling) — all rows on a phone. */
  private fit(el: HTMLElement, total: number): number {
    if (window.matchMedia('(max-width: 700px)').matches) return Math.max(total, 1);
    const head = (el.querySelector('thead') as HTMLElement | null)?.offsetHeight ?? 36;
    const row = (el.querySelector('tbody tr') as HTMLElement | null)?.offsetHeight ?? 34;
    return Math.max(3, Math.floor((el.clientHeight - head - 2) / Math.max(row, 20)));
  }

  update(data: JsonObject | null, alerts: Alert[], nowMs: number, title: string, channel: string): void {
    const root = this.root;
    if (!root) return;
    this.data = data;
    this.channel = channel;
    const part = (name: string) => root.querySelector(`[data-part="${name}"]`) as HTMLElement;
    (root.querySelector('#h-book') as HTMLElement).textContent = title;
    if (!data) {
      part('table').innerHTML = `<p class="empty">Waiting for data…</p>`;
      return;
    }
    this.loadBook(channel);
    const k = obj(data.kpis);
    const cmp = (path: string) => {
      const c = this.compare?.channel === channel ? (at(this.compare.data, `kpis.${path}`) as unknown as Compared | undefined) : undefined;
      return c && typeof c === 'object' ? changeLine('kpis', path, c, this.compare!.period) : '';
    };
    const D = (path: string, fmt: (v: unknown) => string) => drill(this.ctx, channel, channel, path, val(`kpis.${path}`, at(k, path), fmt(at(k, path))));
    part('kpis').innerHTML = [
      `<span>${D('health.accounts', count)} accounts</span>`,
      `<span>${D('revenue.arr', money)} ARR ${cmp('revenue.arr')}</span>`,
      `<span class="risk-text">${D('health.at_risk_arr', money)} at risk ${cmp('health.at_risk_arr')}</span>`,
    ].join('');
    const exports = exportButtons(this.ctx, channel, 'accounts');
    if (part('exports').dataset.channel !== channel) {
      part('exports').innerHTML = exports;
      part('exports').dataset.channel = channel;
    }
    part('targets').innerHTML = (this.targets?.channel === channel ? this.targets.list : []).map(targetLine).join('');

    const rows = bookOrder(obj(data.accounts));
    const table = part('table');
    const render = (size: number) => {
      const pages = Math.max(1, Math.ceil(rows.length / size));
      this.page = Math.min(this.page, pages - 1);
      const shown = rows.slice(this.page * size, this.page * size + size);
      table.innerHTML = this.table(shown, nowMs);
      part('pager').innerHTML =
        pages > 1
          ? `<button type="button" data-page="-1" ${this.page === 0 ? 'disabled' : ''} aria-label="Previous page">‹</button>
             <span>${this.page * size + 1}–${this.page * size + shown.length} of ${rows.length}</span>
             <button type="button" data-page="1" ${this.page >= pages - 1 ? 'disabled' : ''} aria-label="Next page">›</button>`
          : '';
    };
    render(this.pageSize);
    const fit = this.fit(table, rows.length);
    if (fit !== this.pageSize) {
      this.pageSize = fit;
      render(fit);
    }

    const selected = this.selected ? obj(data.accounts)[this.selected] : undefined;
    const asOfMs = typeof data.as_of === 'string' ? Date.parse(data.as_of) : nowMs;
    if (selected !== undefined && this.selected) this.loadHistory(this.selected, asOfMs);
    part('detail').innerHTML = selected
      ? this.detail(obj(selected)) + this.historyPart(this.selected!, asOfMs)
      : `<p class="muted">Select an account for its health components.</p>`;
    part('detail-panel').classList.toggle('has-detail', selected !== undefined);

    part('alerts').innerHTML = alerts.length
      ? `<ul class="alert-list">${alerts
          .map(
            (a) => `<li class="alert alert-${a.severity}" data-alert="${esc(a.alert_id)}"><span class="sev">${
              a.severity === 'critical' ? '■ Critical' : '▲ Warning'
            }</span> ${esc(a.message)} <time>${esc(ago(nowMs - Date.parse(a.ts)))}</time></li>`,
          )
          .join('')}</ul>`
      : `<p class="ok">✓ No alerts firing</p>`;
  }

  private table(rows: [string, JsonObject][], nowMs: number): string {
    return `<table class="data book"><thead><tr>
      <th scope="col">Account</th><th scope="col">Health</th><th scope="col" class="n">ARR</th><th scope="col">Renewal</th>
      <th scope="col">Last activity</th><th scope="col" class="n">Alerts</th><th scope="col" class="n">Tickets</th>
    </tr></thead><tbody>${rows
      .map(([id, a]) => {
        const tier = tierOf(at(a, 'health.tier'));
        const f = (p: string) => `accounts.${id}.${p}`;
        const days = num(at(a, 'revenue.days_to_renewal'));
        const last = at(a, 'usage.last_activity');
        const crit = num(at(a, 'alerts.critical')) ?? 0;
        const warn = num(at(a, 'alerts.warning')) ?? 0;
        const name = (at(a, 'info.name') as string | undefined) || id;
        return `<tr data-account="${esc(id)}" tabindex="0" class="${this.selected === id ? 'selected' : ''} row-${tier ?? 'none'}" aria-selected="${this.selected === id}">
          <th scope="row"><span class="acct-name">${val(f('info.name'), at(a, 'info.name') ?? null, name)}</span></th>
          <td>${tierBadge(tier)} ${val(f('health.score'), at(a, 'health.score'), dec1(at(a, 'health.score')), 'score')}</td>
          <td class="n">${val(f('revenue.arr'), at(a, 'revenue.arr'), money(at(a, 'revenue.arr')))}</td>
          <td>${val(f('info.renewal_date'), at(a, 'info.renewal_date') ?? null, date(at(a, 'info.renewal_date')))}${
            days !== null ? ` <span class="muted">(${days >= 0 ? `in ${days} d` : `${-days} d ago`})</span>` : ''
          }</td>
          <td>${val(f('usage.last_activity'), last ?? null, typeof last === 'string' ? ago(nowMs - Date.parse(last)) : 'never')}</td>
          <td class="n">${crit > 0 ? `<span class="crit">■ ${crit}</span>` : ''}${warn > 0 ? ` <span class="warn">▲ ${warn}</span>` : ''}${
            crit + warn === 0 ? '<span class="muted">0</span>' : ''
          }<span class="sr-only" data-field="${esc(f('alerts'))}" data-value="${crit + warn}"> ${crit} critical, ${warn} warning</span></td>
          <td class="n">${val(f('tickets.open'), at(a, 'tickets.open'), count(at(a, 'tickets.open')))}${
            (num(at(a, 'tickets.open_p1')) ?? 0) > 0 ? ` <span class="crit">P1</span>` : ''
          }</td>
        </tr>`;
      })
      .join('')}</tbody></table>`;
  }

  private detail(a: JsonObject): string {
    const id = String(a.account_id ?? '');
    const f = (p: string) => `detail.${p}`;
    const tier = tierOf(at(a, 'health.tier'));
    const comps = COMPONENTS.map(([key, label]) => {
      const v = num(at(a, `health.components.${key}`));
      return `<div class="comp"><span class="comp-label">${label}</span>
        <div class="bar" role="img" aria-label="${label} ${dec1(v)} of 100"><div class="bar-fill comp-fill" style="width:${v ?? 0}%"></div></div>
        ${val(f(`health.components.${key}`), v, dec1(v), 'comp-v')}</div>`;
    }).join('');
    const info = obj(a.info);
    const lines: [string, string][] = [
      ['Segment / region', `${esc(info.segment ?? '')} / ${esc(info.region ?? '')}`],
      ['Seats', val(f('info.seats'), info.seats, count(info.seats))],
      ['Active users 7 d / 30 d', `${val(f('usage.active_users_7d'), at(a, 'usage.active_users_7d'), count(at(a, 'usage.active_users_7d')))} / ${val(f('usage.active_users_30d'), at(a, 'usage.active_users_30d'), count(at(a, 'usage.active_users_30d')))}`],
      ['Usage events 7 d (prev)', `${count(at(a, 'usage.usage_events_7d'))} (${count(at(a, 'usage.usage_events_prev_7d'))})`],
      ['Drop ratio', pct(at(a, 'usage.drop_ratio'))],
      ['Open tickets P1/P2/P3/P4', ['open_p1', 'open_p2', 'open_p3', 'open_p4'].map((p) => count(at(a, `tickets.${p}`))).join(' / ')],
      ['Escalated / SLA breached', `${count(at(a, 'tickets.escalated_open'))} / ${count(at(a, 'tickets.sla_breached'))}`],
      ['CSAT 90 d', `${dec1(at(a, 'tickets.csat_avg_90d'))} (${count(at(a, 'tickets.csat_count_90d'))})`],
      ['Last activity', instant(at(a, 'usage.last_activity'))],
      ['Priority rank', count(at(a, 'health.rank'))],
    ];
    return `<div class="detail" data-detail="${esc(id)}">
      <div class="detail-head"><h3>${esc((info.name as Json) || id)}</h3><button type="button" data-close-detail aria-label="Close detail">✕</button></div>
      <div class="detail-kpis">${tile('Health', `${tierBadge(tier)} ${val(f('health.score'), at(a, 'health.score'), dec1(at(a, 'health.score')))}`)}${tile(
        'ARR',
        val(f('revenue.arr'), at(a, 'revenue.arr'), money(at(a, 'revenue.arr'))),
      )}</div>
      <h4>Health components</h4><div class="comps">${comps}</div>
      <dl class="facts">${lines.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('')}</dl>
    </div>`;
  }

  /** The account's 18 weekly bars, tier log and alert log. */
  private historyPart(id: string, asOfMs: number): string {
    const h = this.histories.get(id);
    if (!h || (h.loading && !h.result)) return `<h4>Health, last ${WEEKS} weeks</h4><p class="muted">Loading history…</p>`;
    if (!h.result) return `<h4>Health, last ${WEEKS} weeks</h4><p class="muted">History unavailable (${esc(h.error ?? 'error')}).</p>`;
    const r = h.result;
    const bars = weeklyBars(r.days, endOfUtcDay(asOfMs), WEEKS);
    const weeks = `<div class="weeks" data-weeks="${esc(id)}" role="img" aria-label="Average health score per week, last ${WEEKS} weeks">${bars
      .map(
        (b) => `<div class="week" data-week="${esc(b.start)}" data-score="${esc(JSON.stringify(b.score))}" data-days="${b.days}" title="week of ${esc(
          b.start.slice(0, 10),
        )}: ${b.score === null ? 'no daily rows' : `${dec1(b.score)} average over ${b.days} day(s)`}"><div class="week-col">${
          b.score === null ? '<div class="week-gap"></div>' : `<div class="week-fill tier-bg-${b.tier ?? 'none'}" style="height:${Math.max(2, b.score).toFixed(1)}%"></div>`
        }</div></div>`,
      )
      .join('')}</div><div class="weeks-axis muted"><span>${esc(bars[0].start.slice(0, 10))}</span><span>this week</span></div>`;
    const changes = [...r.tier_changes].reverse();
    const log = changes.length
      ? `<table class="data tierlog"><thead><tr><th scope="col">When (UTC)</th><th scope="col">Change, score and cause</th></tr></thead><tbody>${changes
          .map(
            (c) => `<tr data-tier-change="${esc(c.ts)}" data-from="${esc(JSON.stringify(c.from))}" data-to="${esc(c.to)}" data-score="${esc(JSON.stringify(c.score))}" data-cause="${esc(
              JSON.stringify(c.cause),
            )}"><td>${esc(instant(c.ts).replace(' UTC', ''))}</td><td>${c.from ? tierBadge(tierOf(c.from)) : '<span class="muted">new</span>'} → ${tierBadge(
              tierOf(c.to),
            )} <span class="muted">${esc(dec1(c.score))}</span><div class="cause muted">${esc(causeText(c.cause))}</div></td></tr>`,
          )
          .join('')}</tbody></table>`
      : `<p class="muted">No tier changes in these ${WEEKS} weeks.</p>`;
    const alerts = r.alerts.length
      ? `<ul class="alert-list alert-log">${[...r.alerts]
          .reverse()
          .map(
            (a) => `<li class="alert alert-${esc(a.severity)}" data-alert-log="${esc(a.alert_id)}" data-state="${esc(a.state)}"><span class="sev">${
              a.state === 'resolved' ? '✓ Resolved' : a.severity === 'critical' ? '■ Critical' : '▲ Warning'
            }</span> ${esc(a.message)} <time>${esc(instant(a.ts))}</time></li>`,
          )
          .join('')}</ul>`
      : `<p class="muted">No alerts in these ${WEEKS} weeks.</p>`;
    return `<h4>Health, last ${WEEKS} weeks</h4>${weeks}<h4>Tier log</h4>${log}<h4>Alert log</h4>${alerts}`;
  }

  get current(): JsonObject | null {
    return this.data;
  }
}
