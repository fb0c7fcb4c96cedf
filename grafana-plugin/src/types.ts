import { DataQuery, DataSourceJsonData } from '@grafana/schema';

import type { ParamValue } from './client/protocol';

export type { ParamValue };

export interface LiveQuery extends DataQuery {
  /** Channel name, e.g. `random-walk` or `sensors/kitchen`. Template variables allowed. */
  channel: string;
  /** Params of a generated channel (`series`, `interval`, `spread`, `period`). */
  params: Record<string, ParamValue>;
  /** Only these fields (by frame name); empty: all. */
  fields: string[];
  /** Display name: plain text names the frame; with `{{...}}` it is a legend format per field. */
  alias?: string;
  /** Server-side batching interval, ms; default: the data source's throttle. */
  interval?: number;
}

export type Transport = 'ws' | 'http';
export type Access = 'direct' | 'proxy';

export interface LiveOptions extends DataSourceJsonData {
  /** Base URL of `livedata serve`, e.g. `http://localhost:8080`. */
  url: string;
  transport: Transport;
  /** direct: the browser talks to the URL; proxy: through Grafana (token added by the route). */
  access: Access;
  /** At most one panel update per this many ms (default 100). */
  throttleMs: number;
  /** Points kept per query (default 10000). */
  maxPoints: number;
}

export interface LiveSecureOptions {
  token?: string;
}

export const DEFAULT_THROTTLE_MS = 100;
export const DEFAULT_MAX_POINTS = 10_000;
export const DEFAULT_URL = 'http://localhost:8080';

export const DEFAULT_OPTIONS: LiveOptions = {
  url: DEFAULT_URL,
  transport: 'ws',
  access: 'direct',
  throttleMs: DEFAULT_THROTTLE_MS,
  maxPoints: DEFAULT_MAX_POINTS,
};

export const DEFAULT_QUERY: Partial<LiveQuery> = {
  channel: 'random-walk',
  params: {},
  fields: [],
  alias: '',
};

/** Params each generated channel accepts (protocol.md, "Generated channels"). */
export const GENERATED_PARAMS: Record<string, string[]> = {
  'random-walk': ['series', 'interval', 'spread'],
  sine: ['series', 'interval', 'period'],
};

export const ALL_PARAMS = ['series', 'interval', 'spread', 'period'];

/** jsonData with defaults filled in. */
export function withDefaults(jsonData: Partial<LiveOptions> | undefined): LiveOptions {
  const j = jsonData ?? {};
  return {
    ...j,
    url: j.url || DEFAULT_URL,
    transport: j.transport === 'http' ? 'http' : 'ws',
    access: j.access === 'proxy' ? 'proxy' : 'direct',
    throttleMs: positive(j.throttleMs, DEFAULT_THROTTLE_MS),
    maxPoints: positive(j.maxPoints, DEFAULT_MAX_POINTS),
  };
}

function positive(v: unknown, dflt: number): number {
  const n = typeof v === 'string' ? Number(v) : v;
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : dflt;
}
