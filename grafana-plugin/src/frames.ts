/**
 * The Grafana face of a FrameStore (store/FrameStore.ts): what the plugin emits for one query.
 * The store does the merging; this only shows it as Grafana frames and names their fields.
 */
import { DataFrame, DataFrameJSON, FieldType, StreamingDataFrame, StreamingFrameAction } from '@grafana/data';

import { FrameStore } from './store/FrameStore';

/**
 * A `StreamingDataFrame` whose fields are the store's columns (the same arrays, not copies).
 *
 * It stays one object for the life of a query, and its `packetInfo` says what changed:
 * Grafana's panel query runner re-applies field config only when `schemaChanged` is set, so a
 * packet that only brought rows costs the panel no more than a redraw. The frame's own trimming
 * is off: the store trims.
 */
export class FrameView {
  readonly frame: StreamingDataFrame;
  private schemaSeen = -1;

  constructor(readonly store: FrameStore) {
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
    const { store, frame } = this;
    const schemaChanged = store.schemaVersion !== this.schemaSeen;
    if (schemaChanged) {
      this.schemaSeen = store.schemaVersion;
      // Field types are the protocol's strings, which are Grafana's FieldType values.
      frame.push({ schema: { fields: store.schema(), meta: store.meta } } as DataFrameJSON);
    }
    frame.pushNewValues([store.times, ...store.columns]);
    frame.packetInfo.schemaChanged = schemaChanged;
    frame.resetStateCalculations();
    return frame;
  }
}

/**
 * Alias: with `{{...}}` it is a legend format per field (`{{__name__}}` or `{{field}}` is the field
 * name, any other key a label); plain text names the only value field, or prefixes each field.
 */
export function applyAlias(frame: DataFrame, alias: string | undefined): void {
  const valueFields = frame.fields.filter((f) => f.type !== FieldType.time);
  for (const f of valueFields) {
    let name: string | undefined;
    if (!alias) {
      name = undefined;
    } else if (alias.includes('{{')) {
      const labels: Record<string, string> = { __name__: f.name, field: f.name, ...(f.labels ?? {}) };
      name = alias.replace(/\{\{\s*([^}\s]+)\s*\}\}/g, (_m, k: string) => labels[k] ?? '');
    } else {
      name = valueFields.length === 1 ? alias : `${alias} ${f.name}`;
    }
    if (name === undefined) {
      if (f.config.displayNameFromDS !== undefined) {
        f.config = { ...f.config, displayNameFromDS: undefined };
      }
    } else if (f.config.displayNameFromDS !== name) {
      f.config = { ...f.config, displayNameFromDS: name };
    }
  }
}
