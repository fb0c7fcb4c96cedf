/**
 * The points of one subscription as columns (times + one column per field), kept in time order:
 * the one implementation of "merge a `data` message" (docs/protocol.md, "Frames" and "Order and
 * late points"), used by the Grafana plugin (through frames.ts) and by the live view page.
 *
 * - Schema: the first message carries it; a later one carries it again when the channel gains a
 *   field. Fields are matched by name and labels; a new field's earlier rows are `missing`.
 * - Late rows (a message marked `late: true`, or any message starting before the newest row, or
 *   unsorted) are merged in at their place in time; rows with equal times keep their arrival order.
 *   A late message may also hold rows newer than every row here (one batch of the channel's log
 *   with old and new points): they land at the end.
 * - Loss floor: after a `notice` with `lost`, the server resumes from its oldest retained point;
 *   the rows up to the newest one held are already here and are skipped until a message brings
 *   only newer rows.
 * - Trim: at most `maxRows` rows, and only rows within `maxDelta` ms of the newest.
 * - Buckets (`bucket_ms`, an aggregated subscription): a row replaces the row held at the same
 *   time (a bucket is sent again whenever a point lands in it); other rows are merged as above.
 *
 * Pure: no I/O, no timers, no framework. A message that does not fit (rows before any schema, a
 * column count that is not the schema's, a time that is not a number) is refused whole with a
 * `FrameError` saying why, and the store is left as it was.
 */
import { nextPosition } from '../client/position';
import type { DataMessage, FrameFieldSchema } from '../client/protocol';
import { lowerBound, upperBound } from './bisect';
import { Cell, decodeEntities } from './cells';

export type { Cell };

export interface StoreField {
  name: string;
  /** `number`, `string`, `boolean` (the time field: `time`). */
  type: string;
  labels?: Record<string, string>;
  config?: Record<string, unknown>;
}

export interface FrameStoreOptions {
  /** Keep at most this many rows (the oldest go first). Default: no limit. */
  maxRows?: number;
  /** Keep only rows within this many ms of the newest. Default: no limit. */
  maxDelta?: number;
  /**
   * The cell of a field a row did not carry: `undefined` (no value: Grafana and uPlot draw a line
   * through it) or `null` (a gap). Default `null`.
   */
  missing?: null | undefined;
}

/** What one merge did. */
export interface MergeResult {
  /** Rows taken into the store. */
  rows: number;
  /** Rows skipped under the loss floor. */
  skipped: number;
  /** The rows were merged in at their place in time rather than appended. */
  inserted: boolean;
  /** Rows dropped from the start to stay within `maxRows` / `maxDelta`. */
  trimmed: number;
  /** Fields were added (or the first schema arrived). */
  schemaChanged: boolean;
}

/** A message the store refuses; the store is unchanged. */
export class FrameError extends Error {
  override name = 'FrameError';
}

/** What the store reads of a data message. */
export type FrameMessage = Pick<DataMessage, 'frame'> & Partial<Pick<DataMessage, 'position' | 'late' | 'bucket_ms'>>;

interface SchemaPlan {
  timeIndex: number;
  timeField: StoreField;
  /** Message column → field index; -1 for the time column. */
  map: number[];
  added: StoreField[];
  /** Existing fields whose config the schema restates. */
  configs: Array<[number, Record<string, unknown>]>;
}

export class FrameStore {
  /** The time field as the schema names it. */
  timeField: StoreField = { name: 'time', type: 'time' };
  /** The fields other than the time field, in the order they first appeared. */
  fields: StoreField[] = [];
  times: number[] = [];
  /** `columns[i]` holds the cells of `fields[i]`, one per time. */
  columns: Cell[][] = [];
  /** `schema.meta` of the last schema that had one. */
  meta?: Record<string, unknown>;
  /** The resume position of the rows held (see client/position.ts). */
  position?: string;
  /** The bucket width of the rows held (an aggregated subscription); 0: raw points; unknown before. */
  bucketMs?: number;
  /** Bumped on every change, so a view knows when to redraw. */
  version = 0;
  /** Bumped when fields are added. */
  schemaVersion = 0;
  /**
   * The newest time of a row trimmed from the start, if any: the store holds every row it was
   * given that is newer (what a cache needs to know what it still covers).
   */
  trimmedThrough?: number;
  /** Data messages merged, rows taken (before trimming), rows of `late` messages older than the newest held. */
  readonly stats = { messages: 0, received: 0, lateRows: 0 };

  private maxRows: number;
  private maxDelta: number;
  private readonly missing: null | undefined;
  private lossFloor?: number;
  private hasSchema = false;
  private timeIndex = 0;
  private map: number[] = [];
  private readonly index = new Map<string, number>();

  constructor(opts: FrameStoreOptions = {}) {
    this.maxRows = opts.maxRows ?? Infinity;
    this.maxDelta = opts.maxDelta ?? Infinity;
    this.missing = 'missing' in opts ? opts.missing : null;
  }

  get length(): number {
    return this.times.length;
  }

  get firstTime(): number | undefined {
    return this.times.length ? this.times[0] : undefined;
  }

  get lastTime(): number | undefined {
    return this.times.length ? this.times[this.times.length - 1] : undefined;
  }

  get limits(): { maxRows: number; maxDelta: number } {
    return { maxRows: this.maxRows, maxDelta: this.maxDelta };
  }

  /** The schema of what is held: the time field first, then the fields. */
  schema(): FrameFieldSchema[] {
    return [this.timeField, ...this.fields].map((f) => ({ ...f }));
  }

  /** The last value of field `i` that is not missing (looking back at most 10 000 rows). */
  lastValue(i: number): Cell {
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

  /** Merge one `data` message. Throws `FrameError` (store unchanged) for a message that does not fit. */
  merge(msg: FrameMessage): MergeResult {
    const frame = msg.frame ?? {};
    const plan = frame.schema ? this.plan(frame.schema.fields) : undefined;
    const map = plan ? plan.map : this.map;
    const timeIndex = plan ? plan.timeIndex : this.timeIndex;
    let values = frame.data?.values ?? [];
    const n = values.length && Array.isArray(values[0]) ? values[0].length : 0;
    if (n > 0) {
      if (!plan && !this.hasSchema) {
        throw new FrameError('a data message with rows came before any schema: the first message of a subscription must carry one');
      }
      if (values.length !== map.length) {
        throw new FrameError(`a data message has ${values.length} columns but the schema has ${map.length} fields`);
      }
      for (let c = 0; c < values.length; c++) {
        if (!Array.isArray(values[c]) || values[c].length !== n) {
          throw new FrameError(`column ${c} of a data message is not a list of ${n} values like column 0`);
        }
      }
      const entities = frame.data?.entities;
      if (entities) {
        values = decodeEntities(values, entities);
      }
      const times = values[timeIndex];
      for (let r = 0; r < n; r++) {
        const t = times[r];
        if (typeof t !== 'number' || !Number.isFinite(t)) {
          throw new FrameError(`row ${r} of a data message has the time ${JSON.stringify(t) ?? String(t)}, not epoch milliseconds`);
        }
      }
    }

    // Checked: from here on nothing throws.
    const schemaChanged = plan ? this.apply(plan, frame.schema?.meta) : false;
    this.position = nextPosition(this.position, msg);
    this.stats.messages++;
    const result: MergeResult = { rows: 0, skipped: 0, inserted: false, trimmed: 0, schemaChanged };
    if (n === 0) {
      this.version++;
      return result;
    }
    const times = values[timeIndex] as number[];
    let rows: number[] | null = null; // the row indexes to take; null: all, in order
    this.bucketMs = msg.bucket_ms ?? 0;
    if (msg.bucket_ms) {
      rows = this.replaceRows(values, times, n);
      if (rows.length === 0) {
        this.version++;
        return { ...result, rows: n };
      }
    }
    if (this.lossFloor !== undefined && !msg.late && !msg.bucket_ms) {
      const floor = this.lossFloor;
      rows = [];
      for (let r = 0; r < n; r++) {
        if (times[r] > floor) {
          rows.push(r);
        }
      }
      if (rows.length === n) {
        this.lossFloor = undefined;
        rows = null;
      }
    }
    const k = rows ? rows.length : n;
    result.skipped = msg.bucket_ms ? 0 : n - k;
    if (k === 0) {
      if (schemaChanged) {
        this.version++;
      }
      return result;
    }
    const first = rows ? times[rows[0]] : times[0];
    const last = this.lastTime;
    const inOrder = !msg.late && (last === undefined || first >= last) && isSorted(times, rows);
    if (inOrder) {
      this.append(values, times, rows, k);
    } else {
      this.insert(values, times, rows ?? range(n));
    }
    this.stats.received += k;
    if (msg.late && last !== undefined) {
      // A late message is one run of the log, sorted: only its rows older than the newest held are late.
      for (let j = 0; j < k; j++) {
        if ((rows ? times[rows[j]] : times[j]) < last) {
          this.stats.lateRows++;
        }
      }
    }
    result.rows = msg.bucket_ms ? n : k;
    result.inserted = !inOrder;
    result.trimmed = this.enforceLimits();
    this.version++;
    return result;
  }

  /**
   * Buckets: rows at a time already held overwrite that row in place; returns the indexes of the
   * other rows (to merge as usual).
   */
  private replaceRows(values: unknown[][], times: number[], n: number): number[] {
    const rest: number[] = [];
    const missing = this.missing;
    for (let r = 0; r < n; r++) {
      const i = lowerBound(this.times, times[r]);
      if (i >= this.times.length || this.times[i] !== times[r]) {
        rest.push(r);
        continue;
      }
      for (const col of this.columns) {
        col[i] = missing;
      }
      for (let c = 0; c < this.map.length; c++) {
        if (this.map[c] >= 0) {
          this.columns[this.map[c]][i] = asCell(values[c][r], missing);
        }
      }
    }
    return rest;
  }

  /** A server `notice` with `lost`: the rows held stay; the replay of rows up to them is skipped. */
  noteLoss(): void {
    this.lossFloor = this.lastTime;
  }

  /** Change the limits (a new time range); returns how many rows were dropped to meet them. */
  setLimits(limits: { maxRows?: number; maxDelta?: number }): number {
    this.maxRows = limits.maxRows ?? this.maxRows;
    this.maxDelta = limits.maxDelta ?? this.maxDelta;
    const cut = this.enforceLimits();
    if (cut) {
      this.version++;
    }
    return cut;
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

  /** Drop every row and the position (for a new subscription); the fields stay. */
  clear(): void {
    this.times = [];
    this.columns = this.fields.map(() => []);
    this.position = undefined;
    this.bucketMs = undefined;
    this.lossFloor = undefined;
    this.trimmedThrough = undefined;
    this.version++;
  }

  /** An independent copy. */
  clone(): FrameStore {
    const c = new FrameStore({ maxRows: this.maxRows, maxDelta: this.maxDelta, missing: this.missing });
    c.timeField = { ...this.timeField };
    c.fields = this.fields.map((f) => ({ ...f }));
    c.times = this.times.slice();
    c.columns = this.columns.map((col) => col.slice());
    c.meta = this.meta;
    c.position = this.position;
    c.bucketMs = this.bucketMs;
    c.version = this.version;
    c.schemaVersion = this.schemaVersion;
    Object.assign(c.stats, this.stats);
    c.lossFloor = this.lossFloor;
    c.trimmedThrough = this.trimmedThrough;
    c.hasSchema = this.hasSchema;
    c.timeIndex = this.timeIndex;
    c.map = this.map.slice();
    for (const [key, i] of this.index) {
      c.index.set(key, i);
    }
    return c;
  }

  // --- internals ----------------------------------------------------------------------------------

  /** Map a schema onto the fields held, without changing anything yet. */
  private plan(schema: FrameFieldSchema[]): SchemaPlan {
    const ti = schema.findIndex((f) => f.type === 'time');
    const timeIndex = ti >= 0 ? ti : 0;
    const added: StoreField[] = [];
    const configs: Array<[number, Record<string, unknown>]> = [];
    const seen = new Set<string>();
    const map = schema.map((f, c) => {
      if (c === timeIndex) {
        return -1;
      }
      const key = fieldKey(f);
      if (seen.has(key)) {
        throw new FrameError(`the schema lists the field "${f.name}" twice`);
      }
      seen.add(key);
      const known = this.index.get(key);
      if (known !== undefined) {
        if (f.config) {
          configs.push([known, f.config]);
        }
        return known;
      }
      added.push(storeField(f));
      return this.fields.length + added.length - 1;
    });
    const tf = schema[timeIndex];
    const timeField: StoreField = tf ? { ...storeField(tf), type: 'time' } : { name: 'time', type: 'time' };
    return { timeIndex, timeField, map, added, configs };
  }

  private apply(plan: SchemaPlan, meta: Record<string, unknown> | undefined): boolean {
    const changed = !this.hasSchema || plan.added.length > 0 || plan.timeField.name !== this.timeField.name;
    for (const f of plan.added) {
      this.index.set(fieldKey(f), this.fields.length);
      this.fields.push(f);
      this.columns.push(new Array<Cell>(this.times.length).fill(this.missing));
    }
    for (const [i, config] of plan.configs) {
      this.fields[i] = { ...this.fields[i], config };
    }
    this.timeField = plan.timeField;
    this.timeIndex = plan.timeIndex;
    this.map = plan.map;
    this.hasSchema = true;
    if (meta) {
      this.meta = { ...meta };
    }
    if (changed) {
      this.schemaVersion++;
    }
    return changed;
  }

  private append(values: unknown[][], times: number[], rows: number[] | null, k: number): void {
    const missing = this.missing;
    const targets: Array<[Cell[], unknown[]]> = [[this.times, times]];
    for (let c = 0; c < this.map.length; c++) {
      if (this.map[c] >= 0) {
        targets.push([this.columns[this.map[c]], values[c]]);
      }
    }
    for (const [col, src] of targets) {
      if (rows) {
        for (let j = 0; j < k; j++) {
          col.push(asCell(src[rows[j]], missing));
        }
      } else {
        for (let j = 0; j < k; j++) {
          col.push(asCell(src[j], missing));
        }
      }
    }
    // Fields the message did not carry.
    const len = this.times.length;
    for (const col of this.columns) {
      while (col.length < len) {
        col.push(missing);
      }
    }
  }

  /** Merge rows in at their place: a stable merge of the tail they overlap with them, sorted. */
  private insert(values: unknown[][], times: number[], rows: number[]): void {
    const order = rows.slice().sort((a, b) => times[a] - times[b] || a - b);
    const start = upperBound(this.times, times[order[0]]);
    const oldTimes = this.times.splice(start);
    const oldCols = this.columns.map((col) => col.splice(start));
    const src: Array<unknown[] | undefined> = this.fields.map(() => undefined);
    for (let c = 0; c < this.map.length; c++) {
      if (this.map[c] >= 0) {
        src[this.map[c]] = values[c];
      }
    }
    const missing = this.missing;
    const nf = this.fields.length;
    let i = 0;
    let j = 0;
    while (i < oldTimes.length || j < order.length) {
      // Equal times: the row held first (it arrived first).
      if (j >= order.length || (i < oldTimes.length && oldTimes[i] <= times[order[j]])) {
        this.times.push(oldTimes[i]);
        for (let f = 0; f < nf; f++) {
          this.columns[f].push(oldCols[f][i]);
        }
        i++;
      } else {
        const r = order[j];
        this.times.push(times[r]);
        for (let f = 0; f < nf; f++) {
          const s = src[f];
          this.columns[f].push(s ? asCell(s[r], missing) : missing);
        }
        j++;
      }
    }
  }

  private enforceLimits(): number {
    const len = this.times.length;
    if (!len) {
      return 0;
    }
    let cut = len > this.maxRows ? len - this.maxRows : 0;
    if (Number.isFinite(this.maxDelta)) {
      cut = Math.max(cut, lowerBound(this.times, this.times[len - 1] - this.maxDelta));
    }
    if (cut > 0) {
      this.dropFirst(cut);
    }
    return cut;
  }

  private dropFirst(n: number): void {
    const t = this.times[n - 1];
    this.trimmedThrough = this.trimmedThrough === undefined ? t : Math.max(this.trimmedThrough, t);
    this.times.splice(0, n);
    for (const col of this.columns) {
      col.splice(0, n);
    }
  }
}

function storeField(f: FrameFieldSchema): StoreField {
  const out: StoreField = { name: f.name, type: f.type ?? 'number' };
  if (f.labels) {
    out.labels = { ...f.labels };
  }
  if (f.config) {
    out.config = f.config;
  }
  return out;
}

function fieldKey(f: { name: string; labels?: Record<string, string> }): string {
  const labels = f.labels ? Object.keys(f.labels).sort().map((k) => [k, f.labels![k]]) : [];
  return `${f.name}\u0000${JSON.stringify(labels)}`;
}

/**
 * A value as a cell: numbers, strings and booleans are kept; anything else is `missing`: a cell
 * marked `Undef` (decoded to `undefined`), and `null`, which is how servers before `entities`
 * sent a missing cell (times are numbers).
 */
function asCell(v: unknown, missing: null | undefined): Cell {
  return typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean' ? v : missing;
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

function range(n: number): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    out[i] = i;
  }
  return out;
}
