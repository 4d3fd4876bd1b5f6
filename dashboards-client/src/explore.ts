//! The accounts explorer and the drill-down (SPEC §19), as pure functions:
//! the explorer's state in the page URL (`#accounts?tier=red&sort=…`, so a
//! drill-down is a link anyone with a token can open), the accounts-list
//! query it reads, what each dashboard figure drills into (the filters that
//! select its accounts, the account field whose sum is the figure, or the
//! component columns of a ratio), the field paths of an account object, and
//! sums of money in integer cents.

import { isObject, type Json } from './mergePatch';

/** The accounts-list filters (`GET /api/v1/accounts`), as the URL and the saved views hold them. */
export interface Filters {
  segment?: string;
  region?: string;
  /** `''` asks for the unassigned accounts (no csm). */
  csm_id?: string;
  tier?: string[];
  arr_min?: string;
  arr_max?: string;
  renewal_within?: string;
  alert?: string[];
  q?: string;
  /** Accounts with a usage event on the feature in 30 days (a feature row). */
  feature?: string;
  /** `score_min <= health.score < score_below` (a health histogram bucket). */
  score_min?: string;
  score_below?: string;
}

export const TIER_VALUES = ['red', 'yellow', 'green'];
export const ALERT_VALUES = ['critical', 'warning', 'any'];
const SINGLE_KEYS = ['segment', 'region', 'csm_id', 'arr_min', 'arr_max', 'renewal_within', 'q', 'feature', 'score_min', 'score_below'] as const;
const MANY_KEYS = ['tier', 'alert'] as const;

/** Where a drill-down came from: the figure `metric` of `scope` as the channel `from` shows it. */
export interface DrillSource {
  from: string;
  /** `portfolio`, `segment:<v>`, `region:<v>`, `csm:<id>`, `unassigned`. */
  scope: string;
  /** A KPI path (§3.2), e.g. `health.at_risk_arr`. */
  metric: string;
}

/** The explorer's whole state, as in its URL. */
export interface ExplorerState {
  filters: Filters;
  /** Account field paths shown as columns, in order. */
  columns: string[];
  /** A field path, `-` for descending; null: the §3.4 priority order. */
  sort: string | null;
  /** The numeric field whose distribution is drawn, and the bucket count. */
  dist: string | null;
  buckets: number;
  /** Rows per page (`rows=`, 1..1000). */
  rows: number;
  drill: DrillSource | null;
}

export const DEFAULT_COLUMNS = [
  'account_id',
  'info.name',
  'info.csm_id',
  'info.segment',
  'info.region',
  'health.tier',
  'health.score',
  'revenue.arr',
  'revenue.days_to_renewal',
  'alerts.critical',
  'alerts.warning',
];
export const DEFAULT_BUCKETS = 20;
export const DEFAULT_ROWS = 100;
export const MAX_COLUMNS = 64;

function clean(filters: Filters): Filters {
  const out: Filters = {};
  for (const k of SINGLE_KEYS) {
    const v = filters[k];
    // csm_id may be '' (the unassigned); the others are dropped when empty.
    if (typeof v === 'string' && (v !== '' || k === 'csm_id')) out[k] = v;
  }
  for (const k of MANY_KEYS) {
    const v = filters[k];
    if (Array.isArray(v) && v.length) out[k] = [...new Set(v)];
  }
  return out;
}

/** The explorer state of a URL query (the part of the hash after `accounts?`). */
export function parseExplorer(query: string): ExplorerState {
  const p = new URLSearchParams(query);
  const filters: Filters = {};
  for (const k of SINGLE_KEYS) if (p.has(k)) filters[k] = p.get(k) ?? '';
  for (const k of MANY_KEYS) if (p.getAll(k).length) filters[k] = p.getAll(k);
  const cols = p.get('cols');
  const buckets = Number(p.get('buckets'));
  const rows = Number(p.get('rows'));
  const from = p.get('from');
  const scope = p.get('scope');
  const metric = p.get('metric');
  return {
    filters: clean(filters),
    columns: cols ? cols.split(',').filter(Boolean).slice(0, MAX_COLUMNS) : [...DEFAULT_COLUMNS],
    sort: p.get('sort') || null,
    dist: p.get('dist') || null,
    buckets: Number.isInteger(buckets) && buckets >= 1 && buckets <= 100 ? buckets : DEFAULT_BUCKETS,
    rows: Number.isInteger(rows) && rows >= 1 && rows <= 1000 ? rows : DEFAULT_ROWS,
    drill: from && scope && metric ? { from, scope, metric } : null,
  };
}

/** The accounts-list parameters of some filters (and sort), in a fixed order. */
export function listParams(filters: Filters, sort: string | null = null): URLSearchParams {
  const p = new URLSearchParams();
  const f = clean(filters);
  for (const k of SINGLE_KEYS) if (f[k] !== undefined) p.append(k, f[k]!);
  for (const k of MANY_KEYS) for (const v of f[k] ?? []) p.append(k, v);
  if (sort) p.set('sort', sort);
  return p;
}

/** The URL query of an explorer state (what `#accounts?…` carries). */
export function explorerQuery(s: ExplorerState): string {
  const p = listParams(s.filters, s.sort);
  const defaultCols = s.columns.length === DEFAULT_COLUMNS.length && s.columns.every((c, i) => c === DEFAULT_COLUMNS[i]);
  if (!defaultCols) p.set('cols', s.columns.join(','));
  if (s.dist) p.set('dist', s.dist);
  if (s.buckets !== DEFAULT_BUCKETS) p.set('buckets', String(s.buckets));
  if (s.rows !== DEFAULT_ROWS) p.set('rows', String(s.rows));
  if (s.drill) {
    p.set('from', s.drill.from);
    p.set('scope', s.drill.scope);
    p.set('metric', s.drill.metric);
  }
  return p.toString();
}

/** What a figure drills into. */
export interface Drill {
  /** How the figure is named on the drill-down page. */
  label: string;
  filters: Filters;
  sort: string | null;
  /** Columns added to the defaults (the figure's own field or its components). */
  columns: string[];
  /**
   * Additive figures: the account field whose sum over the listed accounts
   * is the figure (`null` with `count`: the figure is the number of accounts).
   */
  sum: { field: string | null; money: boolean } | null;
  /** Alert counts: the scope's own alerts (not on any account) count in the figure too. */
  scopeAlerts: boolean;
  /** A ratio or percentile: what the columns show about it. */
  note: string | null;
}

/** The list filters of a scope. */
export function scopeFilters(scope: string): Filters {
  if (scope === 'unassigned') return { csm_id: '' };
  const [kind, ...rest] = scope.split(':');
  const v = rest.join(':');
  if (kind === 'segment') return { segment: v };
  if (kind === 'region') return { region: v };
  if (kind === 'csm') return { csm_id: v };
  return {};
}

export function scopeLabel(scope: string): string {
  if (scope === 'portfolio') return 'the portfolio';
  if (scope === 'unassigned') return 'the unassigned accounts';
  const [kind, ...rest] = scope.split(':');
  return `${kind === 'csm' ? 'CSM' : kind} ${rest.join(':')}`;
}

const ADDITIVE: Record<string, { label: string; field: string | null; money?: boolean; filters?: Filters; alerts?: boolean }> = {
  'health.accounts': { label: 'Accounts', field: null },
  'revenue.arr': { label: 'ARR', field: 'revenue.arr', money: true },
  'revenue.paying_accounts': { label: 'Paying accounts', field: null, filters: { arr_min: '0.01' } },
  'health.at_risk_arr': { label: 'At-risk ARR', field: 'revenue.arr', money: true, filters: { tier: ['red'] } },
  'usage.active_users_7d': { label: 'Active users (7 d)', field: 'usage.active_users_7d' },
  'usage.active_users_30d': { label: 'Active users (30 d)', field: 'usage.active_users_30d' },
  'usage.usage_events_7d': { label: 'Usage events (7 d)', field: 'usage.usage_events_7d' },
  'tickets.open.total': { label: 'Open tickets', field: 'tickets.open' },
  'tickets.escalated_open': { label: 'Open escalations', field: 'tickets.escalated_open' },
  'tickets.sla_breached': { label: 'SLA breaches', field: 'tickets.sla_breached' },
  'tickets.csat_count_90d': { label: 'CSAT ratings (90 d)', field: 'tickets.csat_count_90d' },
  'alerts.critical': { label: 'Critical alerts', field: 'alerts.critical', filters: { alert: ['critical'] }, alerts: true },
  'alerts.warning': { label: 'Warnings', field: 'alerts.warning', filters: { alert: ['warning'] }, alerts: true },
};
for (const p of ['p1', 'p2', 'p3', 'p4']) ADDITIVE[`tickets.open.${p}`] = { label: `Open ${p.toUpperCase()} tickets`, field: `tickets.open_${p}` };
for (const t of TIER_VALUES) {
  const word = t === 'red' ? 'At risk' : t === 'yellow' ? 'Watch' : 'Healthy';
  ADDITIVE[`health.tiers.${t}.accounts`] = { label: `${word} accounts`, field: null, filters: { tier: [t] } };
  ADDITIVE[`health.tiers.${t}.arr`] = { label: `${word} ARR`, field: 'revenue.arr', money: true, filters: { tier: [t] } };
}

const RATIO: Record<string, { label: string; columns: string[]; sort: string; note: string }> = {
  'revenue.nrr_qtd': { label: 'NRR QTD', columns: ['revenue.arr'], sort: '-revenue.arr', note: 'NRR compares the cohort’s ARR now with its ARR at the quarter’s start: the accounts with their ARR now.' },
  'revenue.grr_qtd': { label: 'GRR QTD', columns: ['revenue.arr'], sort: '-revenue.arr', note: 'GRR caps each account’s ARR at its ARR at the quarter’s start: the accounts with their ARR now.' },
  'revenue.nrr_t12m': { label: 'NRR 12 months', columns: ['revenue.arr'], sort: '-revenue.arr', note: 'The accounts with their ARR now (the cohort’s start is 365 days back).' },
  'revenue.grr_t12m': { label: 'GRR 12 months', columns: ['revenue.arr'], sort: '-revenue.arr', note: 'The accounts with their ARR now (the cohort’s start is 365 days back).' },
  'revenue.expansion_arr_qtd': { label: 'Expansion ARR QTD', columns: ['revenue.arr'], sort: '-revenue.arr', note: 'Expansion comes from this quarter’s revenue events, which the account object does not carry: the accounts with their ARR now.' },
  'revenue.contraction_arr_qtd': { label: 'Contraction ARR QTD', columns: ['revenue.arr'], sort: '-revenue.arr', note: 'Contraction comes from this quarter’s revenue events: the accounts with their ARR now.' },
  'revenue.churned_arr_qtd': { label: 'Churned ARR QTD', columns: ['revenue.arr'], sort: 'revenue.arr', note: 'Churn comes from this quarter’s revenue events: the accounts with their ARR now (churned ones at 0).' },
  'health.at_risk_share': { label: 'At-risk share', columns: ['health.tier', 'revenue.arr'], sort: '-revenue.arr', note: 'At-risk share = ARR of the red accounts / all ARR: the accounts with tier and ARR.' },
  'health.avg_score': { label: 'Average health', columns: ['health.score', 'health.components.adoption', 'health.components.engagement', 'health.components.support', 'health.components.sentiment'], sort: 'health.score', note: 'The mean of the accounts’ health scores: each account with its score and components.' },
  'usage.adoption_rate': { label: 'Adoption rate', columns: ['revenue.arr', 'usage.usage_events_7d', 'usage.active_users_7d', 'usage.active_users_30d', 'info.seats'], sort: 'usage.usage_events_7d', note: 'Adoption = paying accounts with core-feature use in 7 days / paying accounts: each account with ARR, usage and active users.' },
  'tickets.csat_avg_90d': { label: 'CSAT (90 d)', columns: ['tickets.csat_avg_90d', 'tickets.csat_count_90d'], sort: '-tickets.csat_count_90d', note: 'The scope’s CSAT pools every rating: each account with its mean and number of ratings.' },
};
for (const p of ['count', 'p50', 'p90', 'p99']) {
  RATIO[`tickets.first_response_minutes.${p}`] = {
    label: p === 'count' ? 'First responses (30 d)' : `First response ${p}`,
    columns: ['tickets.open', 'tickets.open_p1', 'tickets.open_p2', 'tickets.sla_breached', 'tickets.escalated_open'],
    sort: '-tickets.open',
    note: 'First-response times are kept per scope, not per account: the accounts with their open tickets and SLA breaches.',
  };
}

/** What the figure `metric` of `scope` drills into, or null when it cannot. */
export function drillFor(scope: string, metric: string): Drill | null {
  const base = scopeFilters(scope);
  // A feature row's accounts (the analyst's feature adoption).
  const feature = /^features\.(.+)\.accounts_30d$/.exec(metric);
  if (feature && scope === 'portfolio') {
    const label = `Accounts using ${feature[1]} (30 days)`;
    return { label, filters: { feature: feature[1] }, sort: null, columns: ['usage.features_30d'], sum: { field: null, money: false }, scopeAlerts: false, note: null };
  }
  // A bucket of the analyst's health histogram: [10·i, 10·i + 10), the last [90, 100].
  const bucket = /^health_histogram\.(\d)$/.exec(metric);
  if (bucket && scope === 'portfolio') {
    const i = Number(bucket[1]);
    const filters: Filters = { score_min: String(i * 10), ...(i < 9 ? { score_below: String(i * 10 + 10) } : {}) };
    const label = `Accounts with a health score in ${i < 9 ? `[${i * 10}, ${i * 10 + 10})` : '[90, 100]'}`;
    return { label, filters, sort: 'health.score', columns: [], sum: { field: null, money: false }, scopeAlerts: false, note: null };
  }
  const add = ADDITIVE[metric];
  if (add) {
    const sort = add.field ? `-${add.field}` : null;
    return {
      label: add.label,
      filters: { ...base, ...(add.filters ?? {}) },
      sort,
      columns: add.field && !DEFAULT_COLUMNS.includes(add.field) ? [add.field] : [],
      sum: { field: add.field, money: !!add.money },
      scopeAlerts: !!add.alerts,
      note: null,
    };
  }
  const ratio = RATIO[metric];
  if (ratio) {
    return { label: ratio.label, filters: base, sort: ratio.sort, columns: ratio.columns.filter((c) => !DEFAULT_COLUMNS.includes(c)), sum: null, scopeAlerts: false, note: ratio.note };
  }
  return null;
}

/** The explorer state a drill-down opens. */
export function drillState(source: DrillSource): ExplorerState | null {
  const d = drillFor(source.scope, source.metric);
  if (!d) return null;
  return { filters: d.filters, columns: [...DEFAULT_COLUMNS, ...d.columns], sort: d.sort, dist: null, buckets: DEFAULT_BUCKETS, rows: DEFAULT_ROWS, drill: source };
}

/** The link (`#accounts?…`) of a figure's drill-down, or null when it has none. */
export function drillHref(source: DrillSource): string | null {
  const s = drillState(source);
  return s ? `#accounts?${explorerQuery(s)}` : null;
}

/** Where a scope's KPI object sits in a channel's data. */
export function scopePath(from: string, scope: string): string[] | null {
  if (from.startsWith('csm:')) return scope === from ? ['kpis'] : null;
  if (scope === 'portfolio') return from === 'executive' || from === 'analyst' ? ['portfolio'] : null;
  if (scope === 'unassigned') return from === 'manager' ? ['unassigned'] : null;
  const [kind, ...rest] = scope.split(':');
  const v = rest.join(':');
  if (kind === 'segment' && (from === 'executive' || from === 'analyst')) return ['segments', v];
  if (kind === 'region' && from === 'analyst') return ['regions', v];
  if (kind === 'csm' && from === 'manager') return ['csms', v];
  return null;
}

/** The drilled figure as the channel data holds it (undefined when absent). */
export function figureIn(data: Json | undefined, source: DrillSource): Json | undefined {
  const feature = /^features\.(.+)\.accounts_30d$/.exec(source.metric);
  if (feature) {
    if (source.from !== 'analyst' || source.scope !== 'portfolio' || !isObject(data) || !isObject(data.features)) return undefined;
    const row = data.features[feature[1]];
    return isObject(row) ? row.accounts_30d : undefined;
  }
  const bucket = /^health_histogram\.(\d)$/.exec(source.metric);
  if (bucket) {
    if (source.from !== 'analyst' || source.scope !== 'portfolio' || !isObject(data)) return undefined;
    const hist = data.health_histogram;
    return Array.isArray(hist) ? hist[Number(bucket[1])] : undefined;
  }
  const path = scopePath(source.from, source.scope);
  if (!path) return undefined;
  let cur: Json | undefined = data;
  for (const k of [...path, ...source.metric.split('.')]) {
    if (!isObject(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

/** The value at a dotted path of an account object. */
export function fieldOf(account: Json | undefined, path: string): Json | undefined {
  let cur: Json | undefined = account;
  for (const k of path.split('.')) {
    if (!isObject(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

/** Every leaf path of account objects (`info.name`, `health.components.adoption`, …), in their order. */
export function accountPaths(accounts: Json[]): string[] {
  const seen = new Set<string>();
  const walk = (v: Json, prefix: string) => {
    if (isObject(v)) for (const [k, x] of Object.entries(v)) walk(x, prefix ? `${prefix}.${k}` : k);
    else if (prefix) seen.add(prefix);
  };
  for (const a of accounts) walk(a, '');
  return [...seen];
}

/** The paths that hold a number in at least one account (the distribution's fields). */
export function numericPaths(accounts: Json[], paths: string[]): string[] {
  return paths.filter((p) => p !== 'health.rank' && accounts.some((a) => typeof fieldOf(a, p) === 'number'));
}

/** Money as integer cents (the API writes money rounded to cents). */
export function cents(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? Math.round(v * 100) : 0;
}

/**
 * The sum of `field` over accounts: money in integer cents, counts as
 * integers (both exact: no float drift however many accounts there are).
 */
export function sumField(accounts: Json[], field: string, money: boolean): number {
  let total = 0;
  for (const a of accounts) {
    const v = fieldOf(a, field);
    if (typeof v === 'number') total += money ? cents(v) : v;
  }
  return total;
}

/** The file name of a download, from its `Content-Disposition`. */
export function dispositionName(header: string | null, fallback: string): string {
  if (!header) return fallback;
  const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      /* fall through */
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;]+)/.exec(header);
  const name = (plain?.[1] ?? plain?.[2] ?? '').trim();
  return name || fallback;
}
