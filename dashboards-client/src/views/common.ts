//! Small HTML builders shared by the views. Every value shown from the
//! channel data carries `data-field` (where it came from) and, for numbers,
//! `data-value` (the raw value), which the browser tests compare with the
//! REST API. Everything from the data is escaped.

import { NONE, TIER_ICON, TIER_LABEL } from '../format.js';
import { isObject, type Json, type JsonObject } from '../mergePatch';

export type Tier = 'green' | 'yellow' | 'red';

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function esc(s: unknown): string {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
}

/** `obj.a.b.c`, or undefined. */
export function at(obj: Json | undefined, path: string): Json | undefined {
  let cur: Json | undefined = obj;
  for (const k of path.split('.')) {
    if (!isObject(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

export function num(v: Json | undefined): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export function obj(v: Json | undefined): JsonObject {
  return isObject(v) ? v : {};
}

/** A value with its provenance for tests: `<span data-field=… data-value=…>text</span>`. */
export function val(field: string, raw: Json | undefined, text: string, cls = ''): string {
  const value = raw === undefined || raw === null ? '' : ` data-value="${esc(JSON.stringify(raw))}"`;
  return `<span class="v ${cls}" data-field="${esc(field)}"${value}>${esc(text)}</span>`;
}

export function tierOf(v: Json | undefined): Tier | null {
  return v === 'green' || v === 'yellow' || v === 'red' ? v : null;
}

/** A tier as icon + word + colour (never colour alone). */
export function tierBadge(tier: Tier | null, extra = ''): string {
  if (!tier) return `<span class="tier">${NONE}</span>`;
  return `<span class="tier tier-${tier}" data-tier="${tier}"><span class="tier-icon" aria-hidden="true">${TIER_ICON[tier]}</span> ${TIER_LABEL[tier]}${extra}</span>`;
}

/** A KPI tile. */
export function tile(label: string, body: string, sub = '', cls = ''): string {
  return `<div class="tile ${cls}"><div class="tile-label">${esc(label)}</div><div class="tile-value">${body}</div>${
    sub ? `<div class="tile-sub">${sub}</div>` : ''
  }</div>`;
}

export const TIERS: Tier[] = ['green', 'yellow', 'red'];

/** Keys of a map-like object, sorted. */
export function keys(v: Json | undefined): string[] {
  return Object.keys(obj(v)).sort();
}
