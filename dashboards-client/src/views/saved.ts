//! Saved views (SPEC §19): the header's "Views" panel lists the caller's
//! views (`GET /api/v1/views`, pinned first), saves the current page under
//! a name (`PUT /api/v1/views/{name}`: page, filters with the period,
//! columns, sort, pinned, and `wall` for executive and manager pages),
//! loads, pins and deletes them (`DELETE`). The views live on the server
//! (the history store), so they outlive a reload and a restart; a failed
//! read or write is shown as the server's error, never as an empty list.

import { send, type ApiResult, type Fetcher, type SavedView } from '../api';
import { esc } from './common';

/** What "save" stores about the page on screen. */
export type PageState = Omit<SavedView, 'name' | 'pinned' | 'wall' | 'updated_at'>;

const PAGE_LABEL: Record<SavedView['page'], string> = { executive: 'Executive', manager: 'Manager', analyst: 'Analyst', book: 'Book', accounts: 'Accounts' };

export class SavedViews {
  private root: HTMLElement | null = null;
  views: SavedView[] | null = null;
  error: string | null = null;
  private note: string | null = null;
  private busy = false;

  constructor(
    private readonly fetch: Fetcher,
    private readonly token: string | null,
    /** The page on screen, as a view would store it. */
    private readonly current: () => PageState,
    /** Opens a view. */
    private readonly open: (view: SavedView) => void,
  ) {}

  mount(root: HTMLElement): void {
    this.root = root;
    root.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const form = ev.target as HTMLFormElement;
      const data = new FormData(form);
      const name = String(data.get('name') ?? '').trim();
      if (!name) return;
      void this.save(name, !!data.get('pinned'), !!data.get('wall'));
    });
    root.addEventListener('click', (ev) => {
      const t = ev.target as HTMLElement;
      const b = t.closest('[data-view-action]') as HTMLElement | null;
      if (!b) return;
      const view = this.views?.find((v) => v.name === b.dataset.name);
      if (!view) return;
      const action = b.dataset.viewAction;
      if (action === 'load') this.open(view);
      else if (action === 'pin') void this.put({ ...view, pinned: !view.pinned }, `${view.pinned ? 'Unpinned' : 'Pinned'} “${view.name}”.`);
      else if (action === 'delete') void this.remove(view.name);
    });
  }

  /** Reads the list (when the panel opens, and after every change). */
  async refresh(): Promise<void> {
    const r = await this.fetch<{ views: SavedView[] }>('/api/v1/views');
    if (r.ok && r.body) {
      this.views = r.body.views;
      this.error = null;
    } else this.error = message(r);
    this.render();
  }

  private async save(name: string, pinned: boolean, wall: boolean): Promise<void> {
    const page = this.current();
    await this.put({ ...page, name, pinned, wall: wall && (page.page === 'executive' || page.page === 'manager') }, `Saved “${name}”.`);
  }

  private async put(view: SavedView, done: string): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    const body = { page: view.page, filters: view.filters, columns: view.columns, sort: view.sort, pinned: view.pinned, wall: view.wall };
    const r = await send<SavedView>(this.token, 'PUT', `/api/v1/views/${encodeURIComponent(view.name)}`, body);
    this.busy = false;
    this.note = r.ok ? done : null;
    this.error = r.ok ? null : `Not saved: ${r.error}`;
    if (r.ok) (this.root?.querySelector('[data-save-view]') as HTMLFormElement | null)?.reset();
    if (r.ok) await this.refresh();
    else this.render();
  }

  private async remove(name: string): Promise<void> {
    const r = await send<null>(this.token, 'DELETE', `/api/v1/views/${encodeURIComponent(name)}`);
    this.note = r.ok ? `Deleted “${name}”.` : null;
    this.error = r.ok ? null : `Not deleted: ${r.error}`;
    if (r.ok) await this.refresh();
    else this.render();
  }

  render(): void {
    const root = this.root;
    if (!root) return;
    const page = this.current();
    const wallable = page.page === 'executive' || page.page === 'manager';
    const list =
      this.views === null
        ? this.error
          ? ''
          : '<p class="muted">Loading…</p>'
        : this.views.length === 0
          ? '<p class="muted">No saved views yet.</p>'
          : `<ul class="views-list">${this.views
              .map(
                (v) => `<li data-saved-view="${esc(v.name)}" data-page="${esc(v.page)}" data-pinned="${v.pinned}" data-wall="${v.wall}">
                  <button type="button" class="link" data-view-action="load" data-name="${esc(v.name)}">${v.pinned ? '📌 ' : ''}${esc(v.name)}</button>
                  <span class="muted">${esc(PAGE_LABEL[v.page] ?? v.page)}${v.wall ? ' · wall' : ''}</span>
                  <span class="views-actions"><button type="button" class="btn-small" data-view-action="pin" data-name="${esc(v.name)}" aria-pressed="${v.pinned}">${v.pinned ? 'Unpin' : 'Pin'}</button>
                  <button type="button" class="btn-small" data-view-action="delete" data-name="${esc(v.name)}" aria-label="Delete ${esc(v.name)}">Delete</button></span></li>`,
              )
              .join('')}</ul>`;
    // The form is written only when the page changes, so a list read
    // arriving while someone types does not wipe what they typed.
    const formKey = `${page.page}|${wallable}`;
    if (root.dataset.form !== formKey) {
      root.dataset.form = formKey;
      root.innerHTML = `<h2>Saved views</h2>
      <form class="views-save" data-save-view>
        <label>Save this page (${esc(PAGE_LABEL[page.page])}) as <input name="name" required maxlength="128" placeholder="name"></label>
        <label class="check"><input type="checkbox" name="pinned"> pin</label>
        ${wallable ? '<label class="check" title="Wall displays may load it: ?wall=1&view=<name>"><input type="checkbox" name="wall"> for wall displays</label>' : ''}
        <button type="submit" class="btn">Save</button>
      </form>
      <div data-views-body></div>`;
    }
    (root.querySelector('[data-views-body]') as HTMLElement).innerHTML = `${this.error ? `<p class="error" role="alert" data-views-error>${esc(this.error)}</p>` : ''}${
      this.note ? `<p class="ok" data-views-note>${esc(this.note)}</p>` : ''
    }${list}`;
  }
}

function message(r: ApiResult<unknown>): string {
  if (r.error === 'unavailable' || r.status === 503) return 'Saved views are unavailable: the server keeps no history store.';
  return `Saved views unavailable: ${r.message ? `${r.error}: ${r.message}` : r.error}`;
}
