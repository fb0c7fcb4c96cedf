/**
 * The panel of the page: @grafana/ui's `TimeSeries` graph (uPlot, the same data preparation and
 * legend as Grafana's time series panel) inside a PanelPlugin, which records what every render was
 * given, after the query runner and the field config did their part.
 */
import {
  DataFrame,
  FieldColorModeId,
  FieldConfigProperty,
  FieldType,
  PanelData,
  PanelPlugin,
  PanelProps,
  getFieldDisplayName,
} from '@grafana/data';
import { LegendDisplayMode } from '@grafana/schema';
import { TimeSeries } from '@grafana/ui';
import React from 'react';

/** What one render of the panel showed. */
export interface Render {
  /** ms since the page started. */
  at: number;
  state: string;
  /** Frames per refId, in order. */
  refIds: string[];
  /** Number fields (series) in all frames. */
  series: number;
  /** getFieldDisplayName of every number field, as Grafana's panels compute it. */
  names: string[];
  /** `null` cells between a series' first and last value (a broken line), all series together. */
  nullsInSpan: number;
  /** `undefined` cells (rows another series carried). */
  undefinedCells: number;
  /** Rows of each frame, and the times of its first and last row. */
  rows: number[];
  spans: Array<[number | null, number | null]>;
  frameTypes: string[];
  structureRev?: number;
  errors: string[];
}

export const renders: Render[] = [];
const MAX_RENDERS = 5000;
const started = performance.now();

export function describeData(data: PanelData): Render {
  const frames: DataFrame[] = data.series;
  const names: string[] = [];
  let series = 0;
  let nullsInSpan = 0;
  let undefinedCells = 0;
  for (const frame of frames) {
    for (const field of frame.fields) {
      if (field.type !== FieldType.number) {
        continue;
      }
      series++;
      names.push(getFieldDisplayName(field, frame, frames));
      const values = field.values;
      let first = -1;
      let last = -1;
      for (let i = 0; i < values.length; i++) {
        if (values[i] != null) {
          if (first < 0) {
            first = i;
          }
          last = i;
        }
      }
      for (let i = 0; i < values.length; i++) {
        if (values[i] === undefined) {
          undefinedCells++;
        } else if (values[i] === null && i > first && i < last) {
          nullsInSpan++;
        }
      }
    }
  }
  return {
    at: Math.round(performance.now() - started),
    state: String(data.state),
    refIds: frames.map((f) => f.refId ?? ''),
    series,
    names,
    nullsInSpan,
    undefinedCells,
    rows: frames.map((f) => f.length),
    spans: frames.map((f) => {
      const t = f.fields.find((x) => x.type === FieldType.time)?.values ?? [];
      return [t.length ? t[0] : null, t.length ? t[t.length - 1] : null];
    }),
    frameTypes: frames.map((f) => String(f.meta?.type ?? '')),
    structureRev: data.structureRev,
    errors: (data.errors ?? []).map((e) => e.message ?? ''),
  };
}

function RecordingTimeSeries(props: PanelProps) {
  const { data, timeRange, timeZone, width, height } = props;
  renders.push(describeData(data));
  if (renders.length > MAX_RENDERS) {
    renders.splice(0, renders.length - MAX_RENDERS);
  }
  if (!data.series.length) {
    return <div className="panel-empty">No data</div>;
  }
  return (
    <TimeSeries
      frames={data.series}
      structureRev={data.structureRev}
      timeRange={timeRange}
      timeZone={timeZone}
      width={width}
      height={height}
      legend={{ displayMode: LegendDisplayMode.List, placement: 'bottom', showLegend: true, calcs: [] }}
    />
  );
}

/** Field config as the time series panel declares it: classic palette colours by default. */
export const panelPlugin = new PanelPlugin(RecordingTimeSeries).useFieldConfig({
  standardOptions: { [FieldConfigProperty.Color]: { defaultValue: { mode: FieldColorModeId.PaletteClassic } } },
});
