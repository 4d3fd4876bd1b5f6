//! Trend lines (uPlot: small, fast, canvas). A null value is a break in the
//! line (a boundary without a history row), never bridged; goal lines
//! (targets) are dashed horizontal lines the y scale always includes.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { Series } from './history';

export interface GoalLine {
  value: number;
  label: string;
}

export class TrendChart {
  private plot: uPlot | null = null;
  private readonly observer: ResizeObserver;
  private goals: GoalLine[] = [];
  /** Options that need a new plot when they change (points shown, goals). */
  private shape = '';
  /** What the chart draws now (read by the browser test). */
  series: Series = { times: [], values: [] };

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

  get goalValues(): number[] {
    return this.goals.map((g) => g.value);
  }

  setData(series: Series, goals: GoalLine[] = []): void {
    this.series = series;
    const data: uPlot.AlignedData = [series.times, series.values];
    // Points show where a value stands alone (between gaps), else a line alone is invisible.
    const lonely = series.values.filter((v) => v !== null).length < 3;
    const shape = JSON.stringify([lonely, goals]);
    if (this.plot && shape === this.shape) {
      this.plot.setData(data);
      return;
    }
    this.shape = shape;
    this.goals = goals;
    this.plot?.destroy();
    this.plot = null;
    const style = getComputedStyle(this.el);
    const stroke = style.getPropertyValue('--accent').trim() || '#2563eb';
    const axis = style.getPropertyValue('--muted').trim() || '#64748b';
    const goalColour = style.getPropertyValue('--goal').trim() || '#9333ea';
    const fmt = this.format;
    const goalsNow = () => this.goals;
    this.plot = new uPlot(
      {
        ...this.size(),
        legend: { show: false },
        cursor: { show: false },
        scales: {
          x: { time: true },
          y: {
            range: (_u, min, max) => {
              const vals = [min, max, ...goalsNow().map((g) => g.value)].filter((v) => v !== null && Number.isFinite(v));
              let lo = Math.min(...vals);
              let hi = Math.max(...vals);
              if (!Number.isFinite(lo)) return [0, 1];
              const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1;
              lo -= pad;
              hi += pad;
              return [lo, hi];
            },
          },
        },
        axes: [
          {
            stroke: axis,
            grid: { show: false },
            ticks: { show: false },
            size: 28,
            // One line per tick (UTC, as history's boundaries are): hours within two days, else month/day.
            values: (u, splits) => {
              const span = (u.scales.x.max ?? 0) - (u.scales.x.min ?? 0);
              return splits.map((v) => {
                const d = new Date(v * 1000);
                return span <= 2 * 86400
                  ? `${String(d.getUTCHours()).padStart(2, '0')}:00`
                  : `${d.getUTCMonth() + 1}/${d.getUTCDate()}${span > 200 * 86400 ? `/${String(d.getUTCFullYear()).slice(2)}` : ''}`;
              });
            },
          },
          {
            stroke: axis,
            size: 76,
            grid: { stroke: 'rgba(127,127,127,0.15)' },
            values: (_u, splits) => splits.map((v) => fmt(v)),
          },
        ],
        series: [{}, { label: this.label, stroke, width: 2, spanGaps: false, points: { show: lonely, size: 5, fill: stroke } }],
        hooks: {
          draw: [
            (u) => {
              const ctx = u.ctx;
              ctx.save();
              ctx.strokeStyle = goalColour;
              ctx.fillStyle = goalColour;
              ctx.lineWidth = 1.5 * devicePixelRatio;
              ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
              ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
              for (const g of goalsNow()) {
                const y = u.valToPos(g.value, 'y', true);
                ctx.beginPath();
                ctx.moveTo(u.bbox.left, y);
                ctx.lineTo(u.bbox.left + u.bbox.width, y);
                ctx.stroke();
                // The label right-aligned inside the plot, clear of the y axis.
                const w = ctx.measureText(g.label).width;
                ctx.fillText(g.label, u.bbox.left + u.bbox.width - w - 4 * devicePixelRatio, y - 4 * devicePixelRatio);
              }
              ctx.restore();
            },
          ],
        },
      },
      data,
      this.el,
    );
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}
