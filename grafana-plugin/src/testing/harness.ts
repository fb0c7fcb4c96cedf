/** Helpers shared by the tests: instance settings, requests, a recording WebSocket, waiting. */
import {
  DataQueryRequest,
  DataQueryResponse,
  DataSourceInstanceSettings,
  DataSourcePluginMeta,
  FieldType,
  LoadingState,
  StreamingDataFrame,
  dateMath,
  dateTime,
} from '@grafana/data';
import { Observable } from 'rxjs';
import WebSocket from 'ws';

import type { WebSocketCtor, WebSocketLike } from '../client';
import { LiveOptions, LiveQuery } from '../types';

export function instanceSettings(
  jsonData: Partial<LiveOptions>,
  extra: Partial<DataSourceInstanceSettings<LiveOptions>> = {}
): DataSourceInstanceSettings<LiveOptions> {
  return {
    id: 1,
    uid: 'livedata-test',
    type: 'livedata-streaming-datasource',
    name: 'livedata',
    access: 'proxy',
    readOnly: false,
    meta: { id: 'livedata-streaming-datasource' } as DataSourcePluginMeta<LiveOptions>,
    jsonData: { url: 'http://127.0.0.1:1', transport: 'ws', access: 'direct', throttleMs: 0, maxPoints: 100000, ...jsonData },
    ...extra,
  };
}

let nextRequest = 0;

/** A query request over a range: `from`/`to` as Grafana relative strings or epoch ms. */
export function makeRequest(
  targets: Array<Partial<LiveQuery>>,
  range: { from: string | number; to: string | number } = { from: 'now-10s', to: 'now' },
  extra: Partial<DataQueryRequest<LiveQuery>> = {}
): DataQueryRequest<LiveQuery> {
  const parse = (v: string | number, roundUp: boolean) =>
    typeof v === 'number' ? dateTime(v) : (dateMath.parse(v, roundUp) ?? dateTime());
  const from = parse(range.from, false);
  const to = parse(range.to, true);
  const raw = {
    from: typeof range.from === 'number' ? dateTime(range.from) : range.from,
    to: typeof range.to === 'number' ? dateTime(range.to) : range.to,
  };
  return {
    requestId: `Q${++nextRequest}`,
    interval: '1s',
    intervalMs: 1000,
    range: { from, to, raw },
    rangeRaw: raw,
    scopedVars: {},
    targets: targets.map((t, i) => ({
      refId: String.fromCharCode(65 + i),
      channel: 'random-walk',
      params: {},
      fields: [],
      ...t,
    })) as LiveQuery[],
    timezone: 'browser',
    app: 'dashboard',
    startTime: Date.now(),
    ...extra,
  };
}

export interface SocketRecord {
  url: string;
  socket: WebSocket;
  sent: Array<Record<string, unknown>>;
  received: Array<Record<string, unknown>>;
}

/** The `ws` package behind the WebSocketLike interface, recording every socket and message. */
export function recordingWebSocket(): { Ctor: WebSocketCtor; sockets: SocketRecord[]; sent: () => Array<Record<string, unknown>> } {
  const sockets: SocketRecord[] = [];
  class Recording implements WebSocketLike {
    private readonly ws: WebSocket;
    private readonly rec: SocketRecord;
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: { data: unknown }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;

    constructor(url: string) {
      this.ws = new WebSocket(url);
      this.rec = { url, socket: this.ws, sent: [], received: [] };
      sockets.push(this.rec);
      this.ws.on('open', () => this.onopen?.({}));
      this.ws.on('message', (data: Buffer, isBinary: boolean) => {
        const text = isBinary ? data : data.toString();
        try {
          this.rec.received.push(JSON.parse(String(text)));
        } catch {
          // not JSON
        }
        this.onmessage?.({ data: text });
      });
      this.ws.on('close', (code: number, reason: Buffer) => this.onclose?.({ code, reason: reason.toString() }));
      this.ws.on('error', (err) => this.onerror?.(err));
    }

    get readyState(): number {
      return this.ws.readyState;
    }

    send(data: string): void {
      this.rec.sent.push(JSON.parse(data));
      this.ws.send(data);
    }

    close(code?: number, reason?: string): void {
      if (this.ws.readyState === WebSocket.CONNECTING) {
        this.ws.terminate();
        return;
      }
      this.ws.close(code, reason);
    }
  }
  return { Ctor: Recording, sockets, sent: () => sockets.flatMap((s) => s.sent) };
}

export interface Snapshot {
  /** The response's key: one for all the queries of a `query()` call (panel.ts). */
  key?: string;
  state?: LoadingState;
  /** The first frame's rows, times, field names, display names and notices. */
  length: number;
  times: number[];
  fields: string[];
  displayNames: Array<string | undefined>;
  notices: string[];
  /** The (first) error's message and the refIds of every error. */
  error?: string;
  errorRefIds: string[];
  /** The refIds of the frames, in order. */
  refIds: string[];
  /** The same for the first frame of each refId (the response's key, state and error as above). */
  byRefId: Record<string, Snapshot>;
  at: number;
}

/** A copy of what a response showed at the moment it was emitted (frames are mutated in place). */
export function snapshot(resp: DataQueryResponse): Snapshot {
  const frames = resp.data as StreamingDataFrame[];
  const byRefId: Record<string, Snapshot> = {};
  for (const frame of frames) {
    if (frame.refId !== undefined && !(frame.refId in byRefId)) {
      byRefId[frame.refId] = frameSnapshot(resp, frame, {});
    }
  }
  return frameSnapshot(resp, frames[0], byRefId);
}

function frameSnapshot(resp: DataQueryResponse, frame: StreamingDataFrame | undefined, byRefId: Record<string, Snapshot>): Snapshot {
  const timeField = frame?.fields.find((f) => f.type === FieldType.time);
  const errors = resp.errors ?? (resp.error ? [resp.error] : []);
  return {
    key: resp.key,
    state: resp.state,
    length: frame?.length ?? 0,
    times: timeField ? [...(timeField.values as number[])] : [],
    fields: frame ? frame.fields.map((f) => f.name) : [],
    displayNames: frame ? frame.fields.map((f) => f.config?.displayNameFromDS) : [],
    notices: (frame?.meta?.notices ?? []).map((n) => n.text),
    error: resp.error?.message ?? errors[0]?.message,
    errorRefIds: errors.map((e) => e.refId ?? ''),
    refIds: (resp.data as StreamingDataFrame[]).map((f) => f.refId ?? ''),
    byRefId,
    at: Date.now(),
  };
}

export interface Collector {
  responses: DataQueryResponse[];
  snapshots: Snapshot[];
  /** The last snapshot; with a refId, that of the first frame of that query in the last response that had one. */
  last: (refId?: string) => Snapshot | undefined;
  unsubscribe: () => void;
  completed: () => boolean;
}

export function collect(obs: Observable<DataQueryResponse>): Collector {
  const responses: DataQueryResponse[] = [];
  const snapshots: Snapshot[] = [];
  let done = false;
  const sub = obs.subscribe({
    next: (r) => {
      responses.push(r);
      snapshots.push(snapshot(r));
    },
    complete: () => (done = true),
    error: () => (done = true),
  });
  const last = (refId?: string) => {
    for (let i = snapshots.length - 1; i >= 0; i--) {
      const s = refId === undefined ? snapshots[i] : snapshots[i].byRefId[refId];
      if (s) {
        return s;
      }
    }
    return undefined;
  };
  return {
    responses,
    snapshots,
    last,
    unsubscribe: () => sub.unsubscribe(),
    completed: () => done,
  };
}

export async function waitFor<T>(fn: () => T | undefined | false | null, what: string, timeoutMs = 10000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) {
      return v;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function isSorted(times: number[], strict = true): boolean {
  for (let i = 1; i < times.length; i++) {
    if (strict ? times[i] <= times[i - 1] : times[i] < times[i - 1]) {
      return false;
    }
  }
  return true;
}

export function serverUrl(): string {
  const url = process.env.LIVEDATA_URL;
  if (!url) {
    throw new Error('LIVEDATA_URL is not set: the integration tests run under jest globalSetup');
  }
  return url;
}

/** `POST /api/push/{channel}` with JSON points. */
export async function push(url: string, channel: string, points: unknown): Promise<void> {
  const resp = await fetch(`${url}/api/push/${channel}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(points),
  });
  if (!resp.ok) {
    throw new Error(`push to ${channel} failed: HTTP ${resp.status} ${await resp.text()}`);
  }
}

export function uniqueChannel(prefix: string): string {
  return `test/${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}
