/** One channel on screen: a title bar, a uPlot chart of its number fields and a legend. */
import uPlot from 'uplot';

import { lowerBound, upperBound } from '../src/store/bisect';
import { Cell, FrameStore } from '../src/store/FrameStore';
import { labelText, publishedName } from '../src/store/names';

export const PALETTE = [
  '#73bf69',
  '#f2cc0c',
  '#8ab8ff',
  '#ff780a',
  '#f2495c',
  '#5794f2',
  '#b877d9',
  '#fade2a',
  '#37872d',
  '#c4162a',
];

const AXIS = '#8e99a8';
const GRID = 'rgba(204, 204, 220, 0.07)';
const FONT = '11px Inter, "Helvetica Neue", Arial, sans-serif';
const DEFAULT_HEIGHT = 240;

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** Axis labels in 24-hour time, like Grafana: seconds when the ticks are closer than a minute. */
function timeLabels(_u: uPlot, splits: number[], _axis: number, _space: number, incr: number): string[] {
  return splits.map((t) => {
    const d = new Date(t);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return incr < 60_000 ? `${hm}:${pad(d.getSeconds())}` : hm;
  });
}

export interface View {
  /** Right edge of the chart, epoch ms. */
  max: number;
  windowMs: number;
}

const GROUPED = new Map<number, Intl.NumberFormat>();

function grouped(decimals: number): Intl.NumberFormat {
  let f = GROUPED.get(decimals);
  if (!f) {
    f = new Intl.NumberFormat('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    GROUPED.set(decimals, f);
  }
  return f;
}

/**
 * A number as the live view writes it everywhere (legend, axis): en-US digit grouping, a fixed
 * number of decimals (`decimals`, else by magnitude: 3 below 10, 2 below 100, 1 above), and
 * exponent notation from a million up or below 0.001.
 */
export function formatNumber(v: number, decimals?: number): string {
  if (!Number.isFinite(v)) {
    return Number.isNaN(v) ? 'NaN' : v > 0 ? '∞' : '−∞';
  }
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) {
    return v.toExponential(2);
  }
  return grouped(decimals ?? (a >= 100 ? 1 : a >= 10 ? 2 : 3)).format(v);
}

export function formatValue(v: Cell | undefined): string {
  if (v === undefined || v === null) {
    return '–';
  }
  return typeof v === 'number' ? formatNumber(v) : String(v);
}

/** Axis tick labels: the decimals the tick step needs, written like the legend's values. */
function axisValues(_u: uPlot, splits: number[], _axis: number, _space: number, incr: number): string[] {
  const decimals = incr > 0 && incr < 1 ? Math.min(6, Math.ceil(-Math.log10(incr) - 1e-9)) : 0;
  return splits.map((v) => (v === 0 ? '0' : formatNumber(v, decimals)));
}

/** A field's name and labels as the legend shows them, the labels once: `usage {host="a"}`. */
export function fieldLabel(f: { name: string; labels?: Record<string, string> }): string {
  const labels = labelText(f.labels);
  return labels ? `${publishedName(f)} ${labels}` : f.name;
}

/** Show a series' points when the window holds fewer than two of them (no line to draw). */
function fewPoints(u: uPlot, seriesIdx: number, idx0: number, idx1: number): boolean {
  const ys = u.data[seriesIdx];
  let n = 0;
  for (let i = idx0; i <= idx1 && n < 2; i++) {
    if (ys[i] != null) {
      n++;
    }
  }
  return n < 2;
}

export class Panel {
  readonly el: HTMLElement;
  private readonly chartEl: HTMLElement;
  private readonly legendEl: HTMLElement;
  private readonly metaEl: HTMLElement;
  private readonly noticeEl: HTMLElement;
  private readonly emptyEl: HTMLElement;
  private plot: uPlot | null = null;
  /** Field indexes (in the store) drawn as series, in series order. */
  private plotted: number[] = [];
  private view: View = { max: Date.now(), windowMs: 60_000 };
  private drawnVersion = -1;
  private resize?: ResizeObserver;
  private cursorIdx: number | null = null;
  private height = DEFAULT_HEIGHT;
  draws = 0;
  lastDrawAt = 0;
  /** Rows in the drawn data and the time span they cover. */
  drawnRows = 0;
  /** Rows inside the shown window, and the ms from the first to the last of them (the meta line). */
  shownRows = 0;
  shownSpanMs = 0;

  constructor(
    readonly channel: string,
    readonly store: FrameStore,
    host: HTMLElement
  ) {
    this.el = el('section', 'panel');
    this.el.dataset.channel = channel;
    const head = el('header', 'panel-head');
    const title = el('h2', 'panel-title');
    title.textContent = channel;
    this.metaEl = el('span', 'panel-meta');
    head.append(title, this.metaEl);
    this.noticeEl = el('div', 'panel-notice');
    this.noticeEl.hidden = true;
    this.chartEl = el('div', 'panel-chart');
    this.emptyEl = el('div', 'panel-empty');
    this.emptyEl.hidden = true;
    this.legendEl = el('div', 'legend');
    const chartBox = el('div', 'panel-chart-box');
    chartBox.append(this.chartEl, this.emptyEl);
    this.el.append(head, this.noticeEl, chartBox, this.legendEl);
    host.append(this.el);
    if (typeof ResizeObserver !== 'undefined') {
      this.resize = new ResizeObserver(() => {
        if (this.plot) {
          this.plot.setSize({ width: this.width(), height: this.height });
        }
      });
      this.resize.observe(this.chartEl);
    }
  }

  /** Chart width in CSS pixels. */
  width(): number {
    return Math.max(200, Math.floor(this.chartEl.clientWidth || 600));
  }

  setHeight(px: number): void {
    const h = Math.round(px);
    if (h !== this.height) {
      this.height = h;
      this.chartEl.style.minHeight = `${h}px`;
      this.plot?.setSize({ width: this.width(), height: h });
    }
  }

  notice(text: string | null, level: 'info' | 'warning' | 'error' = 'info'): void {
    this.noticeEl.hidden = !text;
    this.noticeEl.textContent = text ?? '';
    this.noticeEl.className = `panel-notice ${level}`;
  }

  /** Redraw when the data or the view changed. */
  draw(view: View, force = false): void {
    const numeric = this.store.fields
      .map((f, i) => ({ f, i }))
      .filter(({ f }) => f.type === 'number')
      .map(({ i }) => i);
    const same =
      view.max === this.view.max && view.windowMs === this.view.windowMs && this.drawnVersion === this.store.version;
    if (same && !force && this.plot) {
      return;
    }
    this.view = view;
    if (!this.plot && !this.store.fields.length) {
      // No schema yet: an empty chart made now would be replaced, canvas and all, a moment later.
      this.updateLegend();
      this.updateMeta();
      return;
    }
    if (!this.plot || numeric.join(',') !== this.plotted.join(',')) {
      this.create(numeric);
    }
    const data = [this.store.times, ...this.plotted.map((i) => this.store.columns[i])] as uPlot.AlignedData;
    this.plot?.setData(data, true);
    this.drawnVersion = this.store.version;
    this.drawnRows = this.store.times.length;
    this.draws++;
    this.lastDrawAt = Date.now();
    this.updateEmpty();
    this.updateLegend();
    this.updateMeta();
  }

  /** The message over the chart when the window has no point: says so, and when the last one was. */
  emptyText(): string | null {
    const s = this.store;
    const from = this.view.max - this.view.windowMs;
    if (!s.fields.length) {
      return null;
    }
    const last = s.lastTime;
    if (last !== undefined && last >= from) {
      return null;
    }
    const window = windowText(this.view.windowMs);
    return last === undefined
      ? `No data in the last ${window}`
      : `No data in the last ${window}: the last point was at ${new Date(last).toLocaleTimeString('en-GB')}`;
  }

  private updateEmpty(): void {
    const text = this.emptyText();
    this.emptyEl.hidden = text === null;
    this.emptyEl.textContent = text ?? '';
  }

  destroy(): void {
    this.resize?.disconnect();
    this.plot?.destroy();
    this.plot = null;
    this.el.remove();
  }

  private create(numeric: number[]): void {
    this.plot?.destroy();
    this.chartEl.textContent = '';
    this.plotted = numeric;
    const fields = this.store.fields;
    const opts: uPlot.Options = {
      width: this.width(),
      height: this.height,
      ms: 1,
      legend: { show: false },
      cursor: {
        drag: { x: false, y: false, setScale: false },
        points: { size: 7 },
      },
      scales: {
        x: { time: true, range: () => [this.view.max - this.view.windowMs, this.view.max] },
        y: { auto: true },
      },
      axes: [
        {
          stroke: AXIS,
          font: FONT,
          values: timeLabels,
          space: 90,
          size: 30,
          grid: { stroke: GRID, width: 1 },
          ticks: { stroke: GRID, width: 1, size: 4 },
        },
        {
          stroke: AXIS,
          font: FONT,
          size: 56,
          values: axisValues,
          grid: { stroke: GRID, width: 1 },
          ticks: { stroke: GRID, width: 1, size: 4 },
        },
      ],
      series: [
        {},
        ...numeric.map((fi, k) => ({
          label: fieldLabel(fields[fi]),
          stroke: PALETTE[k % PALETTE.length],
          width: 1.5,
          fill: numeric.length === 1 ? `${PALETTE[k % PALETTE.length]}1a` : undefined,
          fillTo: (u: uPlot) => u.scales.y.min ?? 0,
          spanGaps: true,
          points: { show: fewPoints, size: 6 },
        })),
      ],
      hooks: {
        setCursor: [
          (u: uPlot) => {
            this.cursorIdx = u.cursor.idx ?? null;
            this.updateLegend();
          },
        ],
      },
    };
    this.plot = new uPlot(opts, [[]], this.chartEl);
  }

  private updateLegend(): void {
    const fields = this.store.fields;
    const idx = this.cursorIdx;
    const rows: HTMLElement[] = [];
    let k = 0;
    fields.forEach((f, i) => {
      const item = el('div', 'legend-item');
      item.dataset.field = f.name;
      const swatch = el('span', 'swatch');
      if (f.type === 'number') {
        swatch.style.background = PALETTE[k % PALETTE.length];
        k++;
      } else {
        swatch.classList.add('text');
      }
      const name = el('span', 'legend-name');
      name.textContent = fieldLabel(f);
      const value = el('span', 'legend-value');
      const v = idx !== null && idx < this.store.times.length ? this.store.columns[i][idx] : this.store.lastValue(i);
      value.textContent = formatValue(v);
      item.append(swatch, name, value);
      rows.push(item);
    });
    if (idx !== null && idx < this.store.times.length) {
      const at = el('div', 'legend-time');
      at.textContent = new Date(this.store.times[idx]).toLocaleTimeString('en-GB');
      rows.unshift(at);
    }
    if (!rows.length) {
      const empty = el('div', 'legend-empty');
      empty.textContent = 'no fields yet';
      rows.push(empty);
    }
    this.legendEl.replaceChildren(...rows);
    this.legendEl.classList.toggle('at-cursor', idx !== null);
  }

  private updateMeta(): void {
    // What the chart shows: the rows inside the window, not the few seconds kept beyond it for scrolling.
    const s = this.store;
    const lo = lowerBound(s.times, this.view.max - this.view.windowMs);
    const hi = upperBound(s.times, this.view.max);
    const first = hi > lo ? s.times[lo] : undefined;
    const last = s.lastTime;
    const span = first !== undefined && hi > lo ? (s.times[hi - 1] - first) / 1000 : 0;
    this.shownRows = hi - lo;
    this.shownSpanMs = span * 1000;
    const parts = [`${(hi - lo).toLocaleString('en-US')} point${hi - lo === 1 ? '' : 's'}`];
    if (span > 0) {
      parts.push(`${span >= 120 ? `${(span / 60).toFixed(1)} min` : `${span.toFixed(1)} s`}`);
    }
    if (last !== undefined) {
      parts.push(`last ${new Date(last).toLocaleTimeString('en-GB')}`);
    }
    this.metaEl.textContent = parts.join(' · ');
  }
}

function windowText(ms: number): string {
  if (ms % 3_600_000 === 0) {
    return ms === 3_600_000 ? 'hour' : `${ms / 3_600_000} hours`;
  }
  if (ms % 60_000 === 0) {
    return ms === 60_000 ? 'minute' : `${ms / 60_000} minutes`;
  }
  return `${Math.round(ms / 1000)} seconds`;
}

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) {
    e.className = className;
  }
  return e;
}
