//! Trend lines (uPlot: small, fast, canvas).

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export class TrendChart {
  private plot: uPlot | null = null;
  private readonly observer: ResizeObserver;

  constructor(
    private readonly el: HTMLElement,
    private readonly label: string,
    private readonly format: (v: unknown) => string,
  ) {
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(el);
  }

  private size(): { width: number; height: number } {
    return { width: Math.max(160, this.el.clientWidth), height: Math.max(80, this.el.clientHeight || 120) };
  }

  private resize(): void {
    if (this.plot) this.plot.setSize(this.size());
  }

  setData(times: number[], values: (number | null)[]): void {
    const data: uPlot.AlignedData = [times, values];
    if (!this.plot) {
      const stroke = getComputedStyle(this.el).getPropertyValue('--accent').trim() || '#2563eb';
      const axis = getComputedStyle(this.el).getPropertyValue('--muted').trim() || '#64748b';
      const fmt = this.format;
      this.plot = new uPlot(
        {
          ...this.size(),
          legend: { show: false },
          cursor: { show: false },
          scales: { x: { time: true } },
          axes: [
            { stroke: axis, grid: { show: false }, ticks: { show: false }, size: 28 },
            {
              stroke: axis,
              size: 76,
              grid: { stroke: 'rgba(127,127,127,0.15)' },
              values: (_u, splits) => splits.map((v) => fmt(v)),
            },
          ],
          series: [{}, { label: this.label, stroke, width: 2, points: { show: times.length < 3 } }],
        },
        data,
        this.el,
      );
      return;
    }
    this.plot.setData(data);
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}
