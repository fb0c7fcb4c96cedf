/**
 * The plugin test harness: a page that plays Grafana's part for the built plugin. It provides the
 * real `@grafana/data`, `rxjs` and `react` (bundled here) and a thin `@grafana/runtime` to a tiny
 * AMD loader, loads the shipped `module.js`, constructs the `DataSource` with instance settings
 * pointing at a real `livedata serve` and runs `query()` in the browser. The browser tests
 * (tests/browser/test_harness.py) drive it through `window.harness`.
 */
import * as grafanaData from '@grafana/data';
import * as React from 'react';
import * as rxjs from 'rxjs';
import * as rxjsOperators from 'rxjs/operators';

import { installAmd } from './amd';
import { runtime } from './runtime';

const { dateMath, dateTime, FieldType } = grafanaData;

type Json = Record<string, unknown>;

interface Emission {
  /** ms since the run started. */
  at: number;
  /** Emitted inside `subscribe()`, before any network message could arrive. */
  sync: boolean;
  /** WebSocket messages received between the start of the run and this emission. */
  messages: number;
  state: string;
  rows: number;
  firstTime: number | null;
  lastTime: number | null;
  times?: number[];
  notices: string[];
  error: string | null;
}

interface Run {
  id: number;
  start: number;
  emissions: Emission[];
  sub: rxjs.Subscription | null;
  complete: boolean;
  keepTimes: boolean;
  /** `receivedTotal` when the run started. */
  messages0: number;
}

/** `@grafana/ui` components are used only when Grafana renders the editors; never here. */
const ui = new Proxy(
  {},
  {
    get: (_t, name) => (name === '__esModule' ? false : () => null),
  }
);

// --- WebSocket recording: what the data source sends and receives ---------------------------------

const sent: Json[] = [];
const received: Record<string, number> = {};
let receivedTotal = 0;
const sockets: WebSocket[] = [];
const NativeWebSocket = window.WebSocket;

class RecordingWebSocket extends NativeWebSocket {
  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, protocols);
    sockets.push(this);
    this.addEventListener('message', (ev: MessageEvent) => {
      receivedTotal++;
      try {
        const msg = JSON.parse(String(ev.data)) as Json;
        const key = `${String(msg.type)}:${String(msg.id ?? '')}`;
        received[key] = (received[key] ?? 0) + 1;
      } catch {
        // not JSON
      }
    });
  }

  override send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    try {
      sent.push({ ...(JSON.parse(String(data)) as Json), at: performance.now() });
    } catch {
      // not JSON
    }
    super.send(data);
  }
}
window.WebSocket = RecordingWebSocket;

// --- the plugin ---------------------------------------------------------------------------------

const load = installAmd({
  '@grafana/data': grafanaData,
  '@grafana/runtime': runtime,
  '@grafana/ui': ui,
  '@grafana/schema': {},
  react: React,
  rxjs,
  'rxjs/operators': rxjsOperators,
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDataSource = any;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type DataSourceCtor = new (settings: any) => AnyDataSource;

const state: {
  loaded: boolean;
  error: string | null;
  DataSource?: DataSourceCtor;
  sources: AnyDataSource[];
  runs: Run[];
} = { loaded: false, error: null, sources: [], runs: [] };

const ready = load('plugin/module.js')
  .then((exports) => {
    const plugin = (exports as { plugin?: { DataSourceClass?: DataSourceCtor } }).plugin;
    if (!plugin?.DataSourceClass) {
      throw new Error('module.js did not export a DataSourcePlugin as `plugin`');
    }
    state.DataSource = plugin.DataSourceClass;
    state.loaded = true;
  })
  .catch((err: unknown) => {
    state.error = err instanceof Error ? err.message : String(err);
    throw err;
  });

function instanceSettings(jsonData: Json) {
  return {
    id: 1,
    uid: 'livedata-harness',
    type: 'livedata-streaming-datasource',
    name: 'livedata',
    access: 'direct',
    readOnly: false,
    meta: { id: 'livedata-streaming-datasource', info: {} },
    jsonData: { transport: 'ws', access: 'direct', throttleMs: 100, maxPoints: 100_000, ...jsonData },
  };
}

let nextRequest = 0;

function makeRequest(targets: Json[], range: { from: string; to: string }) {
  const from = dateMath.parse(range.from, false) ?? dateTime();
  const to = dateMath.parse(range.to, true) ?? dateTime();
  const raw = { from: range.from, to: range.to };
  return {
    requestId: `H${++nextRequest}`,
    interval: '1s',
    intervalMs: 1000,
    range: { from, to, raw },
    rangeRaw: raw,
    scopedVars: {},
    targets: targets.map((t, i) => ({ refId: String.fromCharCode(65 + i), params: {}, fields: [], ...t })),
    timezone: 'browser',
    app: 'dashboard',
    startTime: Date.now(),
    maxDataPoints: 1000,
  };
}

function summarize(resp: grafanaData.DataQueryResponse, run: Run, sync: boolean): Emission {
  const frame = resp.data?.[0] as grafanaData.DataFrame | undefined;
  const timeField = frame?.fields.find((f) => f.type === FieldType.time);
  const times = (timeField?.values ?? []) as number[];
  const notices = (frame?.meta?.notices ?? []).map((n) => n.text);
  return {
    at: performance.now() - run.start,
    sync,
    messages: receivedTotal - run.messages0,
    state: String(resp.state),
    rows: frame?.length ?? 0,
    firstTime: times.length ? times[0] : null,
    lastTime: times.length ? times[times.length - 1] : null,
    times: run.keepTimes ? [...times] : undefined,
    notices,
    error: resp.error?.message ?? null,
  };
}

const harness = {
  ready,
  get loaded() {
    return state.loaded;
  },
  get error() {
    return state.error;
  },
  /** A data source for the server at `url`; returns its index. */
  createDataSource(jsonData: Json): number {
    if (!state.DataSource) {
      throw new Error(`the plugin is not loaded: ${state.error ?? 'still loading'}`);
    }
    state.sources.push(new state.DataSource(instanceSettings(jsonData)));
    return state.sources.length - 1;
  },
  /** Start `ds.query()` for `targets`; returns the run's index. */
  run(ds: number, targets: Json[], range = { from: 'now-1m', to: 'now' }, keepTimes = false): number {
    const source = state.sources[ds];
    const run: Run = {
      id: state.runs.length,
      start: performance.now(),
      emissions: [],
      sub: null,
      complete: false,
      keepTimes,
      messages0: receivedTotal,
    };
    state.runs.push(run);
    let subscribing = true;
    const obs = source.query(makeRequest(targets, range)) as rxjs.Observable<grafanaData.DataQueryResponse>;
    run.sub = obs.subscribe({
      next: (resp) => run.emissions.push(summarize(resp, run, subscribing)),
      error: (err: unknown) => {
        run.emissions.push({ at: performance.now() - run.start, sync: subscribing, messages: receivedTotal - run.messages0, state: 'Error', rows: 0,
          firstTime: null, lastTime: null, notices: [], error: String(err) });
        run.complete = true;
      },
      complete: () => {
        run.complete = true;
      },
    });
    subscribing = false;
    return run.id;
  },
  stop(run: number): void {
    state.runs[run]?.sub?.unsubscribe();
  },
  emissions(run: number, from = 0): Emission[] {
    return state.runs[run]?.emissions.slice(from) ?? [];
  },
  count(run: number): number {
    return state.runs[run]?.emissions.length ?? 0;
  },
  last(run: number): Emission | null {
    const e = state.runs[run]?.emissions;
    return e && e.length ? e[e.length - 1] : null;
  },
  sent(type?: string): Json[] {
    return sent.filter((m) => !type || m.type === type);
  },
  received(): Record<string, number> {
    return { ...received };
  },
  sockets(): Array<{ url: string; readyState: number }> {
    return sockets.map((s) => ({ url: s.url, readyState: s.readyState }));
  },
  cache(ds: number): Array<{ key: string; rows: number; position: string | null; active: boolean }> {
    type Entry = { store: { length: number; position?: string }; active: boolean };
    const cache = state.sources[ds]?.cache as { entries(): IterableIterator<[string, Entry]> } | undefined;
    return [...(cache?.entries() ?? [])].map(([key, e]) => ({
      key,
      rows: e.store.length,
      position: e.store.position ?? null,
      active: e.active,
    }));
  },
};

(window as unknown as { harness: typeof harness }).harness = harness;
