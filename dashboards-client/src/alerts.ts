//! Firing alerts as the page knows them: seeded from
//! `GET /api/v1/alerts?state=firing` (on load and after every reconnect,
//! since the push only carries transitions) and kept current by `alert`
//! messages. Deliveries are at least once: a transition is identified by
//! (`alert_id`, `state`, `version`) and applied once; an older transition
//! never undoes a newer one. An `updated` alert (its account's name, owner
//! or segment changed while it fires) replaces the firing one it updates.

import type { Alert } from './protocol';

/** Event-rule alerts (`fired`) are shown for this long, then dropped. */
const FIRED_KEEP_MS = 15 * 60_000;

export class AlertBook {
  private readonly firing = new Map<string, Alert>();
  /** Ids resolved (and when), so a late seed does not bring them back. */
  private readonly resolved = new Map<string, number>();
  private readonly seen = new Set<string>();
  private readonly fired = new Map<string, { alert: Alert; at: number }>();

  /**
   * Applies one transition; returns true when it is new (worth a toast).
   */
  apply(alert: Alert, now: number = Date.now()): boolean {
    const key = `${alert.alert_id}|${alert.state}|${alert.version ?? 0}`;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (alert.state === 'firing' || alert.state === 'updated') {
      if (this.resolved.has(alert.alert_id)) return false;
      const known = this.firing.get(alert.alert_id);
      if (known && (known.version ?? 0) > (alert.version ?? 0)) return false;
      this.firing.set(alert.alert_id, alert);
    } else if (alert.state === 'resolved') {
      this.firing.delete(alert.alert_id);
      this.resolved.set(alert.alert_id, now);
    } else {
      this.fired.set(alert.alert_id, { alert, at: now });
    }
    return true;
  }

  /** Replaces the firing set with the server's list (transitions seen since still win). */
  seed(list: Alert[], now: number = Date.now()): void {
    this.firing.clear();
    for (const a of list) {
      if (a.state === 'firing' && !this.resolved.has(a.alert_id)) {
        this.firing.set(a.alert_id, a);
        this.seen.add(`${a.alert_id}|firing|${a.version ?? 0}`);
      }
    }
    this.prune(now);
  }

  /** Firing and recently fired alerts, critical first, newest first. */
  list(now: number = Date.now(), filter: (a: Alert) => boolean = () => true): Alert[] {
    this.prune(now);
    const all = [...this.firing.values(), ...[...this.fired.values()].map((f) => f.alert)].filter(filter);
    return all.sort(
      (a, b) =>
        Number(b.severity === 'critical') - Number(a.severity === 'critical') ||
        b.ts.localeCompare(a.ts) ||
        a.alert_id.localeCompare(b.alert_id),
    );
  }

  private prune(now: number): void {
    for (const [id, f] of this.fired) if (now - f.at > FIRED_KEEP_MS) this.fired.delete(id);
    for (const [id, at] of this.resolved) if (now - at > 24 * 3600_000) this.resolved.delete(id);
    if (this.seen.size > 10_000) this.seen.clear();
  }
}
