//! The dashboard shell: identity, the push connection, the header with the
//! connection state and data freshness, view switching (role-dependent),
//! toasts, and wall mode (`?wall=1`: dark, large, cycling, hands-off; with
//! `&view=<name>` one saved wall view instead of the cycle). Routes are in
//! the hash: `#executive`, `#manager/<csm>` (a book), `#accounts?<filters>`
//! (the explorer, the target of every drill-down). Exports download with
//! the token in a header; saved views sit behind the header's "Views".

import './styles.css';
import { AlertBook } from './alerts';
import { mayDrill, parseToken, remember, tokenFromPage, viewsFor, type Identity, type ViewName } from './auth';
import { PushConnection, type ConnectionState, type ProbeResult } from './connection';
import { ago, instant } from './format.js';
import type { Alert } from './protocol';
import { download, makeFetcher, type SavedView } from './api';
import { explorerQuery, parseExplorer, type ExplorerState } from './explore';
import { choosePeriod, COMPARE_PERIODS, type ComparePeriod } from './history';
import { AccountsView } from './views/accounts';
import { AnalystView } from './views/analyst';
import { BookView } from './views/book';
import { esc } from './views/common';
import type { ViewContext } from './views/context';
import { ExecutiveView } from './views/executive';
import { ManagerView } from './views/manager';
import { SavedViews, type PageState } from './views/saved';

const VIEW_LABEL: Record<ViewName, string> = { executive: 'Executive', manager: 'Manager', analyst: 'Analyst', csm: 'My book', accounts: 'Accounts' };

/** A route of the hash: `#view`, `#manager/<csm>`, `#accounts?<explorer query>`. */
function parseHash(hash: string): { view: string; drill: string | null; query: string } {
  const h = hash.replace(/^#/, '');
  const q = h.indexOf('?');
  const path = q < 0 ? h : h.slice(0, q);
  const [view, drill] = path.split('/').map((x) => {
    try {
      return decodeURIComponent(x);
    } catch {
      return x;
    }
  });
  return { view: view ?? '', drill: drill || null, query: q < 0 ? '' : h.slice(q + 1) };
}

/** Measurements read by the browser tests (load and interaction times). */
interface Perf {
  firstData: number | null;
  renders: number;
  lastRenderMs: number;
}

declare global {
  interface Window {
    __cspulse: {
      perf: Perf;
      state: () => string;
      view: () => string;
      /** The explorer's state (the accounts page). */
      explorer: () => ExplorerState;
      period: () => ComparePeriod;
      /** What the executive trend charts draw, and the history query behind them. */
      trends: () => { url: string | null; charts: Record<string, { times: number[]; values: (number | null)[]; goals: number[] }> };
    };
  }
}

const params = new URLSearchParams(location.search);
const wall = params.get('wall') === '1';
/** A saved view to open (`?view=<name>`; on a wall: the one it shows). */
const namedView = params.get('view');
const cycleSeconds = Math.max(5, Number(params.get('cycle')) || 30);
const perf: Perf = { firstData: null, renders: 0, lastRenderMs: 0 };
const PERIOD_KEY = 'cspulse.period';

function storedPeriod(): string | null {
  try {
    return localStorage.getItem(PERIOD_KEY);
  } catch {
    return null;
  }
}

function authHeaders(identity: Identity): HeadersInit {
  return identity.token ? { Authorization: `Bearer ${identity.token}` } : {};
}

async function fetchAlerts(identity: Identity): Promise<{ status: number; alerts: Alert[] }> {
  const res = await fetch('/api/v1/alerts?state=firing', { headers: authHeaders(identity), cache: 'no-store' });
  if (!res.ok) return { status: res.status, alerts: [] };
  const body = (await res.json()) as { alerts?: Alert[] };
  return { status: res.status, alerts: body.alerts ?? [] };
}

class App {
  private readonly book = new AlertBook();
  private readonly conn: PushConnection;
  private readonly views: ViewName[];
  private view: ViewName;
  private drill: string | null = null;
  private connState: ConnectionState = 'stopped';
  private retryAt: number | undefined;
  private attempt = 0;
  private renderQueued = false;
  private period: ComparePeriod = choosePeriod(params.get('period'), storedPeriod());
  private readonly ctx: ViewContext = {
    // Read at call time: field initializers run before the constructor's parameter properties.
    fetch: (path) => makeFetcher(this.identity.token)(path),
    period: () => this.period,
    changed: () => this.scheduleRender(),
    drillable: false,
    exportable: !wall,
  };
  private readonly executive = new ExecutiveView(this.ctx);
  private readonly manager: ManagerView;
  private readonly analyst = new AnalystView(this.ctx);
  private readonly accounts: AccountsView;
  private saved: SavedViews | null = null;
  /** A wall showing one saved view does not cycle. */
  private pinnedWall = false;
  private readonly bookView = new BookView(() => this.scheduleRender(), this.ctx);
  private mounted: string | null = null;
  private build: string | null = null;

  constructor(
    private readonly identity: Identity,
    private readonly shell: HTMLElement,
  ) {
    this.views = viewsFor(identity.role);
    this.ctx.drillable = !wall && this.views.includes('accounts');
    this.accounts = new AccountsView(this.ctx, identity.role === 'csm' ? identity.csmId : null, (state) => {
      this.accounts.setState(state);
      this.go('accounts');
    });
    this.manager = new ManagerView(
      () => this.scheduleRender(),
      mayDrill(identity.role) && !wall ? (id) => this.go('manager', id) : null,
      this.ctx,
    );
    const route = parseHash(location.hash);
    this.view = this.views.includes(route.view as ViewName) ? (route.view as ViewName) : this.views[0];
    if (this.view === 'manager' && route.drill && mayDrill(identity.role)) this.drill = route.drill;
    if (this.view === 'accounts') this.accounts.setState(parseExplorer(route.query));

    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const tokenParam = identity.token ? `?token=${encodeURIComponent(identity.token)}` : '';
    this.conn = new PushConnection(
      {
        url: `${proto}//${location.host}/ws${tokenParam}`,
        createSocket: (url) => new WebSocket(url) as never,
        probe: () => this.probe(),
      },
      {
        state: (state, detail) => {
          this.connState = state;
          this.retryAt = detail.retryAt;
          this.attempt = detail.attempt;
          if (state === 'unauthorized') this.onUnauthorized();
          this.renderStatus();
        },
        applied: (channel, copy, applied) => {
          if (applied.kind === 'data' && channel === 'executive' && copy.data) this.executive.sample(copy.data);
          if (applied.kind === 'alert' && this.book.apply(applied.alert)) this.toast(applied.alert);
          if (applied.kind !== 'ignored' && applied.kind !== 'none') this.scheduleRender();
        },
        connected: () => void this.seedAlerts(),
        error: (code, message) => this.toastText(`Server: ${code}`, message),
      },
    );
    this.layout();
    this.subscribeFor();
    this.conn.start();
    window.addEventListener('online', () => this.conn.retryNow());
    window.addEventListener('hashchange', () => {
      const r = parseHash(location.hash);
      if (!this.views.includes(r.view as ViewName)) return;
      if (r.view === 'accounts') {
        const state = parseExplorer(r.query);
        if (this.view !== 'accounts' || this.accounts.query() !== explorerQuery(state)) this.accounts.setState(state);
        if (this.view !== 'accounts') this.go('accounts', null, false);
      } else if (r.view !== this.view || r.drill !== this.drill) this.go(r.view as ViewName, r.drill, false);
    });
    setInterval(() => this.renderStatus(), 1000);
    if (wall && this.views.length > 1) setInterval(() => !this.pinnedWall && this.cycle(), cycleSeconds * 1000);
    if (namedView) void this.openNamed(namedView);
    window.__cspulse = {
      perf,
      state: () => this.connState,
      view: () => this.view + (this.drill ? `/${this.drill}` : ''),
      explorer: () => this.accounts.state,
      period: () => this.period,
      trends: () => ({ url: this.executive.history?.url ?? null, charts: this.executive.chartData() }),
    };
  }

  /** Before each connect: is the server up, is the token good, which process is it. */
  private async probe(): Promise<ProbeResult> {
    let head: Response;
    try {
      head = await fetch('/', { method: 'HEAD', cache: 'no-store' });
    } catch {
      return { ok: false, reason: 'down' };
    }
    if (!head.ok) return { ok: false, reason: 'down' };
    const build = head.headers.get('x-cspulse-build');
    if (wall && build && this.build && build !== this.build) location.reload(); // a new version: load it
    this.build = build ?? this.build;
    try {
      const { status, alerts } = await fetchAlerts(this.identity);
      if (status === 401) return { ok: false, reason: 'unauthorized' };
      if (status !== 200) return { ok: false, reason: 'down' };
      this.book.seed(alerts);
    } catch {
      return { ok: false, reason: 'down' };
    }
    return { ok: true, boot: head.headers.get('x-cspulse-boot') ?? undefined };
  }

  private async seedAlerts(): Promise<void> {
    try {
      const { status, alerts } = await fetchAlerts(this.identity);
      if (status === 200) {
        this.book.seed(alerts);
        this.scheduleRender();
      }
    } catch {
      /* the next reconnect seeds again */
    }
  }

  private onUnauthorized(): void {
    if (wall) {
      // Unattended: keep trying now and then (the operator may fix the secret).
      setTimeout(() => {
        this.conn.stop();
        this.conn.start();
      }, 60_000);
      return;
    }
    remember(sessionStorageSafe(), null);
    showSignIn(this.shell, 'The server rejected this token (expired, or signed with another secret). Sign in again.');
  }

  private channelOf(view: ViewName): string {
    if (view === 'csm') return `csm:${this.identity.csmId}`;
    // The explorer reads REST; the header's freshness follows the role's main channel.
    if (view === 'accounts') return this.identity.role === 'csm' ? `csm:${this.identity.csmId}` : 'executive';
    if (view === 'manager' && this.drill) return `csm:${this.drill}`;
    return view;
  }

  /** The executive channel feeds the trend lines whenever the role may read it. */
  private subscribeFor(): void {
    if (this.views.includes('executive')) this.conn.subscribe('executive');
    this.conn.subscribe(this.channelOf(this.view));
    if (wall) for (const v of this.views) this.conn.subscribe(this.channelOf(v));
  }

  go(view: ViewName, drill: string | null = null, push = true): void {
    const before = this.channelOf(this.view);
    this.view = view;
    this.drill = view === 'manager' ? drill : null;
    const after = this.channelOf(this.view);
    if (before.startsWith('csm:') && before !== after && this.identity.role !== 'csm') this.conn.unsubscribe(before);
    if (before !== after) this.bookView.selected = null;
    this.subscribeFor();
    if (push && !wall) {
      const hash = view === 'accounts' ? `#accounts?${this.accounts.query()}` : `#${view}${this.drill ? `/${encodeURIComponent(this.drill)}` : ''}`;
      if (location.hash !== hash) history.replaceState(null, '', hash);
    }
    this.scheduleRender();
  }

  /** The comparison period: kept for the browser (localStorage) and in the URL (`?period=`). */
  setPeriod(period: ComparePeriod): void {
    this.period = period;
    try {
      localStorage.setItem(PERIOD_KEY, period);
    } catch {
      /* storage disabled: the URL keeps it */
    }
    const url = new URL(location.href);
    url.searchParams.set('period', period);
    history.replaceState(null, '', url);
    this.scheduleRender();
  }

  /** Downloads a table (CSV or XLSX) with the token in a header, as a file. */
  private async export(button: HTMLElement): Promise<void> {
    const path = button.dataset.exportPath!;
    button.setAttribute('aria-busy', 'true');
    try {
      const name = await download(this.identity.token, path, button.dataset.exportName ?? 'export');
      button.dataset.exported = name;
    } catch (e) {
      this.toastText('Export failed', String((e as Error).message ?? e), 'toast-critical');
    } finally {
      button.removeAttribute('aria-busy');
    }
  }

  private toggleViews(): void {
    const panel = this.shell.querySelector('[data-part="saved"]') as HTMLElement;
    const button = this.shell.querySelector('[data-views-toggle]') as HTMLElement;
    if (!this.saved) {
      this.saved = new SavedViews(this.ctx.fetch, this.identity.token, () => this.pageState(), (v) => {
        this.openView(v);
        panel.hidden = true;
        button.setAttribute('aria-expanded', 'false');
      });
      this.saved.mount(panel);
    }
    panel.hidden = !panel.hidden;
    button.setAttribute('aria-expanded', String(!panel.hidden));
    if (!panel.hidden) {
      this.saved.render();
      void this.saved.refresh();
    }
  }

  /** The page on screen as a saved view stores it. */
  pageState(): PageState {
    const period = this.period;
    if (this.view === 'accounts') {
      const s = this.accounts.state;
      return { page: 'accounts', filters: { ...(s.filters as Record<string, string | string[]>), period }, columns: s.columns, sort: s.sort };
    }
    if (this.view === 'csm') return { page: 'book', filters: { csm_id: this.identity.csmId ?? '', period }, columns: [], sort: null };
    if (this.view === 'manager' && this.drill) return { page: 'book', filters: { csm_id: this.drill, period }, columns: [], sort: null };
    if (this.view === 'manager') return { page: 'manager', filters: { period }, columns: [], sort: this.manager.sortPath() };
    return { page: this.view, filters: { period }, columns: [], sort: null };
  }

  /** Opens a saved view: its page, period, filters, columns and sort. */
  openView(v: SavedView): void {
    const { period, ...filters } = v.filters ?? {};
    if (typeof period === 'string' && COMPARE_PERIODS.includes(period as ComparePeriod) && period !== this.period) this.setPeriod(period as ComparePeriod);
    if (v.page === 'accounts') {
      const cols = Array.isArray(v.columns) && v.columns.length ? v.columns : undefined;
      const state = parseExplorer('');
      this.accounts.setState({ ...state, filters, columns: cols ?? state.columns, sort: v.sort ?? null });
      this.go('accounts');
    } else if (v.page === 'book') {
      if (this.identity.role === 'csm') this.go('csm');
      else if (typeof filters.csm_id === 'string' && mayDrill(this.identity.role)) this.go('manager', filters.csm_id);
    } else if (this.views.includes(v.page as ViewName)) {
      if (v.page === 'manager') this.manager.applySort(v.sort);
      this.go(v.page as ViewName);
    }
  }

  /** `?view=<name>`: read the saved view (a wall: one marked for walls) and show it. */
  private async openNamed(name: string): Promise<void> {
    const r = await this.ctx.fetch<SavedView>(`/api/v1/views/${encodeURIComponent(name)}`);
    if (r.ok && r.body) {
      if (wall) this.pinnedWall = true;
      this.openView(r.body);
      document.body.dataset.savedView = name;
    } else {
      document.body.dataset.savedView = `error:${r.error}`;
      const msg = `Saved view “${name}” unavailable (${r.error}${r.message ? `: ${r.message}` : ''})`;
      if (wall) (this.shell.querySelector('[data-part="notice"]') as HTMLElement).textContent = msg;
      else this.toastText('Saved view', msg, 'toast-critical');
    }
  }

  private cycle(): void {
    const i = this.views.indexOf(this.view);
    this.go(this.views[(i + 1) % this.views.length]);
  }

  private layout(): void {
    document.body.classList.toggle('wall', wall);
    const who = this.identity.role === 'csm' ? `CSM ${this.identity.csmId}` : this.identity.role;
    this.shell.innerHTML = `
      <header class="top">
        <div class="brand"><span class="logo" aria-hidden="true">◔</span> cspulse</div>
        <nav class="tabs" aria-label="Views">${this.views
          .map((v) => `<button type="button" class="tab" data-view="${v}">${VIEW_LABEL[v]}</button>`)
          .join('')}</nav>
        ${wall ? '' : `<label class="period">Change vs <select data-period aria-label="Compare with">${COMPARE_PERIODS.map(
          (p) => `<option value="${p}"${p === this.period ? ' selected' : ''}>${p === 'day' ? '1 day' : `1 ${p}`} ago</option>`,
        ).join('')}</select></label>`}
        <div class="status" role="status" aria-live="polite"><span data-part="conn" class="conn"></span><span data-part="fresh" class="fresh"></span></div>
        ${wall || this.identity.role === 'wall' ? '' : '<button type="button" class="btn-small views-toggle" data-views-toggle aria-expanded="false" aria-controls="saved-views">☆ Views</button>'}
        <div class="who"><span class="role role-${this.identity.role}">${esc(who)}</span>${wall ? '' : ' <button type="button" class="link" data-signout>Sign out</button>'}</div>
      </header>
      <section class="panel views-panel" id="saved-views" data-part="saved" hidden aria-label="Saved views"></section>
      <div class="crumbs" data-part="crumbs"></div>
      <div class="notice" data-part="notice" role="alert"></div>
      <main id="view" tabindex="-1"></main>
      <div class="toasts" data-part="toasts" aria-live="assertive"></div>`;
    this.shell.addEventListener('click', (ev) => {
      const t = ev.target as HTMLElement;
      const tab = t.closest('[data-view]') as HTMLElement | null;
      if (tab) this.go(tab.dataset.view as ViewName);
      if (t.closest('[data-back]')) this.go('manager');
      const exp = t.closest('[data-export-path]') as HTMLElement | null;
      if (exp) void this.export(exp);
      if (t.closest('[data-views-toggle]')) this.toggleViews();
      if (t.closest('[data-signout]')) {
        remember(sessionStorageSafe(), null);
        location.href = location.pathname;
      }
      const toast = t.closest('.toast') as HTMLElement | null;
      if (toast) toast.remove();
    });
    this.shell.querySelector('[data-period]')?.addEventListener('change', (ev) => this.setPeriod((ev.target as HTMLSelectElement).value as ComparePeriod));
  }

  private scheduleRender(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  private currentCopy() {
    return this.conn.copies.get(this.channelOf(this.view)) ?? null;
  }

  render(): void {
    const started = performance.now();
    const main = this.shell.querySelector('#view') as HTMLElement;
    const key = this.view === 'manager' && this.drill ? `book:${this.drill}` : this.view;
    if (this.mounted !== key) {
      for (const v of [this.executive, this.manager, this.analyst, this.bookView, this.accounts]) v.unmount();
      main.innerHTML = '';
      main.dataset.showing = key;
      const host = document.createElement('div');
      host.className = `view view-${this.view}`;
      main.appendChild(host);
      if (key === 'executive') this.executive.mount(host);
      else if (key === 'manager') this.manager.mount(host);
      else if (key === 'analyst') this.analyst.mount(host);
      else if (key === 'accounts') this.accounts.mount(host);
      else this.bookView.mount(host);
      this.mounted = key;
      this.bookView.page = 0;
    }
    for (const b of this.shell.querySelectorAll<HTMLElement>('[data-view]')) {
      const on = b.dataset.view === this.view;
      b.classList.toggle('active', on);
      b.setAttribute('aria-current', on ? 'page' : 'false');
    }
    const crumbs = this.shell.querySelector('[data-part="crumbs"]') as HTMLElement;
    crumbs.innerHTML = this.drill && !wall ? `<button type="button" class="link" data-back>‹ Team</button> <span>Book of ${esc(this.drill)}</span>` : '';
    const copy = this.currentCopy();
    const data = copy?.data ?? null;
    const now = Date.now();
    if (key === 'executive') this.executive.update(data, this.book.list(now));
    else if (key === 'manager') this.manager.update(data);
    else if (key === 'analyst') this.analyst.update(data);
    else if (key === 'accounts') {
      const exec = this.conn.copies.get('executive')?.data;
      if (exec) this.accounts.setSegments(Object.keys((exec.segments ?? {}) as object).sort());
      this.accounts.update();
    } else {
      const csm = this.view === 'csm' ? this.identity.csmId : this.drill;
      // Only the accounts the book holds now: an account that left it takes
      // its alerts along (the old owner is not told of their updates).
      const held = (data?.accounts ?? {}) as Record<string, unknown>;
      const alerts = this.book.list(
        now,
        (a) => (a.csm_id === csm && (a.scope !== 'account' || a.scope_id in held)) || (a.scope === 'csm' && a.scope_id === csm),
      );
      this.bookView.update(data, alerts, now, this.view === 'csm' ? 'My book' : `Book of ${csm}`, `csm:${csm}`);
    }
    this.renderStatus();
    perf.renders += 1;
    perf.lastRenderMs = performance.now() - started;
    if (data && perf.firstData === null) {
      perf.firstData = performance.now();
      document.body.dataset.ready = '1';
    }
  }

  private renderStatus(): void {
    const conn = this.shell.querySelector('[data-part="conn"]') as HTMLElement | null;
    const fresh = this.shell.querySelector('[data-part="fresh"]') as HTMLElement | null;
    if (!conn || !fresh) return;
    const now = Date.now();
    const label: Record<ConnectionState, string> = {
      live: '● Live',
      connecting: '◌ Connecting…',
      waiting: `○ Reconnecting${this.retryAt ? ` in ${Math.max(0, Math.ceil((this.retryAt - now) / 1000))} s` : ''}${
        this.attempt > 1 ? ` (attempt ${this.attempt})` : ''
      }`,
      unauthorized: '✕ Token rejected',
      stopped: '○ Stopped',
    };
    conn.textContent = label[this.connState];
    conn.className = `conn conn-${this.connState}`;
    conn.dataset.state = this.connState;
    const copy = this.currentCopy();
    const asOf = copy?.asOf ?? null;
    fresh.innerHTML = copy?.data
      ? `data as of <span data-field="as_of" data-value="${esc(JSON.stringify(asOf))}">${esc(instant(asOf))}</span> · updated <span data-part="ago">${esc(
          ago(now - (copy.lastChange ?? now)),
        )}</span>`
      : 'no data yet';
    fresh.classList.toggle('stale', this.connState !== 'live');
    document.body.dataset.conn = this.connState;
  }

  private toast(alert: Alert): void {
    if (wall) return;
    const csm = this.view === 'csm' ? this.identity.csmId : this.view === 'manager' ? this.drill : null;
    if (!csm || alert.csm_id !== csm || alert.state === 'resolved') return;
    const sev = alert.severity === 'critical' ? '■ Critical' : '▲ Warning';
    this.toastText(sev, alert.message, `toast-${alert.severity}`, alert.alert_id);
  }

  private toastText(title: string, message: string, cls = '', id = ''): void {
    const box = this.shell.querySelector('[data-part="toasts"]') as HTMLElement;
    const el = document.createElement('div');
    el.className = `toast ${cls}`;
    el.setAttribute('role', 'alert');
    if (id) el.dataset.alert = id;
    el.innerHTML = `<strong>${esc(title)}</strong> ${esc(message)}`;
    box.appendChild(el);
    while (box.children.length > 4) box.firstElementChild?.remove();
    setTimeout(() => el.remove(), 10_000);
  }
}

function sessionStorageSafe(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

function showSignIn(shell: HTMLElement, message = ''): void {
  document.body.classList.remove('wall');
  shell.innerHTML = `<main class="signin"><form class="panel" data-signin>
      <h1><span class="logo" aria-hidden="true">◔</span> cspulse</h1>
      <p>Paste the token you were given (<code>cspulse token --role …</code>, or a URL printed by <code>cspulse demo</code>).</p>
      ${message ? `<p class="error" role="alert">${esc(message)}</p>` : ''}
      <label for="token">Token</label>
      <textarea id="token" name="token" rows="4" required autocomplete="off" spellcheck="false"></textarea>
      <button type="submit">Sign in</button>
    </form></main>`;
  const form = shell.querySelector('[data-signin]') as HTMLFormElement;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    let value = (form.elements.namedItem('token') as HTMLTextAreaElement).value.trim();
    const m = /[?&]token=([^&\s]+)/.exec(value);
    if (m) value = decodeURIComponent(m[1]);
    const identity = parseToken(value);
    if (!identity) {
      showSignIn(shell, 'That is not a cspulse token.');
      return;
    }
    remember(sessionStorageSafe(), value);
    const url = new URL(location.href);
    url.searchParams.delete('token');
    history.replaceState(null, '', url);
    new App(identity, shell);
  });
}

async function boot(): Promise<void> {
  const shell = document.getElementById('app') as HTMLElement;
  const token = tokenFromPage(location, sessionStorageSafe());
  if (token) {
    const identity = parseToken(token);
    if (identity && (identity.expiresAt === null || identity.expiresAt > Date.now() || wall)) {
      new App(identity, shell);
      return;
    }
    showSignIn(shell, identity ? 'This token has expired. Sign in again.' : 'That is not a cspulse token.');
    return;
  }
  // No token: an engine started with auth.insecure serves everyone as an executive.
  try {
    const res = await fetch('/api/v1/alerts?state=firing', { cache: 'no-store' });
    if (res.ok) {
      new App({ token: null, role: 'executive', csmId: null, sub: null, expiresAt: null }, shell);
      return;
    }
  } catch {
    /* fall through to sign-in */
  }
  showSignIn(shell);
}

void boot();
