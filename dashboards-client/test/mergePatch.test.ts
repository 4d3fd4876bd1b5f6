import { describe, expect, it } from 'vitest';
import { applyMergePatch, type Json } from '../src/mergePatch';

// RFC 7386 Appendix A, every example.
const RFC_CASES: [Json, Json, Json][] = [
  [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
  [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
  [{ a: 'b' }, { a: null }, {}],
  [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
  [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
  [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
  [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
  [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
  [['a', 'b'], ['c', 'd'], ['c', 'd']],
  [{ a: 'b' }, ['c'], ['c']],
  [{ a: 'foo' }, null, null],
  [{ a: 'foo' }, 'bar', 'bar'],
  [{ e: null }, { a: 1 }, { e: null, a: 1 }],
  [[1, 2], { a: 'b', c: null }, { a: 'b' }],
  [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
];

describe('applyMergePatch (RFC 7386)', () => {
  it.each(RFC_CASES)('%j + %j = %j', (target, patch, expected) => {
    expect(applyMergePatch(structuredClone(target), patch)).toEqual(expected);
  });

  it('treats a missing target as an empty object', () => {
    expect(applyMergePatch(undefined, { a: { b: 1, c: null } })).toEqual({ a: { b: 1 } });
  });

  it('never aliases the patch into the copy', () => {
    const patch = { accounts: { acme: { usage: { features: ['a'] } } } };
    const copy = applyMergePatch({}, patch) as { accounts: { acme: { usage: { features: string[] } } } };
    copy.accounts.acme.usage.features.push('b');
    expect(patch.accounts.acme.usage.features).toEqual(['a']);
  });

  it('applies a channel-shaped update in place: sections merge, removed keys mean null', () => {
    const data: Json = {
      as_of: '2026-03-01T00:00:00Z',
      accounts: {
        acme: { health: { score: 71.2, tier: 'green', rank: 2 }, tickets: { open: 1, csat_avg_90d: 4.5 } },
        globex: { health: { score: 20, tier: 'red', rank: 1 } },
      },
    };
    const out = applyMergePatch(data, {
      as_of: '2026-03-01T00:05:00Z',
      accounts: { acme: { tickets: { open: 2, csat_avg_90d: null } }, globex: null, initech: { health: { score: 50, tier: 'yellow', rank: 1 } } },
    });
    expect(out).toBe(data); // updated in place
    expect(out).toEqual({
      as_of: '2026-03-01T00:05:00Z',
      accounts: {
        acme: { health: { score: 71.2, tier: 'green', rank: 2 }, tickets: { open: 2 } },
        initech: { health: { score: 50, tier: 'yellow', rank: 1 } },
      },
    });
  });

  it('reaches the same result as replacing whole (random diffs)', () => {
    // Build a patch the way the server does (diff of old → new) and check it.
    const diff = (a: Json, b: Json): Json | undefined => {
      if (typeof a === 'object' && a && !Array.isArray(a) && typeof b === 'object' && b && !Array.isArray(b)) {
        const p: Record<string, Json> = {};
        for (const k of Object.keys(b)) {
          if (!(k in a)) p[k] = b[k];
          else {
            const d = diff(a[k], b[k]);
            if (d !== undefined) p[k] = d;
          }
        }
        for (const k of Object.keys(a)) if (!(k in b)) p[k] = null;
        return Object.keys(p).length ? p : undefined;
      }
      return JSON.stringify(a) === JSON.stringify(b) ? undefined : b;
    };
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const gen = (depth: number): Json => {
      const o: Record<string, Json> = {};
      for (let i = 0; i < rnd(5); i++) {
        const k = `k${rnd(6)}`;
        const kind = depth > 2 ? rnd(3) : rnd(5);
        o[k] = kind === 0 ? rnd(100) : kind === 1 ? `s${rnd(4)}` : kind === 2 ? [rnd(3), rnd(3)] : gen(depth + 1);
      }
      return o;
    };
    for (let i = 0; i < 500; i++) {
      const a = gen(0);
      const b = gen(0);
      const p = diff(a, b);
      const out = p === undefined ? a : applyMergePatch(structuredClone(a), p);
      expect(out).toEqual(b);
    }
  });
});
