//! The `/ws` connection: subscriptions kept as channel copies, reconnection
//! with exponential backoff and jitter, resume with `since`, and a liveness
//! check (a connection that hears nothing for a while is replaced).
//!
//! Time, timers, randomness, the socket and the pre-connect probe are
//! injected, so the logic is unit-tested without a browser or a server.

import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from './backoff';
import { ChannelCopy, type Applied, type ServerMessage } from './protocol';

/** The part of `WebSocket` used here. */
export interface SocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/**
 * Run before every (re)connect. `boot` identifies the server process: when
 * it differs from the last one seen, the server restarted and its `seq`
 * numbers started over, so copies are dropped and fresh snapshots asked for
 * (a `since` from the old process could otherwise replay the wrong history).
 */
export type ProbeResult = { ok: true; boot?: string } | { ok: false; reason: 'down' | 'unauthorized' };

export type ConnectionState = 'connecting' | 'live' | 'waiting' | 'unauthorized' | 'stopped';

export interface ConnectionEvents {
  state(state: ConnectionState, detail: { retryAt?: number; attempt: number }): void;
  applied(channel: string, copy: ChannelCopy, applied: Applied): void;
  error(code: string, message: string): void;
  /** A fresh connection is subscribed (first or after a reconnect). */
  connected(restarted: boolean): void;
}

export interface ConnectionOptions {
  url: string;
  createSocket: (url: string) => SocketLike;
  probe?: () => Promise<ProbeResult>;
  backoff?: BackoffOptions;
  /** Ping interval while open (ms). */
  pingEveryMs?: number;
  /** Silence after which the connection is considered dead (ms). */
  silenceMs?: number;
  random?: () => number;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (t: unknown) => void;
}

const OPEN = 1;

export class PushConnection {
  readonly copies = new Map<string, ChannelCopy>();
  state: ConnectionState = 'stopped';
  private socket: SocketLike | null = null;
  private readonly backoff: Backoff;
  private retryTimer: unknown = null;
  private pingTimer: unknown = null;
  private lastHeard = 0;
  private boot: string | undefined;
  private generation = 0;
  private readonly o: Required<Omit<ConnectionOptions, 'probe' | 'backoff'>> & Pick<ConnectionOptions, 'probe'>;

  constructor(
    options: ConnectionOptions,
    private readonly events: Partial<ConnectionEvents> = {},
  ) {
    this.o = {
      pingEveryMs: 15_000,
      silenceMs: 40_000,
      random: Math.random,
      now: () => Date.now(),
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (t) => clearTimeout(t as ReturnType<typeof setTimeout>),
      ...options,
    };
    this.backoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF, this.o.random);
  }

  start(): void {
    if (this.state !== 'stopped') return;
    void this.connect();
  }

  stop(): void {
    this.generation += 1;
    this.clearTimers();
    const s = this.socket;
    this.socket = null;
    if (s) s.close(1000, 'bye');
    this.setState('stopped');
  }

  /** Subscribes (now if open, else on the next connect). */
  subscribe(channel: string): ChannelCopy {
    let copy = this.copies.get(channel);
    if (!copy) {
      copy = new ChannelCopy(channel);
      this.copies.set(channel, copy);
      this.send(copy.subscribeRequest());
    }
    return copy;
  }

  unsubscribe(channel: string): void {
    if (this.copies.delete(channel)) this.send({ op: 'unsubscribe', channel });
  }

  /** Gives up waiting and reconnects now (e.g. the browser came back online). */
  retryNow(): void {
    if (this.state === 'waiting') {
      this.clearTimers();
      void this.connect();
    }
  }

  private send(msg: object): void {
    if (this.socket && this.socket.readyState === OPEN && this.state === 'live') this.socket.send(JSON.stringify(msg));
  }

  private setState(state: ConnectionState, retryAt?: number): void {
    this.state = state;
    this.events.state?.(state, { retryAt, attempt: this.backoff.attempts });
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) this.o.clearTimer(this.retryTimer);
    if (this.pingTimer !== null) this.o.clearTimer(this.pingTimer);
    this.retryTimer = this.pingTimer = null;
  }

  private async connect(): Promise<void> {
    const generation = ++this.generation;
    this.setState('connecting');
    let restarted = false;
    if (this.o.probe) {
      let result: ProbeResult;
      try {
        result = await this.o.probe();
      } catch {
        result = { ok: false, reason: 'down' };
      }
      if (generation !== this.generation) return;
      if (!result.ok) {
        if (result.reason === 'unauthorized') {
          this.setState('unauthorized');
          return;
        }
        this.scheduleRetry(generation);
        return;
      }
      if (result.boot !== undefined) {
        restarted = this.boot !== undefined && this.boot !== result.boot;
        if (restarted) for (const copy of this.copies.values()) copy.reset();
        this.boot = result.boot;
      }
    }
    let socket: SocketLike;
    try {
      socket = this.o.createSocket(this.o.url);
    } catch {
      this.scheduleRetry(generation);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (generation !== this.generation) return;
      this.lastHeard = this.o.now();
      this.setState('live');
      for (const copy of this.copies.values()) this.send(copy.subscribeRequest());
      this.schedulePing(generation);
      this.events.connected?.(restarted);
    };
    socket.onmessage = (ev) => {
      if (generation !== this.generation) return;
      this.lastHeard = this.o.now();
      this.onMessage(ev.data);
    };
    socket.onerror = () => {
      /* a close follows */
    };
    socket.onclose = () => {
      if (generation !== this.generation) return;
      this.socket = null;
      this.scheduleRetry(generation);
    };
  }

  private onMessage(raw: unknown): void {
    let msg: ServerMessage;
    try {
      msg = JSON.parse(String(raw)) as ServerMessage;
    } catch {
      return;
    }
    if (msg.type === 'error') {
      this.events.error?.(msg.code, msg.message);
      return;
    }
    if (msg.type === 'pong') return;
    if (msg.type === 'subscribed') this.backoff.reset(); // the server works: back to short delays
    const copy = this.copies.get(msg.channel);
    if (!copy) return; // unsubscribed meanwhile
    const applied = copy.apply(msg, this.o.now());
    this.events.applied?.(msg.channel, copy, applied);
  }

  private schedulePing(generation: number): void {
    this.pingTimer = this.o.setTimer(() => {
      if (generation !== this.generation || !this.socket) return;
      if (this.o.now() - this.lastHeard > this.o.silenceMs) {
        // Half-open connection (sleeping laptop, dead proxy): replace it.
        const s = this.socket;
        this.socket = null;
        this.generation += 1;
        s.close(4000, 'silent');
        this.scheduleRetry(this.generation);
        return;
      }
      this.send({ op: 'ping' });
      this.schedulePing(generation);
    }, this.o.pingEveryMs);
  }

  private scheduleRetry(generation: number): void {
    if (generation !== this.generation) return;
    this.clearTimers();
    const delay = this.backoff.next();
    const retryAt = this.o.now() + delay;
    this.setState('waiting', retryAt);
    this.retryTimer = this.o.setTimer(() => {
      this.retryTimer = null;
      if (generation === this.generation) void this.connect();
    }, delay);
  }
}
