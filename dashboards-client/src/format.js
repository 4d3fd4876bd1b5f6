// How figures are written on screen. Plain JavaScript (type-checked through
// JSDoc) so the browser tests import the very same functions to compute the
// text they expect from the REST API's values.

const money0 = new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', maximumFractionDigits: 0 });
const count0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

/** Missing values (a merge patch removes nulls) are shown as an em dash. */
export const NONE = '—';

/**
 * @param {unknown} v
 * @returns {v is number}
 */
function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

/** Money in whole currency units: `$1,234,568`. @param {unknown} v */
export function money(v) {
  return isNum(v) ? money0.format(v) : NONE;
}

/** Money shortened for tiles: `$1.23M`, `$45.6K`, `$999`. @param {unknown} v */
export function moneyShort(v) {
  if (!isNum(v)) return NONE;
  const a = Math.abs(v);
  const sign = v < 0 ? '-' : '';
  if (a >= 1e9) return `${sign}$${(a / 1e9).toFixed(2)}B`;
  if (a >= 1e6) return `${sign}$${(a / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${sign}$${(a / 1e3).toFixed(1)}K`;
  return money0.format(v);
}

/** A ratio as a percentage with one decimal: `0.9731` → `97.3%`. @param {unknown} v */
export function pct(v) {
  return isNum(v) ? `${(v * 100).toFixed(1)}%` : NONE;
}

/** A count: `12,345`. @param {unknown} v */
export function count(v) {
  return isNum(v) ? count0.format(v) : NONE;
}

/** A number with one decimal (scores, CSAT, minutes). @param {unknown} v */
export function dec1(v) {
  return isNum(v) ? v.toFixed(1) : NONE;
}

/** Minutes as `42m` or `3.5h`. @param {unknown} v */
export function minutes(v) {
  if (!isNum(v)) return NONE;
  return Math.abs(v) < 120 ? `${v.toFixed(0)}m` : `${(v / 60).toFixed(1)}h`;
}

/** An RFC 3339 instant as `2026-03-02 10:00 UTC`. @param {unknown} v */
export function instant(v) {
  if (typeof v !== 'string') return NONE;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return NONE;
  return `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 16)} UTC`;
}

/** A date `YYYY-MM-DD` as is. @param {unknown} v */
export function date(v) {
  return typeof v === 'string' ? v : NONE;
}

/**
 * How long ago, coarse: `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
 * @param {number} ms
 */
export function ago(ms) {
  if (!Number.isFinite(ms)) return NONE;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** Tier label with its icon, so tiers never rely on colour alone. */
export const TIER_LABEL = /** @type {const} */ ({ green: 'Healthy', yellow: 'Watch', red: 'At risk' });
export const TIER_ICON = /** @type {const} */ ({ green: '●', yellow: '▲', red: '■' });
