/** How the wire names fields, read back: shared by the plugin (frames.ts) and the live view. */
import type { StoreField } from './FrameStore';

/**
 * A field's name as published: the wire names a labelled field `name {k="v",...}` (labels sorted
 * by key, protocol.md "Channels") to keep it unique; with its labels beside it, Grafana wants `name`.
 */
export function publishedName(f: Pick<StoreField, 'name' | 'labels'>): string {
  const labels = f.labels;
  if (!labels) {
    return f.name;
  }
  const keys = Object.keys(labels).sort();
  if (!keys.length) {
    return f.name;
  }
  const suffix = ` {${keys.map((k) => `${k}="${labels[k]}"`).join(',')}}`;
  return f.name.length > suffix.length && f.name.endsWith(suffix) ? f.name.slice(0, -suffix.length) : f.name;
}

/** Labels as Prometheus and Grafana write them: `{cpu="0", host="a"}` (keys sorted). */
export function labelText(labels: Record<string, string> | undefined): string {
  const keys = Object.keys(labels ?? {}).sort();
  return keys.length ? `{${keys.map((k) => `${k}="${labels![k]}"`).join(', ')}}` : '';
}
