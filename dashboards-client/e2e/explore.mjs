// SPEC §19 in the browser, part of e2e/dashboard.mjs (same engine, same
// pages): drill-downs, the accounts explorer, table scrolling, exports and
// saved views. Every check compares the page with the REST API of the real
// server; exports are read by Python (csv, zipfile, openpyxl), not by the
// client's code.
//
// The drill-down checks keep their own model of what each figure is made
// of (which filters select its accounts, which account field adds up to
// it), list those accounts from the REST API on every page of one cursor
// (so at one as_of), add the field up in integer cents, and compare with the
// channel's figure at that same as_of (the scripted stream is still while
// this runs), with the page's filters (its shareable URL) and with the total
// the page shows.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const PYTHON = process.env.CSPULSE_PYTHON || 'python3';
const DRILL_LIMIT_MS = 1000;

/** What each additive figure is, in account terms: [account field or null (a count), extra filters]. */
const MODEL = {
  'health.accounts': [null, {}],
  'revenue.arr': ['revenue.arr', {}],
  'revenue.paying_accounts': [null, { arr_min: '0.01' }],
  'health.at_risk_arr': ['revenue.arr', { tier: ['red'] }],
  'usage.active_users_7d': ['usage.active_users_7d', {}],
  'usage.active_users_30d': ['usage.active_users_30d', {}],
  'usage.usage_events_7d': ['usage.usage_events_7d', {}],
  'tickets.open.total': ['tickets.open', {}],
  'tickets.escalated_open': ['tickets.escalated_open', {}],
  'tickets.sla_breached': ['tickets.sla_breached', {}],
  'tickets.csat_count_90d': ['tickets.csat_count_90d', {}],
  'alerts.critical': ['alerts.critical', { alert: ['critical'] }],
  'alerts.warning': ['alerts.warning', { alert: ['warning'] }],
};
for (const p of ['p1', 'p2', 'p3', 'p4']) MODEL[`tickets.open.${p}`] = [`tickets.open_${p}`, {}];
for (const t of ['green', 'yellow', 'red']) {
  MODEL[`health.tiers.${t}.accounts`] = [null, { tier: [t] }];
  MODEL[`health.tiers.${t}.arr`] = ['revenue.arr', { tier: [t] }];
}
// The analyst's health histogram: bucket i is the accounts scoring in [10·i, 10·i + 10) ([90, 100] the last).
for (let i = 0; i < 10; i++) MODEL[`health_histogram.${i}`] = [null, { score_min: String(i * 10), ...(i < 9 ? { score_below: String(i * 10 + 10) } : {}) }];
const MONEY = new Set(['revenue.arr']);
/** The model of a figure: MODEL's, or a feature row's accounts (counted, `feature=<name>`). */
function modelOf(metric) {
  if (MODEL[metric]) return MODEL[metric];
  const feature = /^features\.(.+)\.accounts_30d$/.exec(metric);
  return feature ? [null, { feature: feature[1] }] : null;
}

function scopeFilter(scope) {
  if (scope === 'unassigned') return { csm_id: '' };
  const i = scope.indexOf(':');
  if (i < 0) return {};
  const [kind, v] = [scope.slice(0, i), scope.slice(i + 1)];
  return { segment: { segment: v }, region: { region: v }, csm: { csm_id: v } }[kind] ?? {};
}

function scopeData(data, from, scope) {
  if (from.startsWith('csm:')) return data.kpis;
  if (scope === 'portfolio') return data.portfolio;
  if (scope === 'unassigned') return data.unassigned;
  const i = scope.indexOf(':');
  const [kind, v] = [scope.slice(0, i), scope.slice(i + 1)];
  return { segment: data.segments, region: data.regions, csm: data.csms }[kind]?.[v];
}

function lookup(obj, path) {
  let cur = obj;
  for (const k of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return null;
    cur = cur[k];
  }
  return cur === undefined ? null : cur;
}

const cents = (v) => Math.round(Number(v) * 100);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function query(filters, sort) {
  const p = new URLSearchParams();
  for (const k of ['segment', 'region', 'csm_id', 'arr_min', 'arr_max', 'renewal_within', 'q', 'feature', 'score_min', 'score_below']) if (filters[k] !== undefined) p.append(k, filters[k]);
  for (const k of ['tier', 'alert']) for (const v of filters[k] ?? []) p.append(k, v);
  if (sort) p.set('sort', sort);
  return p;
}

/** Sorted keys, arrays sorted: filters compare as sets. */
function norm(filters) {
  return Object.fromEntries(Object.keys(filters).sort().map((k) => [k, Array.isArray(filters[k]) ? [...filters[k]].sort() : filters[k]]));
}

export function exploreChecks({ check, rest, waitFor, BASE, TOKENS, results }) {
  /** Every account of a list query, over one cursor (one as_of). */
  async function restAll(filters, sort, token) {
    const p = query(filters, sort);
    p.set('limit', '1000');
    const first = await rest(`/api/v1/accounts?${p}`, token);
    const accounts = [...first.accounts];
    let cursor = first.next_cursor;
    while (cursor) {
      p.set('cursor', cursor);
      const next = await rest(`/api/v1/accounts?${p}`, token);
      accounts.push(...next.accounts);
      cursor = next.next_cursor;
    }
    return { as_of: first.as_of, total: first.total, accounts };
  }

  /** A download from a click: the saved file read back by Python. */
  async function downloadAndRead(page, selector, label) {
    const dir = mkdtempSync(join(tmpdir(), 'cspulse-export-'));
    try {
      const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 10_000 }), page.click(selector)]);
      const file = join(dir, dl.suggestedFilename());
      await dl.saveAs(file);
      const out = execFileSync(PYTHON, [join(here, 'read_export.py'), file], { encoding: 'utf8' });
      return { name: dl.suggestedFilename(), ...JSON.parse(out) };
    } catch (e) {
      check(false, `${label}: downloaded and read (${e.message.split('\n')[0]})`);
      return null;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  async function explorerRows(page) {
    return page.$$eval('main#view table.explorer tbody tr', (r) => r.map((x) => x.dataset.row));
  }

  async function goHash(page, hash) {
    await page.evaluate((h) => (location.hash = h), hash);
  }

  /**
   * Every drill-down link of the page on screen: each additive figure's
   * accounts add up to it at one as_of; a ratio lists its scope with its
   * component columns. `from` is the channel of the page.
   */
  async function drillDowns(page, token, label, { all = false } = {}) {
    const links = await page.$$eval('main#view a.drill', (as) => as.map((a) => ({ href: a.getAttribute('href'), drill: a.dataset.drill })));
    const sourceHash = await page.evaluate(() => location.hash);
    const seen = new Set();
    let additive = 0;
    let ratios = 0;
    let scopeAlerts = 0;
    let scopeFiring = 0;
    const problems = [];
    for (const { href, drill } of links) {
      const [scope, metric] = drill.split('|');
      const kind = scope.split(':')[0];
      const dedupe = `${kind}|${metric}`;
      const isAdditive = modelOf(metric) !== null;
      // Every figure of the portfolio and the unassigned, the others once per scope kind (and every scope for at-risk ARR and counts).
      if (!all && seen.has(dedupe) && !['health.at_risk_arr', 'health.accounts'].includes(metric)) continue;
      if (!isAdditive && seen.has(`ratio|${kind}`)) continue;
      seen.add(dedupe);
      if (!isAdditive) seen.add(`ratio|${kind}`);
      const params = new URLSearchParams(href.split('?')[1]);
      const from = params.get('from');
      await goHash(page, href);
      if (!isAdditive) {
        const note = await waitFor(`${label}: ${drill} lists its scope`, () => page.evaluate(() => document.querySelector('[data-drill-note]')?.textContent ?? null), 5000);
        const state = await page.evaluate(() => window.__cspulse.explorer());
        const want = await restAll(scopeFilter(scope), state.sort, token);
        const rows = await waitFor(`${label}: ${drill} rows`, async () => {
          const r = await explorerRows(page);
          return r.length === Math.min(100, want.total) ? r : null;
        }, 5000);
        if (!same(norm(state.filters), norm(scopeFilter(scope)))) problems.push(`${drill}: filters ${JSON.stringify(state.filters)}`);
        if (!rows || !same(rows, want.accounts.slice(0, 100).map((a) => a.account_id))) problems.push(`${drill}: rows ${rows} vs REST`);
        if (!note) problems.push(`${drill}: no note`);
        ratios += 1;
        continue;
      }
      const t0 = Date.now();
      const shown = await waitFor(`${label}: ${drill} adds up`, () =>
        page.evaluate(([s, m]) => {
          const c = document.querySelector('[data-drill-check]');
          return c && c.dataset.scope === s && c.dataset.metric === m && c.dataset.loading === 'false' ? { ...c.dataset } : null;
        }, [scope, metric]),
      5000);
      const ms = Date.now() - t0;
      results.interaction_ms.drill_total_max = Math.max(results.interaction_ms.drill_total_max ?? 0, ms);
      if (!shown) {
        problems.push(`${drill}: no total on the page`);
        continue;
      }
      const [field, extra] = modelOf(metric);
      const filters = { ...scopeFilter(scope), ...extra };
      const state = await page.evaluate(() => window.__cspulse.explorer());
      if (!same(norm(state.filters), norm(filters))) problems.push(`${drill}: page filters ${JSON.stringify(state.filters)}, want ${JSON.stringify(filters)}`);
      // The accounts and the channel, read until both are at one as_of.
      let listed;
      let channel;
      for (let i = 0; i < 5; i++) {
        listed = await restAll(filters, null, token);
        channel = await rest(`/api/v1/channels/${encodeURIComponent(from)}`, token);
        if (listed.as_of === channel.as_of) break;
      }
      if (listed.as_of !== channel.as_of) {
        problems.push(`${drill}: REST list and channel never at one as_of`);
        continue;
      }
      const money = field !== null && MONEY.has(field);
      const sum = field === null ? listed.total : listed.accounts.reduce((n, a) => n + (money ? cents(lookup(a, field) ?? 0) : (lookup(a, field) ?? 0)), 0);
      const feature = /^features\.(.+)\.accounts_30d$/.exec(metric);
      const raw = metric.startsWith('health_histogram.')
        ? channel.health_histogram[Number(metric.split('.')[1])]
        : feature
          ? channel.features[feature[1]]?.accounts_30d
          : lookup(scopeData(channel, from, scope), metric);
      const figure = money ? cents(raw) : raw;
      let scopeOwn = 0;
      if (metric.startsWith('alerts.')) {
        // Whatever the figure holds beyond its accounts' alerts is the scope's own (on no account): the page
        // shows it apart. SPEC §14 counts a scope's alerts as its accounts' (so none); if the server counts a
        // scope's own alerts too, the difference must be exactly those firing now.
        const sev = metric.split('.')[1];
        const alerts = (await rest('/api/v1/alerts?state=firing', token)).alerts;
        const [k, v] = scope.includes(':') ? [scope.split(':')[0], scope.slice(scope.indexOf(':') + 1)] : [scope, scope];
        const firing = alerts.filter((a) => a.severity === sev && a.state === 'firing' && a.scope !== 'account' && a.scope === k && (k === 'portfolio' || a.scope_id === v)).length;
        scopeOwn = figure - sum;
        const pageOwn = await page.evaluate(() => Number(document.querySelector('[data-scope-alerts]')?.dataset.scopeAlerts ?? 0));
        if (pageOwn !== scopeOwn) problems.push(`${drill}: page shows ${pageOwn} scope alerts, the figure less its accounts' is ${scopeOwn}`);
        if (scopeOwn !== 0 && scopeOwn !== firing) problems.push(`${drill}: ${scopeOwn} beyond the accounts, but ${firing} scope alerts firing`);
        scopeAlerts += scopeOwn;
        scopeFiring += firing;
      }
      if (shown.figureAsOf !== shown.listAsOf || shown.listAsOf !== listed.as_of) problems.push(`${drill}: page compared at ${shown.figureAsOf} / ${shown.listAsOf}, REST at ${listed.as_of}`);
      if (Number(shown.sum) !== sum || Number(shown.figure) !== figure || Number(shown.listed) !== listed.total) {
        problems.push(`${drill}: page shows sum ${shown.sum} of ${shown.listed} and figure ${shown.figure}, REST ${sum} of ${listed.total} and ${figure}`);
      }
      additive += 1;
    }
    await goHash(page, sourceHash || '#executive');
    check(problems.length === 0 && additive > 0, `${label}: ${additive} additive drill-downs add up to their figure at one as_of, ${ratios} ratio drill-downs list their scope, ${scopeAlerts} scope alerts counted in them and shown apart (${scopeFiring} scope-level alerts firing) ${problems.slice(0, 6).join('; ')}`);
    return { additive, ratios };
  }

  /** One click on a figure: the link opens the explorer with the figure's total. */
  async function clickDrill(page, drill, label) {
    const t0 = await page.evaluate(() => performance.now());
    await page.click(`main#view a.drill[data-drill="${drill}"]`);
    const [scope, metric] = drill.split('|');
    const ok = await waitFor(`${label}: the click opens the drill-down`, () =>
      page.evaluate(([s, m]) => {
        const c = document.querySelector('[data-drill-check]');
        return c && c.dataset.scope === s && c.dataset.metric === m && c.dataset.loading === 'false' ? performance.now() : null;
      }, [scope, metric]),
    5000);
    const ms = ok ? ok - t0 : Infinity;
    results.interaction_ms[`click ${metric}`] = Math.round(ms * 10) / 10;
    check(ms <= DRILL_LIMIT_MS, `${label}: clicking ${drill} shows its accounts and their total in ${ms.toFixed(0)} ms (<= ${DRILL_LIMIT_MS})`);
    const url = await page.evaluate(() => location.href);
    check(url.includes('#accounts?') && url.includes(`metric=${encodeURIComponent(metric)}`), `${label}: the drill-down is a URL (${url.split('#')[1]})`);
    return url;
  }

  /** The explorer (an executive's): paging, sorting, columns, filters, distribution, exports. */
  async function explorer(page, token) {
    await goHash(page, '#accounts?rows=3');
    const all = await restAll({}, null, token);
    const ids = all.accounts.map((a) => a.account_id);
    let rows = await waitFor('explorer: the first page', async () => {
      const r = await explorerRows(page);
      return r.length === 3 ? r : null;
    }, 5000);
    check(same(rows, ids.slice(0, 3)), `explorer: first page of 3 in the §3.4 order equals REST (${rows})`);
    for (let n = 6; n <= ids.length + 2; n += 3) {
      const more = await page.$('[data-load-more]');
      if (!more) break;
      await more.click();
      rows = await waitFor(`explorer: load more to ${Math.min(n, ids.length)}`, async () => {
        const r = await explorerRows(page);
        return r.length === Math.min(n, ids.length) ? r : null;
      }, 5000);
    }
    check(same(rows, ids) && !(await page.$('[data-load-more]')), `explorer: "load more" pages through next_cursor to all ${ids.length} accounts in order`);

    await page.click('main#view th[data-sort-path="revenue.arr"]');
    const byArr = (await restAll({}, '-revenue.arr', token)).accounts.map((a) => a.account_id);
    rows = await waitFor('explorer: sorted by ARR', async () => {
      const r = await explorerRows(page);
      return same(r, byArr.slice(0, 3)) ? r : null;
    }, 5000);
    const hash = await page.evaluate(() => location.hash);
    check(rows && hash.includes('sort=-revenue.arr'), `explorer: a click on ARR sorts descending by ARR, in the URL (${hash})`);
    await page.click('main#view th[data-sort-path="revenue.arr"]');
    const byArrAsc = (await restAll({}, 'revenue.arr', token)).accounts.map((a) => a.account_id);
    rows = await waitFor('explorer: sorted by ARR ascending', async () => {
      const r = await explorerRows(page);
      return same(r, byArrAsc.slice(0, 3)) ? r : null;
    }, 5000);
    check(rows !== null, 'explorer: a second click sorts ascending');

    // Any field as a column: the chooser lists the account object's paths.
    await page.click('main#view details.columns summary');
    const choices = await page.$$eval('[data-col-choice]', (c) => c.map((x) => x.value));
    const wantPaths = [];
    const walk = (v, prefix) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.entries(v).forEach(([k, x]) => walk(x, prefix ? `${prefix}.${k}` : k)) : wantPaths.push(prefix));
    walk(all.accounts[0], '');
    const missing = wantPaths.filter((p) => !choices.includes(p));
    check(missing.length === 0, `explorer: the column chooser offers every field of the account object (${choices.length}; missing ${missing.join(', ')})`);
    await page.check('[data-col-choice][value="usage.features_30d"]');
    await page.check('[data-col-choice][value="tickets.csat_avg_90d"]');
    await page.click('main#view details.columns summary');
    const cells = await waitFor('explorer: the new columns', () =>
      page.$$eval('main#view table.explorer tbody tr', (r) => {
        const out = r.map((x) => [x.dataset.row, JSON.parse(x.querySelector('[data-col="usage.features_30d"]')?.dataset.value ?? 'null'), JSON.parse(x.querySelector('[data-col="tickets.csat_avg_90d"]')?.dataset.value ?? '"absent"')]);
        return out.length && out.every((o) => o[2] !== 'absent') ? out : null;
      }), 5000);
    const byId = Object.fromEntries(all.accounts.map((a) => [a.account_id, a]));
    const badCells = (cells ?? []).filter(([id, f, c]) => f !== byId[id].usage.features_30d || c !== byId[id].tickets.csat_avg_90d);
    check(cells && badCells.length === 0, `explorer: added columns show the REST values (${cells?.length} rows) ${badCells.map((b) => b[0]).join(', ')}`);

    // Filters as controls, in the URL.
    await page.check('main#view input[name="tier"][value="red"]');
    await page.check('main#view input[name="tier"][value="yellow"]');
    const riskList = await restAll({ tier: ['red', 'yellow'] }, 'revenue.arr', token);
    rows = await waitFor('explorer: tier filter', async () => {
      const r = await explorerRows(page);
      return same(r, riskList.accounts.slice(0, 3).map((a) => a.account_id)) ? r : null;
    }, 5000);
    const filtered = await page.evaluate(() => [location.hash, document.querySelector('[data-total]')?.dataset.total]);
    check(rows && filtered[0].includes('tier=red') && filtered[0].includes('tier=yellow') && Number(filtered[1]) === riskList.total, `explorer: tier checkboxes filter (OR), in the URL, ${filtered[1]} of ${riskList.total}`);
    await page.fill('main#view input[name="arr_min"]', '50000');
    await page.press('main#view input[name="arr_min"]', 'Enter');
    const bigRisk = await restAll({ tier: ['red', 'yellow'], arr_min: '50000' }, 'revenue.arr', token);
    const total = await waitFor('explorer: ARR filter', () => page.evaluate((n) => (Number(document.querySelector('[data-total]')?.dataset.total) === n && location.hash.includes('arr_min=50000') ? n : null), bigRisk.total), 5000);
    check(total !== null, `explorer: ARR ≥ 50000 combines with the tiers (${bigRisk.total} accounts)`);

    // The distribution of a numeric field over the filtered set, against REST and against the listed values.
    await page.selectOption('main#view [data-dist-field]', 'revenue.arr');
    await page.fill('main#view [data-dist-buckets]', '4');
    await page.dispatchEvent('main#view [data-dist-buckets]', 'change');
    const bars = await waitFor('explorer: distribution', () =>
      page.evaluate(() => {
        const d = document.querySelector('[data-dist]');
        const b = [...document.querySelectorAll('[data-bucket]')].map((x) => ({ from: Number(x.dataset.from), to: Number(x.dataset.to), count: Number(x.dataset.count) }));
        return d && d.dataset.dist === 'revenue.arr' && b.length === 4 ? { total: Number(d.dataset.total), nulls: Number(d.dataset.nulls), buckets: b } : null;
      }), 5000);
    const q = query({ tier: ['red', 'yellow'], arr_min: '50000' });
    q.set('field', 'revenue.arr');
    q.set('buckets', '4');
    const dist = await rest(`/api/v1/accounts/distribution?${q}`, token).catch((e) => ({ error: e.message }));
    const values = bigRisk.accounts.map((a) => cents(a.revenue.arr));
    const [lo, hi] = [Math.min(...values), Math.max(...values)];
    const counted = [0, 0, 0, 0];
    for (const v of values) counted[hi === lo ? 0 : Math.min(3, Math.floor(((v - lo) * 4) / (hi - lo)))] += 1;
    check(
      bars && !dist.error && same(bars.buckets.map((b) => b.count), dist.buckets.map((b) => b.count)) && bars.total === dist.total && same(bars.buckets.map((b) => b.count), counted),
      `explorer: ARR in 4 buckets ${bars?.buckets.map((b) => b.count).join('/')} equals REST distribution ${dist.buckets?.map((b) => b.count).join('/') ?? dist.error} and the listed accounts ${counted.join('/')}`,
    );

    // Exports of the filtered list, read by Python.
    const csv = await downloadAndRead(page, 'main#view [data-part="exports"] [data-export-path*="export.csv"]', 'explorer CSV');
    const want = bigRisk.accounts;
    if (csv) {
      const t = Object.values(csv.tables)[0];
      const idCol = t.header.indexOf('account_id');
      const arrCol = t.header.indexOf('revenue.arr');
      const got = t.rows.map((r) => [r[idCol], cents(r[arrCol])]);
      check(same(got, want.map((a) => [a.account_id, cents(a.revenue.arr)])), `explorer CSV (${csv.name}): ${got.length} rows with ids and ARR equal to REST, same order`);
    }
    const xlsx = await downloadAndRead(page, 'main#view [data-part="exports"] [data-export-path*="export.xlsx"]', 'explorer XLSX');
    if (xlsx) {
      const t = xlsx.tables.accounts;
      const idCol = t?.header.indexOf('account_id');
      const arrCol = t?.header.indexOf('revenue.arr');
      const got = t ? t.rows.map((r) => [r[idCol], typeof r[arrCol] === 'number' ? cents(r[arrCol]) : `text ${r[arrCol]}`]) : [];
      check(t && same(got, want.map((a) => [a.account_id, cents(a.revenue.arr)])), `explorer XLSX (${xlsx.name}): sheet accounts, ${got.length} rows with typed ARR equal to REST`);
    }
    await page.click('main#view [data-reset]');
  }

  /** At 1280 px the analyst's segment and region tables scroll sideways, to their last column. */
  async function tablesScroll(page) {
    const before = page.viewportSize();
    await page.setViewportSize({ width: 1280, height: 800 });
    await goHash(page, '#analyst');
    await page.waitForSelector('main#view[data-showing="analyst"] [data-scroll="regions"] table');
    const got = await page.evaluate(async () => {
      const out = {};
      for (const kind of ['segments', 'regions']) {
        const wrap = document.querySelector(`[data-scroll="${kind}"]`);
        const last = wrap.querySelector('thead th:last-child');
        const overflowing = wrap.scrollWidth > wrap.clientWidth;
        wrap.scrollLeft = wrap.scrollWidth;
        await new Promise((r) => requestAnimationFrame(r));
        const w = wrap.getBoundingClientRect();
        const l = last.getBoundingClientRect();
        out[kind] = { scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth, overflowing, reachable: l.right <= w.right + 1 && l.left >= w.left - 1, text: last.textContent };
        wrap.scrollLeft = 0;
      }
      return out;
    });
    for (const [kind, g] of Object.entries(got)) {
      check(g.overflowing && g.reachable, `analyst ${kind} table at 1280 px scrolls (scrollWidth ${g.scrollWidth} > clientWidth ${g.clientWidth}) and its last column "${g.text}" is reachable`);
    }
    await page.setViewportSize(before);
  }

  /** The export buttons of the dashboard tables, read by Python and compared with the channels. */
  async function channelExports(page, token) {
    await goHash(page, '#analyst');
    await page.waitForSelector('main#view[data-showing="analyst"] [data-export-path]');
    const analyst = await rest('/api/v1/channels/analyst', token);
    const seg = await downloadAndRead(page, 'main#view section[aria-labelledby="h-segments"] [data-export-path*="export.csv"]', 'analyst segments CSV');
    if (seg) {
      const t = Object.values(seg.tables)[0];
      const col = (n) => t.header.indexOf(n);
      const bad = t.rows.filter((r) => {
        const k = analyst.segments[r[col('segment')]];
        return !k || cents(r[col('revenue.arr')]) !== cents(k.revenue.arr) || Number(r[col('health.accounts')]) !== k.health.accounts || cents(r[col('health.tiers.red.arr')]) !== cents(k.health.tiers.red.arr);
      });
      check(t.rows.length === Object.keys(analyst.segments).length && bad.length === 0, `analyst segments CSV (${seg.name}): ${t.rows.length} segments, ARR, accounts and red ARR equal the channel ${bad.map((r) => r[0]).join(', ')}`);
    }
    const regions = await downloadAndRead(page, 'main#view section[aria-labelledby="h-regions"] [data-export-path*="export.xlsx"]', 'analyst regions XLSX');
    if (regions) {
      const t = regions.tables.regions;
      const col = (n) => t?.header.indexOf(n);
      const bad = (t?.rows ?? []).filter((r) => {
        const k = analyst.regions[r[col('region')]];
        return !k || typeof r[col('revenue.arr')] !== 'number' || cents(r[col('revenue.arr')]) !== cents(k.revenue.arr) || r[col('health.accounts')] !== k.health.accounts;
      });
      check(t && t.rows.length === Object.keys(analyst.regions).length && bad.length === 0, `analyst regions XLSX (${regions.name}): sheet regions, typed ARR and accounts equal the channel`);
    }
    const features = await downloadAndRead(page, 'main#view section[aria-labelledby="h-features"] [data-export-path*="export.csv"]', 'analyst features CSV');
    if (features) {
      const t = Object.values(features.tables)[0];
      const bad = t.rows.filter((r) => {
        const f = analyst.features[r[t.header.indexOf('feature')]];
        return !f || Number(r[t.header.indexOf('accounts_30d')]) !== f.accounts_30d || Number(r[t.header.indexOf('users_30d')]) !== f.users_30d;
      });
      check(same(t.header, ['feature', 'accounts_30d', 'users_30d']) && t.rows.length === Object.keys(analyst.features).length && bad.length === 0, `analyst features CSV: ${t.rows.length} features equal the channel`);
    }
    await goHash(page, '#manager');
    await page.waitForSelector('main#view[data-showing="manager"] [data-export-path*="export.xlsx"]');
    const manager = await rest('/api/v1/channels/manager', token);
    const team = await downloadAndRead(page, 'main#view [data-export-path*="export.xlsx"]', 'manager XLSX');
    if (team) {
      const t = team.tables.csms;
      const col = (n) => t?.header.indexOf(n);
      const bad = (t?.rows ?? []).filter((r) => {
        const id = r[col('csm_id')];
        const k = id === null || id === '' ? manager.unassigned : manager.csms[id];
        return !k || cents(r[col('revenue.arr')]) !== cents(k.revenue.arr) || r[col('health.at_risk_arr')] === undefined || cents(r[col('health.at_risk_arr')]) !== cents(k.health.at_risk_arr);
      });
      check(t && t.rows.length === Object.keys(manager.csms).length + 1 && bad.length === 0, `manager XLSX (${team.name}): one row per CSM and the unassigned, ARR and at-risk ARR equal the channel`);
    }
  }

  /** Saves views on the page (before the restart): an explorer view and an executive wall view. */
  async function saveViews(page) {
    await goHash(page, '#accounts?tier=red&tier=yellow&sort=-revenue.arr&cols=account_id,info.name,revenue.arr,usage.features_30d');
    await page.waitForSelector('main#view table.explorer');
    await saveCurrent(page, 'E2E risk by ARR', { pinned: true });
    await page.click('[data-views-toggle]');
    await goHash(page, '#executive');
    await page.selectOption('[data-period]', 'day');
    await saveCurrent(page, 'E2E lobby', { wall: true });
    await saveCurrent(page, 'E2E scratch', {});
    await page.click('[data-views-toggle]');
    await goHash(page, '#manager');
    await page.waitForSelector('main#view[data-showing="manager"] table.team th[data-sort="arr"]');
    const arrSort = () => page.$eval('main#view th[data-sort="arr"]', (t) => t.getAttribute('aria-sort'));
    for (let i = 0; i < 2 && (await arrSort()) !== 'descending'; i++) {
      const before = await arrSort();
      await page.click('main#view th[data-sort="arr"]');
      await page.waitForFunction((b) => document.querySelector('main#view th[data-sort="arr"]')?.getAttribute('aria-sort') !== b, before);
    }
    await page.waitForSelector('main#view th[data-sort="arr"][aria-sort="descending"]');
    await saveCurrent(page, 'E2E team by ARR', {});
    await page.click('[data-views-toggle]');
    await page.click('main#view th[data-sort="at_risk"]');
    await page.selectOption('[data-period]', 'month');
  }

  async function saveCurrent(page, name, { pinned = false, wall = false }) {
    const panel = await page.$('[data-part="saved"]:not([hidden])');
    if (!panel) await page.click('[data-views-toggle]');
    await page.fill('[data-save-view] input[name="name"]', name);
    if (pinned) await page.check('[data-save-view] input[name="pinned"]');
    if (wall) await page.check('[data-save-view] input[name="wall"]');
    await page.click('[data-save-view] button[type="submit"]');
    const ok = await waitFor(`saved view "${name}" listed`, () => page.evaluate((n) => !!document.querySelector(`[data-saved-view="${CSS.escape(n)}"]`) || document.querySelector('[data-views-error]')?.textContent, name), 5000);
    check(ok === true, `saved view "${name}" saved and listed ${ok === true ? '' : ok}`);
  }

  /** After a reload and a restart: the views are there, load, pin, delete; a wall loads its view. */
  async function viewsSurvive(context, openPage, token, wallToken) {
    const page = await openPage();
    await page.click('[data-views-toggle]');
    const listed = await waitFor('saved views listed after the restart', () =>
      page.evaluate(() => {
        const v = [...document.querySelectorAll('[data-saved-view]')].map((x) => ({ name: x.dataset.savedView, page: x.dataset.page, pinned: x.dataset.pinned, wall: x.dataset.wall }));
        return v.length >= 4 ? v : null;
      }), 8000);
    const rest3 = await fetch(`${BASE}/api/v1/views`, { headers: { Authorization: `Bearer ${token}` } }).then((r) => r.json());
    check(
      listed && listed[0].name === 'E2E risk by ARR' && listed[0].pinned === 'true' && same(listed.map((v) => v.name), rest3.views.map((v) => v.name)),
      `saved views survive a reload and a server restart, pinned first (${listed?.map((v) => v.name).join(', ')})`,
    );
    await page.click('[data-view-action="load"][data-name="E2E risk by ARR"]');
    const state = await waitFor('the saved explorer view loads', () =>
      page.evaluate(() => (window.__cspulse.view() === 'accounts' ? window.__cspulse.explorer() : null)), 5000);
    check(
      state && same(norm(state.filters), norm({ tier: ['red', 'yellow'] })) && state.sort === '-revenue.arr' && same(state.columns, ['account_id', 'info.name', 'revenue.arr', 'usage.features_30d']),
      `a saved explorer view restores its filters, sort and columns (${JSON.stringify(state)})`,
    );
    const heads = await waitFor('its columns on screen', () => page.$$eval('main#view table.explorer thead th', (t) => (t.length ? t.map((x) => x.dataset.col) : null)), 5000);
    check(same(heads, ['account_id', 'info.name', 'revenue.arr', 'usage.features_30d']), `its columns are the table's (${heads})`);
    await page.click('[data-views-toggle]');
    await page.click('[data-view-action="load"][data-name="E2E lobby"]');
    const lobby = await waitFor('the saved executive view loads', () => page.evaluate(() => (window.__cspulse.view() === 'executive' ? window.__cspulse.period() : null)), 5000);
    check(lobby === 'day', `a saved executive view restores its period (${lobby})`);
    await page.selectOption('[data-period]', 'month');
    await page.click('[data-views-toggle]');
    await page.click('[data-view-action="load"][data-name="E2E team by ARR"]');
    const team = await waitFor('the saved manager view loads', () => page.evaluate(() => (window.__cspulse.view() === 'manager' && document.querySelector('main#view th[data-sort="arr"][aria-sort="descending"]') ? true : null)), 5000);
    const stored = await fetch(`${BASE}/api/v1/views/${encodeURIComponent('E2E team by ARR')}`, { headers: { Authorization: `Bearer ${token}` } }).then((r) => r.json());
    const sorts = await page.$$eval('main#view th[data-sort]', (t) => t.map((x) => `${x.dataset.sort}:${x.getAttribute('aria-sort')}`).join(' '));
    check(team === true, `a saved manager view restores its sort (stored ${stored.sort}; on screen ${sorts}; view ${await page.evaluate(() => window.__cspulse.view())})`);
    await page.click('[data-views-toggle]');
    await page.click('[data-view-action="delete"][data-name="E2E scratch"]');
    const gone = await waitFor('a deleted view leaves the list', () => page.evaluate(() => !document.querySelector('[data-saved-view="E2E scratch"]')), 5000);
    const status = await fetch(`${BASE}/api/v1/views/${encodeURIComponent('E2E scratch')}`, { headers: { Authorization: `Bearer ${token}` } }).then((r) => r.status);
    check(gone && status === 404, `a deleted view is gone from the list and the server (${status})`);
    await page.click('[data-view-action="pin"][data-name="E2E lobby"]');
    const pinned = await waitFor('pinning a view', () => page.evaluate(() => document.querySelector('[data-saved-view="E2E lobby"]')?.dataset.pinned === 'true'), 5000);
    check(pinned, 'a view can be pinned from the list');
    await page.close();

    // A wall display loads the wall view by name.
    const wall = await context.newPage();
    await wall.goto(`${BASE}/?token=${wallToken}&wall=1&cycle=5&view=${encodeURIComponent('E2E lobby')}`);
    await wall.waitForSelector('body[data-ready="1"]');
    const shows = await waitFor('the wall to open its saved view', () => wall.evaluate(() => (document.body.dataset.savedView === 'E2E lobby' ? [window.__cspulse.view(), window.__cspulse.period()] : null)), 8000);
    check(same(shows, ['executive', 'day']), `a wall display loads its saved view with ?wall=1&view= (${shows})`);
    const missing = await context.newPage();
    await missing.goto(`${BASE}/?token=${wallToken}&wall=1&view=${encodeURIComponent('E2E risk by ARR')}`);
    const refused = await waitFor('a wall asks for a view not marked wall', () => missing.evaluate(() => (document.body.dataset.savedView?.startsWith('error:') ? document.body.dataset.savedView : null)), 8000);
    const notice = await missing.evaluate(() => document.querySelector('[data-part="notice"]')?.textContent ?? '');
    check(refused && notice.includes('unavailable'), `a wall cannot load a view not marked for walls: it says so (${refused}: ${notice})`);
    await missing.close();
    return wall;
  }

  /** A csm's explorer: its own book only, whatever the URL asks. */
  async function csmExplorer(page, token, csm, otherCsm, ownIds) {
    await goHash(page, '#accounts');
    let rows = await waitFor('the csm explorer lists its book', async () => {
      const r = await explorerRows(page);
      return r.length ? r : null;
    }, 5000);
    const offered = await page.$('main#view input[name="csm_id"]');
    check(rows && rows.every((id) => ownIds.has(id)) && rows.length === ownIds.size && !offered, `csm explorer lists its own book only, all ${rows?.length} of it, and offers no CSM filter`);
    await goHash(page, `#accounts?csm_id=${otherCsm}&sort=-revenue.arr`);
    rows = await waitFor('a csm URL naming another book', async () => {
      const r = await explorerRows(page);
      const s = await page.evaluate(() => window.__cspulse.explorer());
      return r.length && s.sort === '-revenue.arr' ? [r, s] : null;
    }, 5000);
    check(rows && rows[0].every((id) => ownIds.has(id)) && rows[1].filters.csm_id === undefined, `a csm URL with csm_id=${otherCsm} drops it and stays in the own book (${rows?.[0].join(', ')})`);
    const csv = await downloadAndRead(page, 'main#view [data-part="exports"] [data-export-path*="export.csv"]', 'csm explorer CSV');
    if (csv) {
      const t = Object.values(csv.tables)[0];
      const got = t.rows.map((r) => r[t.header.indexOf('account_id')]);
      check(got.length === ownIds.size && got.every((id) => ownIds.has(id)), `csm explorer CSV holds its own book only (${got.join(', ')})`);
    }
    await goHash(page, '#csm');
    await page.waitForSelector('main#view[data-showing="csm"] tr[data-account]');
    const drills = await drillDowns(page, token, `csm book (${csm})`, { all: true });
    const book = await downloadAndRead(page, 'main#view [data-export-path*="export.xlsx"]', 'csm book XLSX');
    if (book) {
      const t = book.tables.accounts;
      const data = await rest(`/api/v1/channels/csm:${csm}`, token);
      const order = Object.keys(data.accounts).sort((a, b) => (data.accounts[a].health.rank ?? 1e9) - (data.accounts[b].health.rank ?? 1e9) || a.localeCompare(b));
      const got = t ? t.rows.map((r) => r[t.header.indexOf('account_id')]) : [];
      check(same(got, order), `csm book XLSX: sheet accounts in priority order (${got.join(', ')})`);
    }
    await page.waitForSelector('main#view[data-showing="csm"] tr[data-account]');
    return drills;
  }

  return { drillDowns, clickDrill, explorer, tablesScroll, channelExports, saveViews, viewsSurvive, csmExplorer };
}
