import { describe, expect, it } from 'vitest';
import { AlertBook } from '../src/alerts';
import { Backoff } from '../src/backoff';
import { PushConnection, type ProbeResult, type SocketLike } from '../src/connection';
import type { Alert } from '../src/protocol';

/** A manual clock with timers. */
class Clock {
  t = 0;
  private timers: { at: number; fn: () => void; id: number }[] = [];
  private next = 1;
  set = (fn: () => void, ms: number) => {
    const id = this.next++;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  };
  clear = (id: unknown) => {
    this.timers = this.timers.filter((x) => x.id !== id);
  };
  now = () => this.t;
  /** Advances time, firing due timers in order. */
  async advance(ms: number) {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const due = this.timers[0];
      if (!due || due.at > end) break;
      this.timers.shift();
      this.t = due.at;
      due.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
  pending() {
    return this.timers.map((x) => x.at - this.t);
  }
}

const flush = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

class FakeSocket implements SocketLike {
  readyState = 0;
  sent: any[] = [];
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  closed: number | null = null;
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000) {
    this.closed = code;
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(msg: object) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  /** The server went away. */
  drop() {
    this.readyState = 3;
    this.onclose?.({ code: 1006, reason: '' });
  }
}

function setup(probe?: () => Promise<ProbeResult>, random = () => 0.5) {
  const clock = new Clock();
  const sockets: FakeSocket[] = [];
  const states: string[] = [];
  const connected: boolean[] = [];
  const conn = new PushConnection(
    {
      url: 'ws://x/ws?token=t',
      createSocket: () => {
        const s = new FakeSocket();
        sockets.push(s);
        return s;
      },
      probe,
      random,
      now: clock.now,
      setTimer: clock.set,
      clearTimer: clock.clear,
      backoff: { baseMs: 500, maxMs: 8000 },
      pingEveryMs: 10_000,
      silenceMs: 25_000,
    },
    { state: (s) => states.push(s), connected: (r) => connected.push(r) },
  );
  return { clock, sockets, states, connected, conn };
}

describe('Backoff', () => {
  it('grows exponentially up to the cap, with jitter in [cap/2, cap]', () => {
    const lo = new Backoff({ baseMs: 500, maxMs: 8000 }, () => 0);
    const hi = new Backoff({ baseMs: 500, maxMs: 8000 }, () => 0.999999);
    const los = Array.from({ length: 7 }, () => lo.next());
    const his = Array.from({ length: 7 }, () => hi.next());
    expect(los).toEqual([250, 500, 1000, 2000, 4000, 4000, 4000]);
    expect(his).toEqual([500, 1000, 2000, 4000, 8000, 8000, 8000]);
    lo.reset();
    expect(lo.next()).toBe(250);
  });

  it('spreads clients that lost the same server', () => {
    let s = 1;
    const rnd = () => ((s = (s * 16807) % 2147483647), s / 2147483647);
    const delays = new Set(Array.from({ length: 50 }, () => new Backoff({ baseMs: 1000, maxMs: 30000 }, rnd).next()));
    expect(delays.size).toBeGreaterThan(40);
  });
});

describe('PushConnection', () => {
  it('subscribes on open, then resumes every channel with since after a drop', async () => {
    const { clock, sockets, conn, states } = setup();
    conn.subscribe('executive');
    conn.subscribe('csm:csm-1');
    conn.start();
    await flush();
    sockets[0].open();
    expect(sockets[0].sent).toEqual([
      { op: 'subscribe', channel: 'executive' },
      { op: 'subscribe', channel: 'csm:csm-1' },
    ]);
    sockets[0].receive({ type: 'subscribed', channel: 'executive', seq: 3, epoch: 5 });
    sockets[0].receive({ type: 'snapshot', channel: 'executive', seq: 3, data: { a: 1 } });
    sockets[0].receive({ type: 'update', channel: 'executive', seq: 4, topic: 'health', patch: { a: 2 } });
    sockets[0].drop();
    expect(conn.state).toBe('waiting');
    // backoff 500 ms · (0.5 + 0.5·0.5) = 375 ms
    expect(clock.pending()).toEqual([375]);
    await clock.advance(375);
    expect(sockets).toHaveLength(2);
    sockets[1].open();
    expect(sockets[1].sent).toEqual([
      { op: 'subscribe', channel: 'executive', since: 4, epoch: 5 },
      { op: 'subscribe', channel: 'csm:csm-1' }, // never had a snapshot: a fresh one
    ]);
    expect(states).toEqual(['connecting', 'live', 'waiting', 'connecting', 'live']);
    expect(conn.copies.get('executive')!.data).toEqual({ a: 2 });
  });

  it('backs off exponentially while the server stays down, and resets once it answers', async () => {
    const { clock, sockets, conn } = setup(undefined, () => 1);
    conn.subscribe('manager');
    conn.start();
    await flush();
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      sockets[sockets.length - 1].drop();
      delays.push(clock.pending()[0]);
      await clock.advance(clock.pending()[0]);
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 8000]);
    const s = sockets[sockets.length - 1];
    s.open();
    s.receive({ type: 'subscribed', channel: 'manager', seq: 1, epoch: 5 });
    s.drop();
    expect(clock.pending()).toEqual([500]);
  });

  it('probes before connecting: a down server is retried, a rejected token stops', async () => {
    let answer: ProbeResult = { ok: false, reason: 'down' };
    const { clock, sockets, conn } = setup(async () => answer);
    conn.subscribe('executive');
    conn.start();
    await flush();
    expect(sockets).toHaveLength(0);
    expect(conn.state).toBe('waiting');
    answer = { ok: false, reason: 'unauthorized' };
    await clock.advance(clock.pending()[0]);
    expect(conn.state).toBe('unauthorized');
    expect(clock.pending()).toEqual([]);
  });

  it('after a server restart (new boot id) asks for fresh snapshots instead of resuming', async () => {
    let boot = 'A';
    const { clock, sockets, conn, connected } = setup(async () => ({ ok: true, boot }));
    conn.subscribe('executive');
    conn.start();
    await flush();
    sockets[0].open();
    sockets[0].receive({ type: 'snapshot', channel: 'executive', seq: 900, data: { a: 1 } });
    sockets[0].drop();
    await clock.advance(clock.pending()[0]);
    sockets[1].open();
    expect(sockets[1].sent).toEqual([{ op: 'subscribe', channel: 'executive', since: 900 }]);
    sockets[1].drop();
    boot = 'B';
    await clock.advance(clock.pending()[0]);
    sockets[2].open();
    expect(sockets[2].sent).toEqual([{ op: 'subscribe', channel: 'executive' }]);
    expect(connected).toEqual([false, false, true]);
    // Its numbering starts over: seq 3 is applied, not ignored as old.
    sockets[2].receive({ type: 'snapshot', channel: 'executive', seq: 3, data: { a: 9 } });
    sockets[2].receive({ type: 'update', channel: 'executive', seq: 4, topic: 'health', patch: { a: 10 } });
    expect(conn.copies.get('executive')!.data).toEqual({ a: 10 });
  });

  it('pings while open and replaces a connection that has gone silent', async () => {
    const { clock, sockets, conn } = setup();
    conn.subscribe('executive');
    conn.start();
    await flush();
    sockets[0].open();
    await clock.advance(10_000);
    expect(sockets[0].sent.at(-1)).toEqual({ op: 'ping' });
    sockets[0].receive({ type: 'pong' });
    await clock.advance(20_000); // 20 s since the pong: still fine
    expect(sockets[0].closed).toBeNull();
    await clock.advance(10_000); // 30 s of silence
    expect(sockets[0].closed).toBe(4000);
    expect(conn.state).toBe('waiting');
    await clock.advance(clock.pending()[0]);
    expect(sockets).toHaveLength(2);
  });

  it('subscribes and unsubscribes live; messages of dropped channels are ignored', async () => {
    const { sockets, conn } = setup();
    conn.start();
    await flush();
    sockets[0].open();
    conn.subscribe('csm:csm-2');
    conn.unsubscribe('csm:csm-2');
    expect(sockets[0].sent).toEqual([
      { op: 'subscribe', channel: 'csm:csm-2' },
      { op: 'unsubscribe', channel: 'csm:csm-2' },
    ]);
    sockets[0].receive({ type: 'snapshot', channel: 'csm:csm-2', seq: 1, data: { a: 1 } });
    expect(conn.copies.has('csm:csm-2')).toBe(false);
  });

  it('stop() closes and never reconnects', async () => {
    const { clock, sockets, conn } = setup();
    conn.start();
    await flush();
    sockets[0].open();
    conn.stop();
    sockets[0].drop();
    await clock.advance(60_000);
    expect(sockets).toHaveLength(1);
    expect(conn.state).toBe('stopped');
  });
});

describe('AlertBook', () => {
  const a = (id: string, state: Alert['state'], ts = '2026-03-01T00:00:00Z', severity: Alert['severity'] = 'critical'): Alert => ({
    alert_id: id, rule: 'r', severity, state, scope: 'account', scope_id: 'x', csm_id: 'csm-1', ts, started_at: ts, message: id,
  });

  it('applies each (alert_id, state) once and lets resolve win over a late seed', () => {
    const book = new AlertBook();
    expect(book.apply(a('1', 'firing'))).toBe(true);
    expect(book.apply(a('1', 'firing'))).toBe(false);
    expect(book.list().map((x) => x.alert_id)).toEqual(['1']);
    expect(book.apply(a('1', 'resolved'))).toBe(true);
    book.seed([a('1', 'firing'), a('2', 'firing')]);
    expect(book.list().map((x) => x.alert_id)).toEqual(['2']);
  });

  it('an updated alert replaces the firing one; an older version never wins', () => {
    const book = new AlertBook();
    book.apply(a('1', 'firing'));
    expect(book.apply({ ...a('1', 'updated'), csm_id: 'csm-2', version: 2 })).toBe(true);
    expect(book.apply({ ...a('1', 'updated'), csm_id: 'csm-3', version: 1 })).toBe(false);
    expect(book.list().map((x) => [x.alert_id, x.csm_id])).toEqual([['1', 'csm-2']]);
    expect(book.apply({ ...a('1', 'resolved'), version: 2 })).toBe(true);
    expect(book.list()).toEqual([]);
  });

  it('lists critical first, newest first; event-rule alerts stay a while', () => {
    const book = new AlertBook();
    book.apply(a('w', 'firing', '2026-03-01T05:00:00Z', 'warning'), 0);
    book.apply(a('c1', 'firing', '2026-03-01T01:00:00Z'), 0);
    book.apply(a('c2', 'fired', '2026-03-01T02:00:00Z'), 0);
    expect(book.list(0).map((x) => x.alert_id)).toEqual(['c2', 'c1', 'w']);
    expect(book.list(16 * 60_000).map((x) => x.alert_id)).toEqual(['c1', 'w']);
  });
});
