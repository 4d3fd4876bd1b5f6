//! Server → client messages of the `/ws` protocol (SPEC §6.3) and the
//! client's copy of one channel: snapshot, merge-patch updates in `seq`
//! order, alerts, and the `since` to resume from.

import { applyMergePatch, type Json, type JsonObject } from './mergePatch';

export interface Alert {
  alert_id: string;
  rule: string;
  severity: 'critical' | 'warning';
  state: 'firing' | 'resolved' | 'fired' | 'updated';
  scope: string;
  scope_id: string;
  account_id?: string;
  account_name?: string;
  csm_id?: string | null;
  segment?: string;
  ts: string;
  started_at: string;
  values?: JsonObject;
  message: string;
  /** 0 when it fired; 1, 2, … on its `updated` re-emissions. */
  version?: number;
}

export type ServerMessage =
  | { type: 'subscribed'; channel: string; seq: number; epoch: number }
  | { type: 'snapshot'; channel: string; seq: number; data: JsonObject }
  | { type: 'update'; channel: string; seq: number; topic: string; as_of?: string; patch: JsonObject }
  | { type: 'alert'; channel: string; seq: number; alert: Alert }
  | { type: 'pong' }
  | { type: 'error'; code: string; message: string };

/** What applying one message did to the copy. */
export type Applied =
  | { kind: 'data' } // snapshot or update applied: the data changed
  | { kind: 'alert'; alert: Alert }
  | { kind: 'ignored' } // stale (seq <= current) or before any snapshot
  | { kind: 'none' };

/**
 * The client's copy of one channel's `data`.
 *
 * `seq` is the number of the last message applied. Updates and alerts with
 * `seq <= seq` are replays already applied and are ignored. A jump of more
 * than one is not an error: a slow client's queued updates of one topic may
 * be coalesced into one by the server, and alerts of other channels never
 * reach this one.
 */
export class ChannelCopy {
  readonly channel: string;
  data: JsonObject | null = null;
  seq: number | null = null;
  /** The epoch `seq` counts in (SPEC §12): sent back on resume, so a server
   * whose channel was recreated, or another instance, answers with a snapshot. */
  epoch: number | null = null;
  /** Wall-clock ms when the copy last changed (for "updated 3 s ago"). */
  lastChange: number | null = null;

  constructor(channel: string) {
    this.channel = channel;
  }

  /** The subscribe request: with `since` when there is a copy to resume. */
  subscribeRequest(): { op: 'subscribe'; channel: string; since?: number; epoch?: number } {
    if (this.data === null || this.seq === null) return { op: 'subscribe', channel: this.channel };
    return this.epoch !== null
      ? { op: 'subscribe', channel: this.channel, since: this.seq, epoch: this.epoch }
      : { op: 'subscribe', channel: this.channel, since: this.seq };
  }

  /** Forgets the copy (the server it came from is gone): next subscribe takes a snapshot. */
  reset(): void {
    this.data = null;
    this.seq = null;
    this.epoch = null;
  }

  get asOf(): string | null {
    const v = this.data?.as_of;
    return typeof v === 'string' ? v : null;
  }

  apply(msg: ServerMessage, now: number = Date.now()): Applied {
    switch (msg.type) {
      case 'subscribed':
        // A resume the server cannot serve is answered by a snapshot, which
        // follows; nothing to do until then but note the epoch.
        if (typeof msg.epoch === 'number') this.epoch = msg.epoch;
        return { kind: 'none' };
      case 'snapshot':
        this.data = msg.data;
        this.seq = msg.seq;
        this.lastChange = now;
        return { kind: 'data' };
      case 'update': {
        if (this.data === null || this.seq === null || msg.seq <= this.seq) return { kind: 'ignored' };
        this.data = applyMergePatch(this.data, msg.patch as Json) as JsonObject;
        this.seq = msg.seq;
        this.lastChange = now;
        return { kind: 'data' };
      }
      case 'alert':
        if (this.seq !== null && msg.seq <= this.seq) return { kind: 'ignored' };
        if (this.seq !== null) this.seq = msg.seq;
        return { kind: 'alert', alert: msg.alert };
      default:
        return { kind: 'none' };
    }
  }
}
