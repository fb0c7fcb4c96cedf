/**
 * The Grafana face of a FrameStore (store/FrameStore.ts): what the plugin emits for one query.
 * The store does the merging; this shows it as a Grafana frame and names its fields so that
 * Grafana's display-name logic (`getFieldDisplayName`) gives legends that are unique and meaningful
 * across the queries of a panel.
 *
 * The frame (docs/protocol.md, "Frames in Grafana"):
 * - one wide frame per query, `meta.type` `timeseries-wide` (Grafana's data plane, version 0.1):
 *   the time field, then one field per channel field, in schema order;
 * - `name` the channel (or the alias, when it is plain text), `refId` the query's;
 * - fields named as published (`usage_user`), their tags as `labels` (`{host: "a"}`): Grafana
 *   builds `usage_user a` or `cpu usage_user {host="a", cpu="0"}` from them as it does for
 *   Prometheus or InfluxDB, adding the frame name when a panel has several queries;
 * - a cell a row did not carry is `undefined` (never `null`): Grafana's time series panel draws a
 *   line through it, as through the rows of another series, where a `null` would break the line.
 */
import {
  DataFrame,
  DataFrameJSON,
  DataFrameType,
  FieldType,
  QueryResultMeta,
  StreamingDataFrame,
  StreamingFrameAction,
  renderLegendFormat,
} from '@grafana/data';

import { FrameStore } from './store/FrameStore';
import { publishedName } from './store/names';

export { publishedName };
import type { LiveQuery } from './types';

/** The data plane type every frame of the plugin declares. */
export const FRAME_TYPE = DataFrameType.TimeSeriesWide;
export const FRAME_TYPE_VERSION: [number, number] = [0, 1];

/** What names a query's frame. */
export interface FrameNaming {
  /** The channel, as subscribed (`random-walk/series=3` for a generated one with params). */
  channel: string;
  refId: string;
  /** The query's alias (template variables already replaced); see `displayName`. */
  alias?: string;
  /** The frame's name, when the data source decided it (two queries of one channel); else `frameName`. */
  name?: string;
}

/**
 * A `StreamingDataFrame` whose fields are the store's columns (the same arrays, not copies).
 *
 * It stays one object for the life of a query, and its `packetInfo` says what changed:
 * Grafana's panel query runner re-applies field config only when `schemaChanged` is set, so a
 * packet that only brought rows costs the panel no more than a redraw. The frame's own trimming
 * is off: the store trims. Names and display names are worked out when the fields change, not
 * on every packet.
 */
export class FrameView {
  readonly frame: StreamingDataFrame;
  private schemaSeen = -1;

  constructor(
    readonly store: FrameStore,
    readonly naming: FrameNaming = { channel: '', refId: 'A' }
  ) {
    this.frame = StreamingDataFrame.empty({
      action: StreamingFrameAction.Replace,
      maxLength: Infinity,
      maxDelta: Infinity,
    });
  }

  /** The frames to emit, brought up to date with the store. */
  frames(): DataFrame[] {
    return [this.update()];
  }

  update(): StreamingDataFrame {
    const { store, frame, naming } = this;
    const schemaChanged = store.schemaVersion !== this.schemaSeen;
    if (schemaChanged) {
      this.schemaSeen = store.schemaVersion;
      // Field types are the protocol's strings, which are Grafana's FieldType values.
      const json: DataFrameJSON = {
        schema: {
          name: frameName(naming),
          refId: naming.refId,
          meta: { ...(store.meta as QueryResultMeta | undefined), type: FRAME_TYPE, typeVersion: FRAME_TYPE_VERSION },
          fields: grafanaFields(store, naming).map((f) => ({ ...f, type: f.type as FieldType })),
        },
      };
      frame.push(json);
      // StreamingDataFrame takes the refId from the schema but not the name.
      frame.name = json.schema?.name;
    }
    frame.pushNewValues([store.times, ...store.columns]);
    frame.packetInfo.schemaChanged = schemaChanged;
    frame.resetStateCalculations();
    return frame;
  }
}

/** The frame's name: the alias when it is plain text (no `{{...}}`), else the channel. */
export function frameName(naming: FrameNaming): string {
  if (naming.name) {
    return naming.name;
  }
  const alias = naming.alias?.trim();
  return alias && !isTemplate(alias) ? alias : naming.channel;
}

export function isTemplate(alias: string): boolean {
  return /\{\{.*?\}\}/.test(alias);
}

/** A field as Grafana gets it: its published name, its labels, `displayNameFromDS` from the alias. */
export interface GrafanaFieldSchema {
  name: string;
  type: string;
  labels?: Record<string, string>;
  config: Record<string, unknown>;
}

export function grafanaFields(store: Pick<FrameStore, 'timeField' | 'fields'>, naming: FrameNaming): GrafanaFieldSchema[] {
  const values = store.fields.map((f) => {
    const name = publishedName(f);
    // The server names a labelled field `name {k="v"}` (unique on the wire) and sets
    // displayNameFromDS to that; here the field has its own name and labels, so Grafana
    // composes the display name itself (and an alias can use `{{field}}`).
    const { displayNameFromDS: _server, ...config } = f.config ?? {};
    const out: GrafanaFieldSchema = { name, type: f.type, config };
    if (f.labels && Object.keys(f.labels).length) {
      out.labels = { ...f.labels };
    }
    return out;
  });
  const valueCount = values.filter((f) => f.type !== FieldType.time).length;
  for (const f of values) {
    const shown = displayName(naming, f, valueCount);
    if (shown !== undefined) {
      f.config.displayNameFromDS = shown;
    }
  }
  const t = store.timeField;
  return [{ name: t.name, type: FieldType.time, config: { ...(t.config ?? {}) } }, ...values];
}

/**
 * The display name an alias gives a field (`undefined`: none, Grafana composes it).
 *
 * - With `{{...}}` it is a legend format, rendered as Grafana renders Prometheus and Loki legend
 *   formats (`renderLegendFormat`): `{{channel}}`, `{{field}}` (also `{{__name__}}`), `{{refId}}`
 *   and any label, e.g. `{{host}}`; a label named like a built-in wins. An unknown name is
 *   written as is, as Grafana does.
 * - Plain text names the only value field, or prefixes each field when there are several.
 */
export function displayName(
  naming: FrameNaming,
  field: { name: string; labels?: Record<string, string> },
  valueFields: number
): string | undefined {
  const alias = naming.alias?.trim();
  if (!alias) {
    return undefined;
  }
  if (isTemplate(alias)) {
    const vars: Record<string, string> = {
      channel: naming.channel,
      refId: naming.refId,
      field: field.name,
      __name__: field.name,
      ...(field.labels ?? {}),
    };
    return renderLegendFormat(alias, vars);
  }
  return valueFields === 1 ? alias : `${alias} ${field.name}`;
}


/**
 * The channel a query reads, as the server publishes it: a generated channel with params is
 * `base/k=v/...`, the non-default params sorted by key (protocol.md, "Generated channels").
 * Params equal to the defaults are named anyway: the plugin does not know the server's defaults.
 */
export function channelName(query: Pick<LiveQuery, 'channel' | 'params'>): string {
  const params = Object.entries(query.params ?? {})
    .filter(([, v]) => v !== '' && v !== undefined && v !== null)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return params.length ? `${query.channel}/${params.map(([k, v]) => `${k}=${String(v)}`).join('/')}` : query.channel;
}

/**
 * The frame name of each query: its channel (or plain alias); queries that would share a name get
 * their refId after it (`random-walk (A)`, `random-walk (B)`), so Grafana's display names, which
 * add the frame name when a panel's frames are named differently, stay unique.
 */
export function frameNames(targets: LiveQuery[]): string[] {
  const names = targets.map((t) => frameName({ channel: channelName(t), refId: t.refId, alias: t.alias }));
  const count = new Map<string, number>();
  for (const n of names) {
    count.set(n, (count.get(n) ?? 0) + 1);
  }
  return names.map((n, i) => ((count.get(n) ?? 0) > 1 ? `${n} (${targets[i].refId})` : n));
}
