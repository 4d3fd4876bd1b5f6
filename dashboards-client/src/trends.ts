//! Main KPIs sampled since the page opened, for the executive trend lines.

export interface TrendSeries {
  key: string;
  label: string;
  format: (v: unknown) => string;
}

export class Trends {
  readonly times: number[] = [];
  readonly values = new Map<string, (number | null)[]>();

  constructor(
    readonly series: TrendSeries[],
    private readonly maxPoints = 2880,
  ) {
    for (const s of series) this.values.set(s.key, []);
  }

  /**
   * Adds a sample at `t` (seconds). Samples closer than `minGapS` to the
   * last replace it, so a burst of updates does not crowd the line.
   */
  add(t: number, sample: Record<string, number | null>, minGapS = 2): void {
    const last = this.times.length - 1;
    const replace = last >= 0 && t - this.times[last] < minGapS;
    if (replace) this.times[last] = t;
    else this.times.push(t);
    for (const s of this.series) {
      const arr = this.values.get(s.key)!;
      const v = sample[s.key] ?? null;
      if (replace) arr[arr.length - 1] = v;
      else arr.push(v);
    }
    if (this.times.length > this.maxPoints) {
      this.times.shift();
      for (const arr of this.values.values()) arr.shift();
    }
  }
}
