import { DataFrameJSON, FieldType, StreamingDataFrame, StreamingFrameAction } from '@grafana/data';

import { FrameJSON } from './client';

/** Index of the time field of a frame (the first `time` field), or -1. */
export function timeIndex(frame: StreamingDataFrame): number {
  return frame.fields.findIndex((f) => f.type === FieldType.time);
}

function timeIndexOfJSON(json: FrameJSON, fallback: number): number {
  const idx = json.schema?.fields.findIndex((f) => f.type === 'time') ?? -1;
  return idx >= 0 ? idx : fallback;
}

/** First index whose time is strictly greater than `t` (insert after equal times). */
export function upperBound(times: unknown[], t: number): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((times[mid] as number) <= t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/** First index whose time is >= `t`. */
export function lowerBound(times: unknown[], t: number): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((times[mid] as number) < t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

export function lastTime(frame: StreamingDataFrame): number | undefined {
  const ti = timeIndex(frame);
  if (ti < 0 || !frame.length) {
    return undefined;
  }
  const values = frame.fields[ti].values;
  return values[values.length - 1] as number;
}

export function firstTime(frame: StreamingDataFrame): number | undefined {
  const ti = timeIndex(frame);
  if (ti < 0 || !frame.length) {
    return undefined;
  }
  return frame.fields[ti].values[0] as number;
}

function markChanged(frame: StreamingDataFrame): void {
  frame.length = frame.fields[0]?.values.length ?? 0;
  frame.packetInfo.action = StreamingFrameAction.Replace;
  frame.packetInfo.number++;
  frame.resetStateCalculations();
}

/**
 * Insert the rows of a message into `frame` at their place in time (late points). A schema in
 * the message is applied first. Returns the number of rows inserted.
 */
export function insertRows(frame: StreamingDataFrame, json: FrameJSON): number {
  if (json.schema) {
    frame.push({ schema: json.schema } as DataFrameJSON);
  }
  const values = json.data?.values;
  const ti = timeIndex(frame);
  if (!values || !values.length || !values[0]?.length || ti < 0) {
    return 0;
  }
  if (values.length !== frame.fields.length) {
    throw new Error(`late message has ${values.length} columns, the frame has ${frame.fields.length}`);
  }
  const n = values[0].length;
  const times = frame.fields[ti].values;
  for (let r = 0; r < n; r++) {
    const at = upperBound(times, values[ti][r] as number);
    for (let c = 0; c < frame.fields.length; c++) {
      frame.fields[c].values.splice(at, 0, values[c][r] ?? null);
    }
  }
  markChanged(frame);
  return n;
}

/** Drop the rows before `fromMs`. Returns how many were dropped. */
export function trimBefore(frame: StreamingDataFrame, fromMs: number): number {
  const ti = timeIndex(frame);
  if (ti < 0 || !frame.length) {
    return 0;
  }
  const cut = lowerBound(frame.fields[ti].values, fromMs);
  if (cut > 0) {
    for (const f of frame.fields) {
      f.values.splice(0, cut);
    }
    markChanged(frame);
  }
  return cut;
}

/** The rows of a message with time > `t`, or the message itself when all are. */
export function rowsAfter(json: FrameJSON, t: number, fallbackTimeIndex = 0): { json: FrameJSON; dropped: number } {
  const values = json.data?.values;
  if (!values || !values.length || !values[0]?.length) {
    return { json, dropped: 0 };
  }
  const ti = timeIndexOfJSON(json, fallbackTimeIndex);
  const times = values[ti];
  const keep: number[] = [];
  for (let r = 0; r < times.length; r++) {
    if ((times[r] as number) > t) {
      keep.push(r);
    }
  }
  if (keep.length === times.length) {
    return { json, dropped: 0 };
  }
  return {
    json: { ...json, data: { values: values.map((col) => keep.map((r) => col[r])) } },
    dropped: times.length - keep.length,
  };
}

/** The first time in a message, if any. */
export function firstTimeOf(json: FrameJSON, fallbackTimeIndex = 0): number | undefined {
  const values = json.data?.values;
  if (!values || !values.length || !values[0]?.length) {
    return undefined;
  }
  return values[timeIndexOfJSON(json, fallbackTimeIndex)][0] as number;
}

export function rowCount(json: FrameJSON): number {
  return json.data?.values?.[0]?.length ?? 0;
}

/** An independent copy of a streaming frame. */
export function cloneFrame(frame: StreamingDataFrame): StreamingDataFrame {
  const copy = StreamingDataFrame.deserialize(frame.serialize());
  copy.options = { ...frame.options };
  copy.meta = { ...frame.meta };
  return copy;
}
