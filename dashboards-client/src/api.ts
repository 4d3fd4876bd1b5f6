//! The REST reads the views make besides the push (history, compare,
//! targets, account history), with the token of the page. A failed read is
//! an `ApiResult` with `ok: false` (never thrown, never shown as data): the
//! view says the figure is unavailable.

import { dispositionName } from './explore';

export interface ApiResult<T> {
  ok: boolean;
  status: number;
  body: T | null;
  /** The server's error code (`history_off`, `forbidden`, …) or `network`. */
  error: string | null;
  /** The server's message with the error, when it gave one. */
  message?: string | null;
}

export type Fetcher = <T>(path: string) => Promise<ApiResult<T>>;

export function makeFetcher(token: string | null): Fetcher {
  return async <T>(path: string): Promise<ApiResult<T>> => {
    try {
      const res = await fetch(path, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        cache: 'no-store',
      });
      const body = (await res.json().catch(() => null)) as (T & { error?: string; message?: string }) | null;
      if (!res.ok) return { ok: false, status: res.status, body: null, error: body?.error ?? `http_${res.status}`, message: body?.message ?? null };
      return { ok: true, status: res.status, body, error: null };
    } catch {
      return { ok: false, status: 0, body: null, error: 'network' };
    }
  };
}

/** A target of `GET /api/v1/targets`. */
export interface Target {
  name: string;
  metric: string;
  scope: string;
  period: string;
  op: '>=' | '<=';
  value: number;
  period_start?: string;
  period_end?: string;
  actual: number | null;
  projected: number | null;
  status: 'on_track' | 'off_track' | 'met' | 'missed' | null;
  previous?: { actual: number | null; status: string | null };
}

/** One compared figure of `GET /api/v1/compare`. */
export interface Compared {
  now: number | null;
  then: number | null;
  change: number | null;
  change_ratio: number | null;
}

/** A write (`PUT`, `DELETE`) with the page's token; same result shape as a read. */
export async function send<T>(token: string | null, method: 'PUT' | 'DELETE', path: string, body?: unknown): Promise<ApiResult<T>> {
  try {
    const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    const parsed = res.status === 204 ? null : ((await res.json().catch(() => null)) as (T & { error?: string; message?: string }) | null);
    if (!res.ok) {
      const message = parsed?.message ? `${parsed.error ?? `http_${res.status}`}: ${parsed.message}` : (parsed?.error ?? `http_${res.status}`);
      return { ok: false, status: res.status, body: null, error: message };
    }
    return { ok: true, status: res.status, body: parsed, error: null };
  } catch {
    return { ok: false, status: 0, body: null, error: 'network' };
  }
}

/**
 * Downloads `path` with the token in the Authorization header (not in a
 * URL that lands in a history or a log) and saves the answer as a file
 * named by its `Content-Disposition`. Resolves to the file name, or throws
 * an Error with the server's error code and message.
 */
export async function download(token: string | null, path: string, fallbackName: string): Promise<string> {
  let res: Response;
  try {
    res = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
  } catch {
    throw new Error('network: the server did not answer');
  }
  if (!res.ok) {
    const body = (await res.json().catch(() => null)) as { error?: string; message?: string } | null;
    throw new Error(`${body?.error ?? `http_${res.status}`}${body?.message ? `: ${body.message}` : ''}`);
  }
  const name = dispositionName(res.headers.get('content-disposition'), fallbackName);
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
  return name;
}

/** A saved view (SPEC §19, `GET|PUT|DELETE /api/v1/views[/{name}]`). */
export interface SavedView {
  name: string;
  page: 'executive' | 'manager' | 'analyst' | 'book' | 'accounts';
  filters: Record<string, string | string[]>;
  columns: string[];
  sort: string | null;
  pinned: boolean;
  wall: boolean;
  updated_at?: string;
}
