//! The accounts explorer (SPEC §19), also the landing page of every
//! drill-down: the accounts list (`GET /api/v1/accounts`) with every filter
//! as a control, any account field as a column, sorting by a header, more
//! rows through `next_cursor`, the distribution of a numeric field over the
//! filtered set (`GET /api/v1/accounts/distribution`) and the export of the
//! whole filtered list (`/api/v1/accounts/export.csv|xlsx`). Its state is
//! the page URL (`#accounts?…`).
//!
//! A drill-down names its source (`from` channel, `scope`, `metric`): for an
//! additive figure the page asks the list for the sum of the figure's
//! account field over every listed account (`sums=`: one read, one
//! `as_of`, exact) and sets it beside the figure as the channel gives it at
//! that `as_of`; alert counts show the scope's own alerts as the difference. A
//! ratio lists the scope's accounts with its component columns.
//!
//! A csm lists its own book only: the server restricts the token, and the
//! page offers no CSM filter (a `csm_id` of another book in a URL is dropped).

import type { ApiResult } from '../api';
import {
  accountPaths,
  ALERT_VALUES,
  cents,
  DEFAULT_COLUMNS,
  DEFAULT_ROWS,
  drillFor,
  explorerQuery,
  fieldOf,
  figureIn,
  listParams,
  MAX_COLUMNS,
  numericPaths,
  scopeLabel,
  TIER_VALUES,
  type ExplorerState,
  type Filters,
} from '../explore';
import { count, date, dec1, instant, money, pct } from '../format.js';
import type { Json, JsonObject } from '../mergePatch';
import { esc, tierBadge, tierOf } from './common';
import type { ViewContext } from './context';

interface ListAnswer {
  as_of: string | null;
  accounts: JsonObject[];
  total: number;
  next_cursor: string | null;
  /** With `sums=`: each asked field added up over every match. */
  sums?: Record<string, number>;
}

export interface Distribution {
  as_of: string | null;
  field: string;
  total: number;
  nulls: number;
  min: number | null;
  max: number | null;
  buckets: { from: number; to: number; count: number }[];
}

/** The drilled figure beside the listed accounts' total, both at one `as_of`. */
interface DrillCheck {
  key: string;
  loading: boolean;
  error: string | null;
  /** The figure as the source channel gives it, and the channel's `as_of`. */
  figure: Json | undefined;
  figureAsOf: string | null;
  /** Over every listed account (cents for money): the sum, how many, the list's `as_of`. */
  sum: number | null;
  listed: number;
  listAsOf: string | null;
}

const LABELS: Record<string, string> = {
  account_id: 'Account id',
  'info.name': 'Name',
  'info.csm_id': 'CSM',
  'info.segment': 'Segment',
  'info.region': 'Region',
  'info.seats': 'Seats',
  'info.renewal_date': 'Renewal date',
  'health.tier': 'Tier',
  'health.score': 'Health',
  'health.rank': 'Rank',
  'revenue.arr': 'ARR',
  'revenue.days_to_renewal': 'Days to renewal',
  'alerts.critical': 'Critical alerts',
  'alerts.warning': 'Warnings',
  'tickets.open': 'Open tickets',
  'tickets.csat_avg_90d': 'CSAT 90 d',
  'tickets.csat_count_90d': 'CSAT ratings 90 d',
};

export function columnLabel(path: string): string {
  if (LABELS[path]) return LABELS[path];
  const parts = path.split('.');
  const last = parts[parts.length - 1].replace(/_/g, ' ');
  return parts.length > 2 ? `${parts[parts.length - 2]} ${last}` : last.replace(/\b(p\d)\b/, (m) => m.toUpperCase());
}

/** How a field's value is written in a cell. */
export function cellText(path: string, v: Json | undefined): string {
  if (v === undefined || v === null) return '—';
  if (path === 'health.tier') return tierBadge(tierOf(v));
  if (typeof v === 'number') {
    if (path === 'revenue.arr') return esc(money(v));
    if (path.endsWith('drop_ratio')) return esc(pct(v));
    if (/score|components|csat_avg/.test(path)) return esc(dec1(v));
    return esc(count(v));
  }
  if (path === 'usage.last_activity') return esc(instant(v));
  if (path === 'info.renewal_date') return esc(date(v));
  return esc(typeof v === 'string' ? v : JSON.stringify(v));
}

/** Sortable by the server (`sort=`): the account object's fields, not the rank. */
const UNSORTABLE = new Set(['health.rank', 'status']);
/** Money paths: summed in cents. */
const isMoney = (path: string) => path === 'revenue.arr';

export class AccountsView {
  private root: HTMLElement | null = null;
  state: ExplorerState;
  private listKey: string | null = null;
  list: { key: string; loading: boolean; error: string | null; answer: ListAnswer | null; more: boolean } | null = null;
  dist: { key: string; loading: boolean; error: string | null; answer: Distribution | null } | null = null;
  check: DrillCheck | null = null;
  /** Every path seen on an account object, in first-seen order (the column chooser's list). */
  private paths: string[] = [...DEFAULT_COLUMNS];
  private numeric: string[] = ['revenue.arr', 'health.score'];
  private segments: string[] = [];

  constructor(
    private readonly ctx: ViewContext,
    /** The csm whose book this is, for a csm token (its explorer is its own book). */
    private readonly ownCsm: string | null,
    /** A new state chosen on the page: written to the URL by the shell. */
    private readonly onState: (state: ExplorerState) => void,
  ) {
    this.state = { filters: {}, columns: [...DEFAULT_COLUMNS], sort: null, dist: null, buckets: 20, rows: DEFAULT_ROWS, drill: null };
  }

  /** The state from the URL (a csm's `csm_id` can only be its own). */
  setState(state: ExplorerState): void {
    const filters: Filters = { ...state.filters };
    if (this.ownCsm !== null && filters.csm_id !== undefined && filters.csm_id !== this.ownCsm) delete filters.csm_id;
    this.state = { ...state, filters };
    if (this.root) this.renderForm();
    this.ctx.changed();
  }

  /** Known segments (from the executive channel) for the filter's suggestions. */
  setSegments(names: string[]): void {
    if (names.join('\n') === this.segments.join('\n')) return;
    this.segments = names;
    const list = this.root?.querySelector('#dl-segments');
    if (list) list.innerHTML = names.map((n) => `<option value="${esc(n)}"></option>`).join('');
  }

  query(): string {
    return explorerQuery(this.state);
  }

  mount(root: HTMLElement): void {
    this.root = root;
    root.innerHTML = `
      <section class="panel drill-banner" data-part="banner" hidden></section>
      <section class="panel" aria-labelledby="h-filters">
        <div class="panel-head"><h2 id="h-filters">Accounts</h2><span class="muted" data-part="scope-note"></span></div>
        <form class="filters" data-part="filters" autocomplete="off"></form>
      </section>
      <section class="panel" aria-labelledby="h-list">
        <div class="panel-head"><h2 id="h-list">List</h2><span data-part="count" class="muted"></span>
          <details class="columns" data-part="columns"><summary>Columns</summary><div class="columns-list" data-part="columns-list"></div></details>
          <span data-part="exports"></span></div>
        <div class="table-wrap explorer-wrap" data-part="table"></div>
        <div class="more" data-part="more"></div>
      </section>
      <section class="panel" aria-labelledby="h-dist"><div class="panel-head"><h2 id="h-dist">Distribution</h2>
        <label>of <select data-dist-field aria-label="Field"></select></label>
        <label>buckets <input type="number" min="1" max="100" data-dist-buckets aria-label="Buckets"></label></div>
        <div data-part="dist"></div></section>`;
    this.renderForm();
    const form = root.querySelector('[data-part="filters"]') as HTMLFormElement;
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.applyForm();
    });
    form.addEventListener('change', (ev) => {
      if ((ev.target as HTMLElement).matches('input[type="checkbox"], select')) this.applyForm();
    });
    root.addEventListener('click', (ev) => {
      const t = ev.target as HTMLElement;
      const th = t.closest('[data-sort-path]') as HTMLElement | null;
      if (th) return this.sortBy(th.dataset.sortPath!);
      if (t.closest('[data-load-more]')) return void this.loadMore();
      if (t.closest('[data-reset]')) return this.onState({ ...this.state, filters: {}, sort: null, drill: null });
      if (t.closest('[data-refresh]')) {
        this.listKey = null;
        this.check = null;
        this.dist = null;
        this.ctx.changed();
      }
    });
    root.addEventListener('keydown', (ev) => {
      const th = (ev.target as HTMLElement).closest('[data-sort-path]') as HTMLElement | null;
      if (th && (ev.key === 'Enter' || ev.key === ' ')) {
        ev.preventDefault();
        this.sortBy(th.dataset.sortPath!);
      }
    });
    root.querySelector('[data-part="columns-list"]')!.addEventListener('change', () => {
      const checked = [...root.querySelectorAll<HTMLInputElement>('[data-col-choice]:checked')].map((i) => i.value);
      const kept = this.state.columns.filter((c) => checked.includes(c));
      const added = checked.filter((c) => !kept.includes(c));
      this.onState({ ...this.state, columns: [...kept, ...added].slice(0, MAX_COLUMNS) });
    });
    root.querySelector('[data-dist-field]')!.addEventListener('change', (ev) => {
      this.onState({ ...this.state, dist: (ev.target as HTMLSelectElement).value || null });
    });
    root.querySelector('[data-dist-buckets]')!.addEventListener('change', (ev) => {
      const n = Math.round(Number((ev.target as HTMLInputElement).value));
      if (n >= 1 && n <= 100) this.onState({ ...this.state, buckets: n });
    });
  }

  unmount(): void {
    this.root = null;
  }

  private renderForm(): void {
    const root = this.root;
    if (!root) return;
    const f = this.state.filters;
    const input = (name: keyof Filters, label: string, attrs = '') =>
      `<label>${esc(label)} <input name="${name}" value="${esc(f[name] ?? '')}" ${attrs}></label>`;
    const boxes = (name: 'tier' | 'alert', values: string[], label: string) =>
      `<fieldset><legend>${esc(label)}</legend>${values
        .map((v) => `<label class="check"><input type="checkbox" name="${name}" value="${v}" ${(f[name] ?? []).includes(v) ? 'checked' : ''}> ${esc(v)}</label>`)
        .join('')}</fieldset>`;
    const csm =
      this.ownCsm === null
        ? `<label>CSM <input name="csm_id" value="${esc(f.csm_id ?? '')}" ${f.csm_id === '' ? 'placeholder="(unassigned)"' : 'placeholder="any"'}></label>
           <label class="check"><input type="checkbox" name="unassigned" ${f.csm_id === '' ? 'checked' : ''}> unassigned only</label>`
        : '';
    (root.querySelector('[data-part="filters"]') as HTMLElement).innerHTML = `
      ${input('q', 'Search', 'type="search" placeholder="name or id"')}
      ${input('segment', 'Segment', 'list="dl-segments" placeholder="any"')}<datalist id="dl-segments">${this.segments.map((n) => `<option value="${esc(n)}"></option>`).join('')}</datalist>
      ${input('region', 'Region', 'placeholder="any"')}
      ${csm}
      ${boxes('tier', TIER_VALUES, 'Tier')}
      ${boxes('alert', ALERT_VALUES, 'Alerts')}
      ${input('arr_min', 'ARR ≥', 'inputmode="decimal" placeholder="$"')}
      ${input('arr_max', 'ARR ≤', 'inputmode="decimal" placeholder="$"')}
      ${input('renewal_within', 'Renewal within', 'placeholder="e.g. 90d"')}
      <span class="filter-actions"><button type="submit" class="btn">Apply</button><button type="button" class="btn-small" data-reset>Clear</button><button type="button" class="btn-small" data-refresh title="Read the list again">↻ Refresh</button></span>`;
    (root.querySelector('[data-part="scope-note"]') as HTMLElement).textContent =
      this.ownCsm !== null ? `Your book (${this.ownCsm}) only.` : 'Every filter combines (AND); tiers and alerts: any of the ticked.';
    const buckets = root.querySelector('[data-dist-buckets]') as HTMLInputElement;
    buckets.value = String(this.state.buckets);
  }

  private applyForm(): void {
    const form = this.root?.querySelector('[data-part="filters"]') as HTMLFormElement | null;
    if (!form) return;
    const data = new FormData(form);
    const text = (k: string) => String(data.get(k) ?? '').trim();
    const filters: Filters = {};
    for (const k of ['q', 'segment', 'region', 'arr_min', 'arr_max', 'renewal_within'] as const) if (text(k)) filters[k] = text(k);
    if (this.ownCsm === null) {
      if (data.get('unassigned')) filters.csm_id = '';
      else if (text('csm_id')) filters.csm_id = text('csm_id');
    }
    const tiers = data.getAll('tier').map(String);
    const alerts = data.getAll('alert').map(String);
    if (tiers.length) filters.tier = tiers;
    if (alerts.length) filters.alert = alerts;
    // A changed filter leaves the drill-down: the figure no longer describes the list.
    const same = listParams(filters).toString() === listParams(this.state.filters).toString();
    this.onState({ ...this.state, filters, drill: same ? this.state.drill : null });
  }

  private sortBy(path: string): void {
    const cur = this.state.sort;
    let next: string | null;
    if (cur === path) next = `-${path}`;
    else if (cur === `-${path}`) next = path;
    else {
      const sample = this.list?.answer?.accounts.find((a) => fieldOf(a, path) !== null && fieldOf(a, path) !== undefined);
      next = sample && typeof fieldOf(sample, path) === 'number' ? `-${path}` : path;
    }
    this.onState({ ...this.state, sort: next });
  }

  private params(): URLSearchParams {
    return listParams(this.state.filters, this.state.sort);
  }

  /** The list's first page, when the filters or the sort changed. */
  private load(): void {
    const params = this.params().toString();
    const key = `${params}|${this.state.rows}`;
    if (this.listKey === key) return;
    this.listKey = key;
    this.list = { key, loading: true, error: null, answer: null, more: false };
    void this.ctx.fetch<ListAnswer>(`/api/v1/accounts?${params}${params ? '&' : ''}limit=${this.state.rows}`).then((r) => {
      if (this.list?.key !== key) return;
      this.list = { key, loading: false, error: r.ok ? null : errorText(r), answer: r.ok ? r.body : null, more: false };
      if (r.ok && r.body) this.learn(r.body.accounts);
      this.ctx.changed();
    });
  }

  private async loadMore(): Promise<void> {
    const list = this.list;
    const cursor = list?.answer?.next_cursor;
    if (!list || !cursor || list.more) return;
    list.more = true;
    this.ctx.changed();
    const p = this.params();
    p.set('limit', String(this.state.rows));
    p.set('cursor', cursor);
    const r = await this.ctx.fetch<ListAnswer>(`/api/v1/accounts?${p}`);
    if (this.list !== list || !list.answer) return;
    list.more = false;
    if (r.ok && r.body) {
      list.answer = { ...list.answer, accounts: [...list.answer.accounts, ...r.body.accounts], next_cursor: r.body.next_cursor };
      this.learn(r.body.accounts);
    } else list.error = `more rows: ${errorText(r)}`;
    this.ctx.changed();
  }

  /** The field paths of the account objects seen (the chooser's and the distribution's fields). */
  private learn(accounts: JsonObject[]): void {
    const paths = accountPaths([...accounts]);
    const all = [...this.paths, ...paths.filter((p) => !this.paths.includes(p))];
    if (all.length !== this.paths.length) this.paths = all;
    const numeric = numericPaths(accounts, this.paths);
    this.numeric = [...this.numeric, ...numeric.filter((p) => !this.numeric.includes(p))];
  }

  /** The distribution of the chosen numeric field over the filtered set. */
  private loadDist(): void {
    const field = this.state.dist;
    if (!field) {
      this.dist = null;
      return;
    }
    const p = listParams(this.state.filters);
    p.set('field', field);
    p.set('buckets', String(this.state.buckets));
    const key = p.toString();
    if (this.dist?.key === key) return;
    this.dist = { key, loading: true, error: null, answer: null };
    void this.ctx.fetch<Distribution>(`/api/v1/accounts/distribution?${key}`).then((r) => {
      if (this.dist?.key !== key) return;
      this.dist = { key, loading: false, error: r.ok ? null : errorText(r), answer: r.ok ? r.body : null };
      this.ctx.changed();
    });
  }

  /**
   * The drilled figure against the listed accounts: the list's sum of the
   * figure's field over every match (`sums=`, one read, one `as_of`), then
   * the source channel; read again when the two `as_of` differ (the data
   * moved in between), a few times at most.
   */
  private loadCheck(): void {
    const src = this.state.drill;
    const d = src ? drillFor(src.scope, src.metric) : null;
    if (!src || !d?.sum) {
      this.check = null;
      return;
    }
    const key = `${this.params()}|${src.from}|${src.scope}|${src.metric}`;
    if (this.check?.key === key) return;
    const check: DrillCheck = { key, loading: true, error: null, figure: undefined, figureAsOf: null, sum: null, listed: 0, listAsOf: null };
    this.check = check;
    const field = d.sum.field;
    const moneyField = d.sum.money;
    void (async () => {
      for (let attempt = 0; attempt < 4; attempt++) {
        // One read: the server adds the field up over every match (`sums=`), exactly.
        const p = listParams(this.state.filters, null);
        p.set('limit', '1');
        if (field) p.set('sums', field);
        const r = await this.ctx.fetch<ListAnswer>(`/api/v1/accounts?${p}`);
        if (this.check !== check) return;
        if (!r.ok || !r.body) {
          check.error = `accounts list: ${errorText(r)}`;
          check.loading = false;
          this.ctx.changed();
          return;
        }
        const asOf = r.body.as_of;
        const listed = r.body.total;
        const total = field ? r.body.sums?.[field] : undefined;
        if (field && typeof total !== 'number') {
          check.error = `accounts list: no sum of ${field} in the answer`;
          check.loading = false;
          this.ctx.changed();
          return;
        }
        const sum = field ? (moneyField ? cents(total) : (total as number)) : listed;
        const ch = await this.ctx.fetch<JsonObject>(`/api/v1/channels/${encodeURIComponent(src.from)}`);
        if (this.check !== check) return;
        if (!ch.ok || !ch.body) {
          check.error = `channel ${src.from}: ${errorText(ch)}`;
          check.loading = false;
          this.ctx.changed();
          return;
        }
        Object.assign(check, {
          figure: figureIn(ch.body, src),
          figureAsOf: typeof ch.body.as_of === 'string' ? ch.body.as_of : null,
          sum,
          listed,
          listAsOf: asOf,
        });
        if (check.figureAsOf === check.listAsOf) break;
        await new Promise((r) => setTimeout(r, 300));
      }
      check.loading = false;
      this.ctx.changed();
    })();
  }

  update(): void {
    const root = this.root;
    if (!root) return;
    this.load();
    this.loadDist();
    this.loadCheck();
    const part = (name: string) => root.querySelector(`[data-part="${name}"]`) as HTMLElement;
    this.renderBanner(part('banner'));
    const list = this.list;
    const answer = list?.answer ?? null;
    part('count').innerHTML = answer
      ? `<span data-total="${answer.total}" data-as-of="${esc(answer.as_of ?? '')}">${esc(count(answer.accounts.length))} of ${esc(count(answer.total))} accounts</span> · as of ${esc(instant(answer.as_of))}`
      : '';
    const exportPath = (ext: string) => {
      const q = listParams(this.state.filters, this.state.sort).toString();
      return `/api/v1/accounts/export.${ext}${q ? `?${q}` : ''}`;
    };
    const exp = ['csv', 'xlsx']
      .map((ext) => `<button type="button" class="btn-small" data-export-path="${esc(exportPath(ext))}" data-export-name="accounts.${ext}">⤓ ${ext.toUpperCase()}</button>`)
      .join('');
    if (part('exports').dataset.key !== exp) {
      part('exports').innerHTML = `<span class="exports" role="group" aria-label="Export the filtered accounts">${exp}</span>`;
      part('exports').dataset.key = exp;
    }
    this.renderColumns(part('columns-list'));
    const table = part('table');
    if (!list || (list.loading && !answer)) table.innerHTML = `<p class="muted">Loading accounts…</p>`;
    else if (list.error && !answer) table.innerHTML = `<p class="error" role="alert" data-error>Accounts unavailable: ${esc(list.error)}</p>`;
    else if (answer) {
      const scroll = table.scrollLeft;
      table.innerHTML = this.table(answer);
      table.scrollLeft = scroll;
      table.dataset.key = list!.key;
    }
    part('more').innerHTML = answer
      ? `${list?.error ? `<p class="error" role="alert">${esc(list.error)}</p>` : ''}${
          answer.next_cursor
            ? `<button type="button" class="btn" data-load-more ${list?.more ? 'disabled' : ''}>${list?.more ? 'Loading…' : `Load more (${count(answer.total - answer.accounts.length)} left)`}</button>`
            : answer.total > 0
              ? `<span class="muted">All ${esc(count(answer.total))} listed.</span>`
              : ''
        }`
      : '';
    this.renderDist(part('dist'));
  }

  private renderColumns(el: HTMLElement): void {
    const key = `${this.paths.join(',')}|${this.state.columns.join(',')}`;
    if (el.dataset.key === key) return;
    el.dataset.key = key;
    el.innerHTML = this.paths
      .map((p) => `<label class="check"><input type="checkbox" data-col-choice value="${esc(p)}" ${this.state.columns.includes(p) ? 'checked' : ''}> ${esc(p)}</label>`)
      .join('');
  }

  private table(answer: ListAnswer): string {
    const cols = this.state.columns;
    const sort = this.state.sort;
    const head = cols
      .map((c) => {
        const sortable = !UNSORTABLE.has(c);
        const dir = sort === c ? 'ascending' : sort === `-${c}` ? 'descending' : 'none';
        const numeric = answer.accounts.some((a) => typeof fieldOf(a, c) === 'number');
        return `<th scope="col" class="${numeric ? 'n' : ''}${sortable ? ' sortable' : ''}" data-col="${esc(c)}" ${sortable ? `data-sort-path="${esc(c)}" tabindex="0" aria-sort="${dir}"` : ''} title="${esc(c)}">${esc(
          columnLabel(c),
        )}${dir === 'ascending' ? ' ▲' : dir === 'descending' ? ' ▼' : ''}</th>`;
      })
      .join('');
    const rows = answer.accounts
      .map((a) => {
        const id = String(a.account_id ?? '');
        return `<tr data-row="${esc(id)}">${cols
          .map((c, i) => {
            const v = fieldOf(a, c);
            const raw = v === undefined ? null : v;
            const tag = i === 0 ? 'th scope="row"' : 'td';
            return `<${tag} class="${typeof v === 'number' ? 'n' : ''}" data-col="${esc(c)}" data-value="${esc(JSON.stringify(raw))}">${cellText(c, v)}</${tag.split(' ')[0]}>`;
          })
          .join('')}</tr>`;
      })
      .join('');
    return answer.accounts.length
      ? `<table class="data explorer"><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table>`
      : `<p class="empty" data-empty>No account matches these filters.</p>`;
  }

  private renderBanner(el: HTMLElement): void {
    const src = this.state.drill;
    const d = src ? drillFor(src.scope, src.metric) : null;
    el.hidden = !src;
    if (!src) {
      el.innerHTML = '';
      return;
    }
    const from = src.from.startsWith('csm:') ? `the book of ${src.from.slice(4)}` : `the ${src.from} page`;
    const title = `<h2>${esc(d?.label ?? src.metric)} of ${esc(scopeLabel(src.scope))} <span class="muted">(from ${esc(from)})</span></h2>`;
    if (!d) {
      el.innerHTML = `${title}<p class="error">This figure has no drill-down.</p>`;
      return;
    }
    if (!d.sum) {
      el.innerHTML = `${title}<p data-drill-note>${esc(d.note ?? '')}</p>`;
      return;
    }
    const c = this.check;
    if (!c || (c.loading && c.sum === null)) {
      el.innerHTML = `${title}<p class="muted">Adding up the listed accounts…</p>`;
      return;
    }
    if (c.error) {
      el.innerHTML = `${title}<p class="error" role="alert" data-error>Cannot compare: ${esc(c.error)}</p>`;
      return;
    }
    const isMoneySum = d.sum.money;
    const fmt = (n: number | null) => (n === null ? '—' : isMoneySum ? money(n / 100) : count(n));
    const figure = typeof c.figure === 'number' ? (isMoneySum ? cents(c.figure) : c.figure) : null;
    const sameInstant = c.figureAsOf === c.listAsOf;
    const what = d.sum.field ? `sum of ${columnLabel(d.sum.field)} over the ${count(c.listed)} listed accounts` : 'accounts listed';
    let verdict: string;
    if (!sameInstant) verdict = `<span class="warn">read at different instants (the data moved): refresh to compare</span>`;
    else if (figure === null) verdict = `<span class="muted">the page has no such figure now</span>`;
    else if (d.scopeAlerts) {
      const scopeOwn = figure - (c.sum ?? 0);
      verdict =
        scopeOwn === 0
          ? `<span class="ok">✓ equal</span>`
          : scopeOwn > 0
            ? `<span data-scope-alerts="${scopeOwn}">+ ${esc(count(scopeOwn))} scope alert${scopeOwn === 1 ? '' : 's'} (on ${esc(scopeLabel(src.scope))} itself, not on an account)</span>`
            : `<span class="error">✕ the accounts hold ${esc(count(-scopeOwn))} more than the figure</span>`;
    } else verdict = figure === c.sum ? `<span class="ok">✓ equal</span>` : `<span class="error">✕ differs by ${esc(fmt((c.sum ?? 0) - figure))}</span>`;
    el.innerHTML = `${title}
      <div class="drill-compare" data-drill-check data-scope="${esc(src.scope)}" data-metric="${esc(src.metric)}" data-figure="${esc(JSON.stringify(figure))}" data-figure-as-of="${esc(
        c.figureAsOf ?? '',
      )}" data-sum="${esc(JSON.stringify(c.sum))}" data-listed="${c.listed}" data-list-as-of="${esc(c.listAsOf ?? '')}" data-money="${isMoneySum}" data-loading="${c.loading}">
        <div><span class="muted">On the page</span> <strong>${esc(fmt(figure))}</strong> <span class="muted">as of ${esc(instant(c.figureAsOf))}</span></div>
        <div><span class="muted">${esc(what)}</span> <strong>${esc(fmt(c.sum))}</strong> <span class="muted">as of ${esc(
          instant(c.listAsOf),
        )}</span></div>
        <div>${verdict}</div>
      </div>`;
  }

  private renderDist(el: HTMLElement): void {
    const sel = this.root?.querySelector('[data-dist-field]') as HTMLSelectElement | null;
    if (sel) {
      const options = ['', ...this.numeric];
      if (this.state.dist && !options.includes(this.state.dist)) options.push(this.state.dist);
      const key = options.join(',') + '|' + (this.state.dist ?? '');
      if (sel.dataset.key !== key) {
        sel.innerHTML = options.map((p) => `<option value="${esc(p)}" ${p === (this.state.dist ?? '') ? 'selected' : ''}>${p ? esc(p) : '(choose a field)'}</option>`).join('');
        sel.dataset.key = key;
      }
    }
    const d = this.dist;
    if (!this.state.dist) {
      el.innerHTML = `<p class="muted">Choose a numeric field to see how the filtered accounts spread over it.</p>`;
      return;
    }
    if (!d || (d.loading && !d.answer)) {
      el.innerHTML = `<p class="muted">Loading…</p>`;
      return;
    }
    if (!d.answer) {
      el.innerHTML = `<p class="error" role="alert" data-error>Distribution unavailable: ${esc(d.error ?? 'error')}</p>`;
      return;
    }
    const a = d.answer;
    const max = Math.max(1, ...a.buckets.map((b) => b.count));
    const fmt = (v: number) => (isMoney(a.field) ? money(v) : Number.isInteger(v) ? count(v) : dec1(v));
    el.innerHTML = `<p class="muted" data-dist="${esc(a.field)}" data-total="${a.total}" data-nulls="${a.nulls}">${esc(count(a.total))} accounts, ${esc(count(a.nulls))} without a value; ${
      a.min === null ? 'no values' : `from ${esc(fmt(a.min))} to ${esc(fmt(a.max ?? a.min))}`
    } · as of ${esc(instant(a.as_of))}</p>
      <div class="histogram dist-bars" role="img" aria-label="Accounts per bucket of ${esc(a.field)}">${a.buckets
        .map(
          (b, i) => `<div class="hbar" data-bucket="${i}" data-from="${b.from}" data-to="${b.to}" data-count="${b.count}" title="${esc(fmt(b.from))} – ${esc(fmt(b.to))}: ${b.count}">
            <div class="hbar-n">${esc(count(b.count))}</div><div class="hbar-col"><div class="hbar-fill" style="height:${((b.count / max) * 100).toFixed(1)}%"></div></div>
            <div class="hbar-label">${i === 0 || i === a.buckets.length - 1 || a.buckets.length <= 10 ? esc(fmt(b.from)) : ''}</div></div>`,
        )
        .join('')}</div>`;
  }
}

function errorText(r: ApiResult<unknown>): string {
  return r.message ? `${r.error}: ${r.message}` : (r.error ?? `http_${r.status}`);
}
