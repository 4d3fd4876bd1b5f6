import { describe, expect, it } from 'vitest';
import {
  accountPaths,
  cents,
  DEFAULT_COLUMNS,
  dispositionName,
  drillFor,
  drillHref,
  explorerQuery,
  figureIn,
  listParams,
  numericPaths,
  parseExplorer,
  scopeFilters,
  sumField,
} from '../src/explore';

describe('explorer state in the URL', () => {
  it('round-trips filters, repeated tiers and alerts, columns, sort, distribution and the drill source', () => {
    const q =
      'segment=enterprise&region=emea&tier=red&tier=yellow&alert=critical&arr_min=1000.5&q=ac%26me&sort=-revenue.arr&cols=account_id,revenue.arr&dist=health.score&buckets=10&rows=3&from=executive&scope=segment%3Aenterprise&metric=health.at_risk_arr';
    const s = parseExplorer(q);
    expect(s.filters).toEqual({ segment: 'enterprise', region: 'emea', arr_min: '1000.5', q: 'ac&me', tier: ['red', 'yellow'], alert: ['critical'] });
    expect(s.columns).toEqual(['account_id', 'revenue.arr']);
    expect(s.sort).toBe('-revenue.arr');
    expect(s.dist).toBe('health.score');
    expect(s.buckets).toBe(10);
    expect(s.rows).toBe(3);
    expect(s.drill).toEqual({ from: 'executive', scope: 'segment:enterprise', metric: 'health.at_risk_arr' });
    expect(parseExplorer(explorerQuery(s))).toEqual(s);
  });

  it('keeps an empty csm_id (the unassigned) and drops other empty filters', () => {
    const s = parseExplorer('csm_id=&segment=&q=');
    expect(s.filters).toEqual({ csm_id: '' });
    expect(listParams(s.filters).toString()).toBe('csm_id=');
  });

  it('defaults: every column of the default set, priority order, 20 buckets, no drill', () => {
    const s = parseExplorer('');
    expect(s.columns).toEqual(DEFAULT_COLUMNS);
    expect(s.sort).toBeNull();
    expect(s.buckets).toBe(20);
    expect(s.drill).toBeNull();
    expect(explorerQuery(s)).toBe('');
    expect(parseExplorer('buckets=0').buckets).toBe(20);
    expect(parseExplorer('buckets=101').buckets).toBe(20);
  });

  it('writes list parameters in a fixed order (a cursor belongs to one query)', () => {
    expect(listParams({ tier: ['red'], segment: 'smb', csm_id: 'csm-1' }, '-revenue.arr').toString()).toBe('segment=smb&csm_id=csm-1&tier=red&sort=-revenue.arr');
  });
});

describe('drill-down of a figure', () => {
  it('a feature row: the accounts using the feature, counted (names may hold dots)', () => {
    expect(drillFor('portfolio', 'features.api.v2.accounts_30d')!.filters).toEqual({ feature: 'api.v2' });
    const data = { features: { 'api.v2': { accounts_30d: 4, users_30d: 9 } } };
    expect(figureIn(data, { from: 'analyst', scope: 'portfolio', metric: 'features.api.v2.accounts_30d' })).toBe(4);
    expect(parseExplorer('feature=api.v2').filters).toEqual({ feature: 'api.v2' });
  });

  it('a health histogram bucket: its score range, counted; the last bucket holds 100', () => {
    expect(drillFor('portfolio', 'health_histogram.3')!.filters).toEqual({ score_min: '30', score_below: '40' });
    expect(drillFor('portfolio', 'health_histogram.9')!.filters).toEqual({ score_min: '90' });
    expect(drillFor('portfolio', 'health_histogram.3')!.sum).toEqual({ field: null, money: false });
    const data = { health_histogram: [0, 1, 2, 7, 0, 0, 0, 0, 0, 0] };
    expect(figureIn(data, { from: 'analyst', scope: 'portfolio', metric: 'health_histogram.3' })).toBe(7);
    expect(parseExplorer('score_min=30&score_below=40').filters).toEqual({ score_min: '30', score_below: '40' });
  });

  it('at-risk ARR: the red accounts of the scope, ARR summed in cents', () => {
    const d = drillFor('segment:enterprise', 'health.at_risk_arr')!;
    expect(d.filters).toEqual({ segment: 'enterprise', tier: ['red'] });
    expect(d.sort).toBe('-revenue.arr');
    expect(d.sum).toEqual({ field: 'revenue.arr', money: true });
  });

  it('tier counts and account counts are the number of accounts listed', () => {
    expect(drillFor('portfolio', 'health.tiers.yellow.accounts')).toMatchObject({ filters: { tier: ['yellow'] }, sum: { field: null } });
    expect(drillFor('csm:csm-1', 'health.accounts')).toMatchObject({ filters: { csm_id: 'csm-1' }, sum: { field: null } });
    expect(drillFor('unassigned', 'health.accounts')!.filters).toEqual({ csm_id: '' });
  });

  it('tickets by priority sum the account field of that priority', () => {
    expect(drillFor('region:emea', 'tickets.open.p1')).toMatchObject({ filters: { region: 'emea' }, sort: '-tickets.open_p1', sum: { field: 'tickets.open_p1' } });
    expect(drillFor('portfolio', 'tickets.open.total')!.sum!.field).toBe('tickets.open');
  });

  it('alert counts filter on the alert and count the scope’s own alerts apart', () => {
    const d = drillFor('portfolio', 'alerts.critical')!;
    expect(d.filters).toEqual({ alert: ['critical'] });
    expect(d.scopeAlerts).toBe(true);
  });

  it('ratios list the scope with their component columns, no sum', () => {
    expect(drillFor('portfolio', 'revenue.nrr_qtd')).toMatchObject({ sum: null, filters: {} });
    expect(drillFor('segment:smb', 'tickets.csat_avg_90d')!.columns).toEqual(['tickets.csat_avg_90d', 'tickets.csat_count_90d']);
    expect(drillFor('portfolio', 'usage.adoption_rate')!.columns).toContain('usage.active_users_7d');
    expect(drillFor('portfolio', 'tickets.first_response_minutes.p90')!.note).toMatch(/per scope/);
    expect(drillFor('portfolio', 'no.such.figure')).toBeNull();
  });

  it('a drill link carries its filters and its source', () => {
    const href = drillHref({ from: 'manager', scope: 'csm:csm-2', metric: 'health.tiers.red.arr' })!;
    const s = parseExplorer(href.replace('#accounts?', ''));
    expect(s.filters).toEqual({ csm_id: 'csm-2', tier: ['red'] });
    expect(s.drill).toEqual({ from: 'manager', scope: 'csm:csm-2', metric: 'health.tiers.red.arr' });
  });

  it('finds the figure in the source channel’s data', () => {
    const manager = { as_of: 'x', csms: { 'csm-1': { health: { at_risk_arr: 12.34 } } }, unassigned: { health: { accounts: 3 } } };
    expect(figureIn(manager, { from: 'manager', scope: 'csm:csm-1', metric: 'health.at_risk_arr' })).toBe(12.34);
    expect(figureIn(manager, { from: 'manager', scope: 'unassigned', metric: 'health.accounts' })).toBe(3);
    expect(figureIn({ kpis: { revenue: { arr: 5 } } }, { from: 'csm:csm-1', scope: 'csm:csm-1', metric: 'revenue.arr' })).toBe(5);
    expect(figureIn({ regions: { 'a.b': { revenue: { arr: 7 } } } }, { from: 'analyst', scope: 'region:a.b', metric: 'revenue.arr' })).toBe(7);
    // a scope the channel does not hold
    expect(figureIn(manager, { from: 'manager', scope: 'segment:smb', metric: 'revenue.arr' })).toBeUndefined();
  });

  it('scope filters', () => {
    expect(scopeFilters('portfolio')).toEqual({});
    expect(scopeFilters('segment:mid:market')).toEqual({ segment: 'mid:market' });
  });
});

describe('account fields and sums', () => {
  const accounts = [
    { account_id: 'a', info: { name: 'A', seats: 3 }, revenue: { arr: 0.1 }, tickets: { csat_avg_90d: null } },
    { account_id: 'b', info: { name: 'B', seats: 1 }, revenue: { arr: 0.2 }, tickets: { csat_avg_90d: 4.5 } },
  ];

  it('lists every leaf path and the numeric ones', () => {
    const paths = accountPaths(accounts);
    expect(paths).toEqual(['account_id', 'info.name', 'info.seats', 'revenue.arr', 'tickets.csat_avg_90d']);
    expect(numericPaths(accounts, paths)).toEqual(['info.seats', 'revenue.arr', 'tickets.csat_avg_90d']);
  });

  it('sums money in integer cents (0.1 + 0.2 is 30 cents, not 0.30000000000000004)', () => {
    expect(sumField(accounts, 'revenue.arr', true)).toBe(30);
    expect(cents(75_500.5)).toBe(7_550_050);
    const many = Array.from({ length: 10_000 }, () => ({ revenue: { arr: 0.01 } }));
    expect(sumField(many, 'revenue.arr', true)).toBe(10_000);
    expect(sumField(accounts, 'info.seats', false)).toBe(4);
  });

  it('reads a download’s file name from Content-Disposition', () => {
    expect(dispositionName('attachment; filename="accounts.csv"', 'x')).toBe('accounts.csv');
    expect(dispositionName("attachment; filename*=UTF-8''csm%3Acsm-1-accounts.xlsx", 'x')).toBe('csm:csm-1-accounts.xlsx');
    expect(dispositionName('attachment; filename=plain.zip', 'x')).toBe('plain.zip');
    expect(dispositionName(null, 'fallback.csv')).toBe('fallback.csv');
  });
});
