//! Reconnect delays: exponential backoff with jitter.

export interface BackoffOptions {
  /** First delay before jitter (ms). */
  baseMs: number;
  /** Largest delay before jitter (ms). */
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 10_000 };

/**
 * Delay n (from 0) is drawn uniformly from [cap/2, cap] with
 * cap = min(max, base·2ⁿ): it grows exponentially, never exceeds `max`, and
 * clients that lost the same server do not all come back in the same instant
 * (half the cap is random). `reset()` once a connection proved good.
 */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly options: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  get attempts(): number {
    return this.attempt;
  }

  next(): number {
    const cap = Math.min(this.options.maxMs, this.options.baseMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.round(cap / 2 + (cap / 2) * this.random());
  }

  reset(): void {
    this.attempt = 0;
  }
}
