/**
 * The points of one channel as columns (times + one column per field), kept in time order.
 *
 * Fed with the `data` messages of one subscription (docs/protocol.md, "Frames"): the first one
 * carries the schema, later ones only `data.values` until the channel gains a field. Late points
 * (and any message that starts before the newest row) are inserted at their place in time.
 */
import type { DataMessage, FrameFieldSchema } from '../src/client';

export type Cell = number | string | boolean | null;

export interface FieldInfo {
  name: string;
  type: string;
  labels?: Record<string, string>;
}

/** First index whose time is strictly greater than `t`. */
export function upperBound(times: number[], t: number): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (times[mid] <= t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/** First index whose time is >= `t`. */
export function lowerBound(times: number[], t: number): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (times[mid] < t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

export class ChannelStore {
  /** The frame's fields other than the time field, in schema order. */
  fields: FieldInfo[] = [];
  times: number[] = [];
  columns: Cell[][] = [];
  /** Data messages received, and rows received (before trimming). */
  messages = 0;
  received = 0;
  lateRows = 0;
  /** Bumped on every change, so a panel knows when to redraw. */
  version = 0;
  position?: string;
  /**
   * After a loss notice the server resumes from its oldest retained point: rows up to this time
   * are already here and are skipped until a message brings only newer rows.
   */
  private lossFloor?: number;
  private timeIndex = 0;
  /** Column index in the message → index in `fields`. */
  private map: number[] = [];

  constructor(readonly maxRows = 400_000) {}

  clear(): void {
    this.times = [];
    this.columns = this.fields.map(() => []);
    this.position = undefined;
    this.lossFloor = undefined;
    this.version++;
  }

  get lastTime(): number | undefined {
    return this.times.length ? this.times[this.times.length - 1] : undefined;
  }

  get firstTime(): number | undefined {
    return this.times.length ? this.times[0] : undefined;
  }

  /** The last non-null value of field `i`. */
  lastValue(i: number): Cell | undefined {
    const col = this.columns[i];
    if (!col) {
      return undefined;
    }
    for (let r = col.length - 1; r >= 0 && r >= col.length - 10_000; r--) {
      if (col[r] !== null && col[r] !== undefined) {
        return col[r];
      }
    }
    return undefined;
  }

  /** A server `notice` with `lost` set: what we hold stays, the replay before it is dropped. */
  noteLoss(): void {
    this.lossFloor = this.lastTime;
  }

  push(msg: DataMessage): number {
    const frame = msg.frame ?? {};
    if (frame.schema) {
      this.applySchema(frame.schema.fields);
    }
    if (msg.position) {
      this.position = msg.position;
    }
    this.messages++;
    const values = frame.data?.values;
    if (!values || !values.length || !values[this.timeIndex]?.length) {
      this.version++;
      return 0;
    }
    const times = values[this.timeIndex] as number[];
    let rows: number[] | null = null; // row indexes to take; null: all
    if (this.lossFloor !== undefined && !msg.late) {
      const floor = this.lossFloor;
      rows = [];
      for (let r = 0; r < times.length; r++) {
        if (times[r] > floor) {
          rows.push(r);
        }
      }
      if (rows.length === times.length) {
        this.lossFloor = undefined;
        rows = null;
      }
    }
    const n = rows ? rows.length : times.length;
    if (n === 0) {
      return 0;
    }
    const first = rows ? times[rows[0]] : times[0];
    const last = this.lastTime;
    const inOrder = !msg.late && (last === undefined || first >= last) && isSorted(times, rows);
    if (inOrder) {
      for (let k = 0; k < n; k++) {
        const r = rows ? rows[k] : k;
        this.times.push(times[r]);
        for (let c = 0; c < this.map.length; c++) {
          const fi = this.map[c];
          if (fi >= 0) {
            this.columns[fi].push(cell(values[c]?.[r]));
          }
        }
        this.fillMissing();
      }
    } else {
      for (let k = 0; k < n; k++) {
        const r = rows ? rows[k] : k;
        const at = upperBound(this.times, times[r]);
        this.times.splice(at, 0, times[r]);
        const row: Cell[] = this.fields.map(() => null);
        for (let c = 0; c < this.map.length; c++) {
          const fi = this.map[c];
          if (fi >= 0) {
            row[fi] = cell(values[c]?.[r]);
          }
        }
        for (let fi = 0; fi < this.columns.length; fi++) {
          this.columns[fi].splice(at, 0, row[fi]);
        }
      }
      if (msg.late) {
        this.lateRows += n;
      }
    }
    this.received += n;
    if (this.times.length > this.maxRows) {
      this.dropFirst(this.times.length - this.maxRows);
    }
    this.version++;
    return n;
  }

  /** Drop the rows older than `t`; returns how many. */
  trimBefore(t: number): number {
    const cut = lowerBound(this.times, t);
    if (cut > 0) {
      this.dropFirst(cut);
      this.version++;
    }
    return cut;
  }

  private dropFirst(n: number): void {
    this.times.splice(0, n);
    for (const col of this.columns) {
      col.splice(0, n);
    }
  }

  /** A field appended by an in-order push that did not carry it keeps the columns aligned. */
  private fillMissing(): void {
    const len = this.times.length;
    for (const col of this.columns) {
      if (col.length < len) {
        col.push(null);
      }
    }
  }

  private applySchema(schema: FrameFieldSchema[]): void {
    const ti = schema.findIndex((f) => f.type === 'time');
    this.timeIndex = ti >= 0 ? ti : 0;
    this.map = schema.map((f, c) => {
      if (c === this.timeIndex) {
        return -1;
      }
      const key = fieldKey(f);
      let idx = this.fields.findIndex((g) => fieldKey(g) === key);
      if (idx < 0) {
        this.fields.push({ name: f.name, type: f.type ?? 'number', labels: f.labels });
        this.columns.push(this.times.map(() => null));
        idx = this.fields.length - 1;
      }
      return idx;
    });
  }
}

function fieldKey(f: { name: string; labels?: Record<string, string> }): string {
  return `${f.name}\u0000${JSON.stringify(f.labels ?? {})}`;
}

function cell(v: unknown): Cell {
  return typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean' ? v : null;
}

function isSorted(times: number[], rows: number[] | null): boolean {
  const n = rows ? rows.length : times.length;
  for (let k = 1; k < n; k++) {
    const a = rows ? times[rows[k - 1]] : times[k - 1];
    const b = rows ? times[rows[k]] : times[k];
    if (b < a) {
      return false;
    }
  }
  return true;
}
