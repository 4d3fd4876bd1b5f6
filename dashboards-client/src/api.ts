//! The REST reads the views make besides the push (history, compare,
//! targets, account history), with the token of the page. A failed read is
//! an `ApiResult` with `ok: false` (never thrown, never shown as data): the
//! view says the figure is unavailable.

export interface ApiResult<T> {
  ok: boolean;
  status: number;
  body: T | null;
  /** The server's error code (`history_off`, `forbidden`, …) or `network`. */
  error: string | null;
}

export type Fetcher = <T>(path: string) => Promise<ApiResult<T>>;

export function makeFetcher(token: string | null): Fetcher {
  return async <T>(path: string): Promise<ApiResult<T>> => {
    try {
      const res = await fetch(path, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        cache: 'no-store',
      });
      const body = (await res.json().catch(() => null)) as (T & { error?: string }) | null;
      if (!res.ok) return { ok: false, status: res.status, body: null, error: body?.error ?? `http_${res.status}` };
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
