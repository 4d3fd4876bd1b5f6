//! Manager view: one row per CSM (and the unassigned accounts), sortable by
//! any column; a CSM's row opens their book. Channel `manager`:
//! `{as_of, csms: {csm_id: KPI}, unassigned: KPI}`. The improvement column
//! is each CSM's `health.improvement_rate` over the chosen period, from
//! `GET /api/v1/compare/manager` (one read for the whole team).

import { count, money, pct } from '../format.js';
import type { Json, JsonObject } from '../mergePatch';
import { at, esc, num, obj, TIERS, val } from './common';
import { TIER_ICON } from '../format.js';
import { drill as drillTo, exportButtons, type ViewContext } from './context';

/** `health.improvement_rate` of a scope (SPEC §15). */
interface Improvement {
  rate: number | null;
  accounts: number;
  improved: number;
}

interface Column {
  key: string;
  label: string;
  /** Sort key of a row's KPI. */
  sort: (k: Json) => number | string | null;
  numeric: boolean;
}

const COLUMNS: Column[] = [
  { key: 'csm', label: 'CSM', sort: () => null, numeric: false },
  { key: 'accounts', label: 'Accounts', sort: (k) => num(at(k, 'health.accounts')), numeric: true },
  { key: 'arr', label: 'ARR', sort: (k) => num(at(k, 'revenue.arr')), numeric: true },
  { key: 'tiers', label: 'Tiers (red)', sort: (k) => num(at(k, 'health.tiers.red.accounts')), numeric: false },
  { key: 'at_risk', label: 'At-risk ARR', sort: (k) => num(at(k, 'health.at_risk_arr')), numeric: true },
  { key: 'nrr', label: 'NRR QTD', sort: (k) => num(at(k, 'revenue.nrr_qtd')), numeric: true },
  { key: 'tickets', label: 'Open tickets', sort: (k) => num(at(k, 'tickets.open.total')), numeric: true },
  { key: 'sla', label: 'SLA breaches', sort: (k) => num(at(k, 'tickets.sla_breached')), numeric: true },
  { key: 'improvement', label: 'Improvement', sort: () => null, numeric: true },
  { key: 'alerts', label: 'Alerts firing', sort: (k) => (num(at(k, 'alerts.critical')) ?? 0) * 1e6 + (num(at(k, 'alerts.warning')) ?? 0), numeric: true },
];

/**
 * The sort a saved view keeps for each column: the column's KPI path (the
 * server takes any §3.2 path, `health.improvement_rate` or `csm_id` as the
 * sort of a scope page), `-` for descending.
 */
const SORT_PATHS: Record<string, string> = {
  csm: 'csm_id',
  accounts: 'health.accounts',
  arr: 'revenue.arr',
  tiers: 'health.tiers.red.accounts',
  at_risk: 'health.at_risk_arr',
  nrr: 'revenue.nrr_qtd',
  tickets: 'tickets.open.total',
  sla: 'tickets.sla_breached',
  improvement: 'health.improvement_rate',
  alerts: 'alerts.critical',
};

export class ManagerView {
  private root: HTMLElement | null = null;
  sortKey = 'at_risk';
  sortDesc = true;
  /** The improvement rates by scope (`csms.<id>`, `unassigned`) for `period`. */
  improvement: { period: string; scopes: Map<string, Improvement> } | null = null;
  improvementError: string | null = null;
  private improvementAt = 0;
  private improvementLoading = false;

  constructor(
    private readonly onChange: () => void,
    private readonly onDrill: ((csmId: string) => void) | null,
    private readonly ctx: ViewContext,
  ) {}

  private loadImprovement(): void {
    const period = this.ctx.period();
    const now = Date.now();
    if (this.improvementLoading || (this.improvement?.period === period && now - this.improvementAt < 60_000) || now - this.improvementAt < 1000) return;
    this.improvementLoading = true;
    this.improvementAt = now;
    void this.ctx.fetch<{ data: JsonObject }>(`/api/v1/compare/manager?period=${period}&fields=health.improvement_rate`).then((r) => {
      this.improvementLoading = false;
      if (r.ok && r.body) {
        const scopes = new Map<string, Improvement>();
        for (const [id, v] of Object.entries(obj(r.body.data.csms))) scopes.set(`csms.${id}`, at(v, 'health.improvement_rate') as unknown as Improvement);
        scopes.set('unassigned', at(r.body.data.unassigned, 'health.improvement_rate') as unknown as Improvement);
        this.improvement = { period, scopes };
        this.improvementError = null;
      } else this.improvementError = r.error;
      this.onChange();
    });
  }

  private improvementCell(scope: string): string {
    if (this.improvementError) return `<span class="muted" title="${esc(this.improvementError)}">n/a</span>`;
    const imp = this.improvement?.scopes.get(scope);
    if (!imp) return `<span class="muted">…</span>`;
    const text = imp.rate === null ? '—' : pct(imp.rate);
    return `<span data-imp="${esc(scope)}" data-rate="${esc(JSON.stringify(imp.rate))}" data-accounts="${imp.accounts}" data-improved="${imp.improved}" title="${imp.improved} of ${imp.accounts} yellow or red accounts at the period start are in a better tier now">${esc(text)}</span> <span class="muted">(${imp.improved}/${imp.accounts})</span>`;
  }

  mount(root: HTMLElement): void {
    this.root = root;
    root.innerHTML = `<section class="panel" aria-labelledby="h-team"><div class="panel-head"><h2 id="h-team">Team</h2>${exportButtons(this.ctx, 'manager', 'csms')}</div><div class="table-wrap" data-part="team"></div>
      <p class="muted hint">${this.onDrill ? 'Click a CSM to open their book. ' : ''}Click a column to sort. Improvement: the share of the accounts that were yellow or red at the start of the chosen period that are in a better tier now.</p></section>`;
    root.addEventListener('click', (ev) => {
      const t = ev.target as HTMLElement;
      if (t.closest('a[data-drill], [data-export-path]')) return; // a figure's accounts or an export, not the row's book
      const th = t.closest('[data-sort]') as HTMLElement | null;
      const row = t.closest('[data-csm]') as HTMLElement | null;
      if (th) this.sortBy(th.dataset.sort!);
      else if (row && this.onDrill) this.onDrill(row.dataset.csm!);
    });
    root.addEventListener('keydown', (ev) => {
      const t = ev.target as HTMLElement;
      if (ev.key !== 'Enter' && ev.key !== ' ') return;
      if (t.closest('a[data-drill], [data-export-path]')) return;
      const th = t.closest('[data-sort]') as HTMLElement | null;
      const row = t.closest('[data-csm]') as HTMLElement | null;
      if (th || (row && this.onDrill)) ev.preventDefault();
      if (th) this.sortBy(th.dataset.sort!);
      else if (row && this.onDrill) this.onDrill(row.dataset.csm!);
    });
  }

  unmount(): void {
    this.root = null;
  }

  /** The sort as a saved view keeps it: the column's KPI path, `-` for descending. */
  sortPath(): string | null {
    const path = SORT_PATHS[this.sortKey];
    return path ? `${this.sortDesc ? '-' : ''}${path}` : null;
  }

  /** The sort of a saved view (none: the default, at-risk ARR descending). */
  applySort(sort: string | null): void {
    if (!sort) {
      this.sortKey = 'at_risk';
      this.sortDesc = true;
      this.onChange();
      return;
    }
    const desc = sort.startsWith('-');
    const path = desc ? sort.slice(1) : sort;
    const key = Object.entries(SORT_PATHS).find(([, p]) => p === path)?.[0];
    if (!key) return;
    this.sortKey = key;
    this.sortDesc = desc;
    this.onChange();
  }

  sortBy(key: string): void {
    if (this.sortKey === key) this.sortDesc = !this.sortDesc;
    else {
      this.sortKey = key;
      this.sortDesc = key !== 'csm';
    }
    this.onChange();
  }

  /** CSM ids in the current sort order. */
  order(data: JsonObject): string[] {
    const csms = obj(data.csms);
    const col = COLUMNS.find((c) => c.key === this.sortKey) ?? COLUMNS[0];
    const dir = this.sortDesc ? -1 : 1;
    const rate = (id: string) => this.improvement?.scopes.get(`csms.${id}`)?.rate ?? null;
    const key = (id: string) => (col.key === 'csm' ? id : col.key === 'improvement' ? rate(id) : col.sort(csms[id]));
    return Object.keys(csms).sort((a, b) => {
      const va = key(a);
      const vb = key(b);
      if (va === vb) return a.localeCompare(b);
      if (va === null) return 1;
      if (vb === null) return -1;
      return (va < vb ? -1 : 1) * dir;
    });
  }

  update(data: JsonObject | null): void {
    const root = this.root;
    if (!root) return;
    const el = root.querySelector('[data-part="team"]') as HTMLElement;
    if (!data) {
      el.innerHTML = `<p class="empty">Waiting for data…</p>`;
      return;
    }
    this.loadImprovement();
    const row = (id: string, k: Json, label: string, drill: boolean) => {
      const F = (p: string) => (drill ? `csms.${id}.${p}` : `unassigned.${p}`);
      const scope = drill ? `csm:${id}` : 'unassigned';
      const D = (p: string, raw: Json | undefined, text: string) => drillTo(this.ctx, 'manager', scope, p, val(F(p), raw, text));
      const crit = num(at(k, 'alerts.critical')) ?? 0;
      const warn = num(at(k, 'alerts.warning')) ?? 0;
      return `<tr ${drill ? `data-csm="${esc(id)}" tabindex="0" class="clickable"` : 'class="unassigned"'}>
        <th scope="row">${esc(label)}${this.ctx.drillable ? ` ${drillTo(this.ctx, 'manager', scope, 'health.accounts', '<span class="muted small">accounts ›</span>')}` : ''}</th>
        <td class="n">${D('health.accounts', at(k, 'health.accounts'), count(at(k, 'health.accounts')))}</td>
        <td class="n">${D('revenue.arr', at(k, 'revenue.arr'), money(at(k, 'revenue.arr')))}</td>
        <td class="tiers-cell">${TIERS.map(
          (t) => `<span class="tier-count tier-${t}" title="${t}"><span aria-hidden="true">${TIER_ICON[t]}</span>${D(`health.tiers.${t}.accounts`, at(k, `health.tiers.${t}.accounts`), count(at(k, `health.tiers.${t}.accounts`)))}<span class="sr-only"> ${t}</span></span>`,
        ).join(' ')}</td>
        <td class="n">${D('health.at_risk_arr', at(k, 'health.at_risk_arr'), money(at(k, 'health.at_risk_arr')))}</td>
        <td class="n">${D('revenue.nrr_qtd', at(k, 'revenue.nrr_qtd'), pct(at(k, 'revenue.nrr_qtd')))}</td>
        <td class="n">${D('tickets.open.total', at(k, 'tickets.open.total'), count(at(k, 'tickets.open.total')))}</td>
        <td class="n">${D('tickets.sla_breached', at(k, 'tickets.sla_breached'), count(at(k, 'tickets.sla_breached')))}</td>
        <td class="n">${this.improvementCell(drill ? `csms.${id}` : 'unassigned')}</td>
        <td class="n">${crit ? `<span class="crit">■ ${D('alerts.critical', crit, count(crit))}</span>` : val(F('alerts.critical'), crit, '')}${
          warn ? ` <span class="warn">▲ ${D('alerts.warning', warn, count(warn))}</span>` : val(F('alerts.warning'), warn, '')
        }${crit + warn === 0 ? '<span class="muted">0</span>' : ''}</td>
      </tr>`;
    };
    const csms = obj(data.csms);
    el.innerHTML = `<table class="data team"><thead><tr>${COLUMNS.map((c) => {
      const active = c.key === this.sortKey;
      const aria = active ? (this.sortDesc ? 'descending' : 'ascending') : 'none';
      return `<th scope="col" class="${c.numeric ? 'n' : ''} sortable" data-sort="${c.key}" aria-sort="${aria}" tabindex="0">${esc(c.label)}${
        active ? (this.sortDesc ? ' ▼' : ' ▲') : ''
      }</th>`;
    }).join('')}</tr></thead><tbody>${this.order(data)
      .map((id) => row(id, csms[id], id, true))
      .join('')}${row('', data.unassigned ?? {}, 'Unassigned', false)}</tbody></table>`;
  }
}
