import { describe, expect, it } from 'vitest';
import { ChannelCopy, type Alert, type ServerMessage } from '../src/protocol';

const alert = (id: string): Alert => ({
  alert_id: id, rule: 'p1_ticket_open', severity: 'critical', state: 'firing', scope: 'account', scope_id: 'acme',
  account_id: 'acme', csm_id: 'csm-1', ts: '2026-03-01T00:00:00Z', started_at: '2026-03-01T00:00:00Z', message: 'Acme has a P1',
});

describe('ChannelCopy', () => {
  it('subscribes without since until it holds a snapshot, then resumes from the last seq in its epoch', () => {
    const c = new ChannelCopy('csm:csm-1');
    expect(c.subscribeRequest()).toEqual({ op: 'subscribe', channel: 'csm:csm-1' });
    c.apply({ type: 'subscribed', channel: 'csm:csm-1', seq: 4, epoch: 77 });
    expect(c.subscribeRequest()).toEqual({ op: 'subscribe', channel: 'csm:csm-1' });
    c.apply({ type: 'snapshot', channel: 'csm:csm-1', seq: 4, data: { as_of: 'a', kpis: { x: 1 } } });
    c.apply({ type: 'update', channel: 'csm:csm-1', seq: 5, topic: 'tickets', patch: { kpis: { x: 2 } } });
    expect(c.subscribeRequest()).toEqual({ op: 'subscribe', channel: 'csm:csm-1', since: 5, epoch: 77 });
    expect(c.data).toEqual({ as_of: 'a', kpis: { x: 2 } });
    // A recreated channel (new epoch) answers the resume with a snapshot; the copy follows it.
    c.apply({ type: 'subscribed', channel: 'csm:csm-1', seq: 900, epoch: 78 });
    c.apply({ type: 'snapshot', channel: 'csm:csm-1', seq: 900, data: { as_of: 'b' } });
    expect(c.subscribeRequest()).toEqual({ op: 'subscribe', channel: 'csm:csm-1', since: 900, epoch: 78 });
    c.reset();
    expect(c.subscribeRequest()).toEqual({ op: 'subscribe', channel: 'csm:csm-1' });
  });

  it('ignores messages with seq <= current (replays after a resume)', () => {
    const c = new ChannelCopy('manager');
    c.apply({ type: 'snapshot', channel: 'manager', seq: 10, data: { n: 1 } });
    expect(c.apply({ type: 'update', channel: 'manager', seq: 10, topic: 'health', patch: { n: 99 } }).kind).toBe('ignored');
    expect(c.apply({ type: 'update', channel: 'manager', seq: 9, topic: 'health', patch: { n: 98 } }).kind).toBe('ignored');
    expect(c.apply({ type: 'alert', channel: 'manager', seq: 8, alert: alert('x') }).kind).toBe('ignored');
    expect(c.data).toEqual({ n: 1 });
    expect(c.seq).toBe(10);
  });

  it('applies an update whose seq jumps (coalesced by the server), without error', () => {
    const c = new ChannelCopy('executive');
    c.apply({ type: 'snapshot', channel: 'executive', seq: 3, data: { a: 1, b: 1 } });
    const r = c.apply({ type: 'update', channel: 'executive', seq: 9, topic: 'usage', patch: { b: 5 } });
    expect(r.kind).toBe('data');
    expect(c.seq).toBe(9);
    expect(c.data).toEqual({ a: 1, b: 5 });
  });

  it('ignores updates that arrive before any snapshot', () => {
    const c = new ChannelCopy('executive');
    expect(c.apply({ type: 'update', channel: 'executive', seq: 1, topic: 'usage', patch: { b: 5 } }).kind).toBe('ignored');
    expect(c.data).toBeNull();
  });

  it('takes a snapshot with a lower seq (the server restarted and could not resume)', () => {
    const c = new ChannelCopy('executive');
    c.apply({ type: 'snapshot', channel: 'executive', seq: 500, data: { a: 1 } });
    c.apply({ type: 'subscribed', channel: 'executive', seq: 2, epoch: 1 });
    c.apply({ type: 'snapshot', channel: 'executive', seq: 2, data: { a: 7 } });
    expect([c.seq, c.data]).toEqual([2, { a: 7 }]);
    c.apply({ type: 'update', channel: 'executive', seq: 3, topic: 'health', patch: { a: 8 } });
    expect(c.data).toEqual({ a: 8 });
  });

  it('returns alerts in seq order and advances seq with them', () => {
    const c = new ChannelCopy('csm:csm-1');
    c.apply({ type: 'snapshot', channel: 'csm:csm-1', seq: 1, data: {} });
    const r = c.apply({ type: 'alert', channel: 'csm:csm-1', seq: 2, alert: alert('a1') });
    expect(r).toEqual({ kind: 'alert', alert: alert('a1') });
    expect(c.seq).toBe(2);
  });

  it('a resumed replay ends in the same copy as an uninterrupted client', () => {
    const msgs: ServerMessage[] = [
      { type: 'snapshot', channel: 'x', seq: 0, data: { a: { v: 0 }, b: 1 } },
      ...Array.from({ length: 20 }, (_, i): ServerMessage => ({ type: 'update', channel: 'x', seq: i + 1, topic: 'health', patch: i % 3 ? { a: { v: i } } : { b: i, [`k${i}`]: i } })),
    ];
    const steady = new ChannelCopy('x');
    for (const m of msgs) steady.apply(m);
    const resumed = new ChannelCopy('x');
    for (const m of msgs.slice(0, 8)) resumed.apply(m);
    expect(resumed.subscribeRequest().since).toBe(7);
    // The server replays from since+1, but a duplicate or two of older messages must not hurt.
    for (const m of msgs.slice(5)) resumed.apply(m);
    expect(resumed.data).toEqual(steady.data);
    expect(resumed.seq).toBe(20);
  });
});
