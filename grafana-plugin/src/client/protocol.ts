/**
 * The livedata wire protocol (docs/protocol.md): the one definition of every message and value
 * type, used by the Grafana plugin, the live view page and the tests. Framework-free: no Grafana
 * imports, so the live view page can reuse this client. Messages from the server are checked by
 * `parseServerMessage` (parse.ts) before anything reads them.
 */

/** A param of a generated channel (`series`, `interval`, `spread`, `period`). */
export type ParamValue = string | number | boolean;

/** Epoch milliseconds or a Grafana relative time (`now-5m`). */
export type TimeSpec = number | string;

/** One field of a channel's schema (a frame's `schema.fields` entry). */
export interface FrameFieldSchema {
  name: string;
  type?: string;
  labels?: Record<string, string>;
  config?: Record<string, unknown>;
}

/** Replaced cells of one column (DataFrameJSON `entities`): row indexes per special value. */
export interface FieldValueEntities {
  NaN?: number[];
  Inf?: number[];
  NegInf?: number[];
  Undef?: number[];
}

/** Grafana `DataFrameJSON`, as much of it as the protocol uses. */
export interface FrameJSON {
  schema?: { refId?: string; name?: string; fields: FrameFieldSchema[]; meta?: Record<string, unknown> };
  data?: { values: unknown[][]; entities?: Array<FieldValueEntities | null> };
}

/** `GET /api/channels`: one entry per channel. */
export interface ChannelInfo {
  name: string;
  schema?: FrameFieldSchema[];
  last_time?: number | null;
  points_per_s?: number;
  points?: number;
  generated?: boolean;
  /** The source (MQTT, upstream stream) that writes this channel, if any. */
  source?: string;
  /** Params of a generated channel, defaults included (also for a base not started yet). */
  params?: Record<string, ParamValue>;
}

// --- client → server ------------------------------------------------------------------------------

/** What a subscription asks for; the client adds `type` and `id`. */
export interface SubscribeRequest {
  channel: string;
  params?: Record<string, ParamValue>;
  from?: TimeSpec;
  to?: TimeSpec;
  since?: string;
  fields?: string[];
  /** Coalesce into one message per interval, ms (0..60000). */
  interval?: number;
  /** Buckets instead of raw points: at most this many over `from`..`to` (docs/protocol.md). */
  max_points?: number;
  /** Buckets of at least this many ms. */
  resolution_ms?: number;
}

export interface SubscribeMessage extends SubscribeRequest {
  type: 'subscribe';
  id: string;
}

export interface UnsubscribeMessage {
  type: 'unsubscribe';
  id: string;
}

export interface PublishMessage {
  type: 'publish';
  channel: string;
  points: unknown;
  ack?: string;
}

export interface AuthMessage {
  type: 'auth';
  token: string;
}

export interface PingMessage {
  type: 'ping';
}

export type ClientMessage = SubscribeMessage | UnsubscribeMessage | PublishMessage | AuthMessage | PingMessage;

/**
 * The `subscribe` message for a request, resuming after `since` when given: `since` takes
 * precedence over `from` (both carriers send only one of them); empty params and fields are left out.
 */
export function subscribeMessage(id: string, req: SubscribeRequest, since = req.since): SubscribeMessage {
  const msg: SubscribeMessage = { type: 'subscribe', id, channel: req.channel };
  if (req.params && Object.keys(req.params).length) {
    msg.params = req.params;
  }
  if (since) {
    msg.since = since;
  } else if (req.from !== undefined) {
    msg.from = req.from;
  }
  if (req.to !== undefined) {
    msg.to = req.to;
  }
  if (req.fields && req.fields.length) {
    msg.fields = req.fields;
  }
  if (req.interval !== undefined) {
    msg.interval = req.interval;
  }
  if (req.max_points !== undefined) {
    msg.max_points = req.max_points;
  }
  if (req.resolution_ms !== undefined) {
    msg.resolution_ms = req.resolution_ms;
  }
  if (since && req.from !== undefined && (msg.max_points !== undefined || msg.resolution_ms !== undefined)) {
    msg.from = req.from; // buckets: the range to send again should the position be lost
  }
  return msg;
}

// --- server → client ------------------------------------------------------------------------------

export interface HelloMessage {
  type: 'hello';
  version: string;
  time: number;
  heartbeat_ms: number;
}

export interface DataMessage {
  type: 'data';
  id: string;
  position?: string | null;
  late?: boolean;
  /** An aggregated subscription's bucket width: its rows replace the rows held at the same times. */
  bucket_ms?: number;
  frame: FrameJSON;
}

export interface CompleteMessage {
  type: 'complete';
  id: string;
}

export interface ErrorMessage {
  type: 'error';
  id?: string;
  message: string;
  ack?: string;
}

export interface NoticeMessage {
  type: 'notice';
  id?: string;
  level: 'info' | 'warning' | 'error' | string;
  text: string;
  lost?: number;
}

export interface HeartbeatMessage {
  type: 'heartbeat';
  time: number;
}

export interface PongMessage {
  type: 'pong';
  time: number;
}

export interface AckMessage {
  type: 'ack';
  ack: string;
}

export interface AuthOkMessage {
  type: 'auth';
  ok: boolean;
}

export type ServerMessage =
  | HelloMessage
  | DataMessage
  | CompleteMessage
  | ErrorMessage
  | NoticeMessage
  | HeartbeatMessage
  | PongMessage
  | AckMessage
  | AuthOkMessage;

// --- what a subscriber sees -----------------------------------------------------------------------

/** Connection state of one subscription, as its handlers see it. */
export type StreamStatus =
  | { state: 'connecting' }
  | { state: 'open' }
  | { state: 'reconnecting'; attempt: number; delayMs: number; reason: string }
  /** Resubscribed after a reconnect; `recovered` rows arrived until it caught up. */
  | { state: 'resumed'; recovered: number; since?: string };

export interface SubscriptionHandlers {
  /** Every `data` message, in order. */
  onData(msg: DataMessage): void;
  /** A finite subscription reached its `to`. */
  onComplete?(): void;
  /** The subscription ended with an error (bad request, unauthorized, a malformed message, ...). */
  onError?(message: string): void;
  /** A server `notice` (e.g. points lost beyond retention). */
  onNotice?(notice: NoticeMessage): void;
  /** Connection state changes: reconnecting, resumed. */
  onStatus?(status: StreamStatus): void;
}

/** Both carriers (WebSocket, NDJSON over fetch) implement this. */
export interface StreamTransport {
  subscribe(req: SubscribeRequest, handlers: SubscriptionHandlers): () => void;
}

/** Number of rows in a frame message. */
export function frameRows(frame: FrameJSON | undefined): number {
  const values = frame?.data?.values;
  return values && values.length ? (values[0]?.length ?? 0) : 0;
}

/** The largest time in a frame message (the time column is the schema's `time` field, else column 0). */
export function frameLastTime(frame: FrameJSON | undefined, timeIndex = 0): number | undefined {
  const col = frame?.data?.values?.[timeIndex];
  if (!col || !col.length) {
    return undefined;
  }
  const t = col[col.length - 1];
  return typeof t === 'number' ? t : undefined;
}
