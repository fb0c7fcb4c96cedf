/**
 * Message shapes of the livedata wire protocol (docs/protocol.md). Framework-free: no Grafana
 * imports, so the live view page can reuse this client.
 */

/** Grafana `DataFrameJSON`, as much of it as the protocol uses. */
export interface FrameFieldSchema {
  name: string;
  type?: string;
  labels?: Record<string, string>;
  config?: Record<string, unknown>;
}

export interface FrameJSON {
  schema?: { refId?: string; name?: string; fields: FrameFieldSchema[]; meta?: Record<string, unknown> };
  data?: { values: unknown[][] };
}

/** Epoch milliseconds or a Grafana relative time (`now-5m`). */
export type TimeSpec = number | string;

export type ParamValue = string | number | boolean;

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
}

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
  /** The subscription ended with an error (bad request, unauthorized, ...). */
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

export function parseServerMessage(text: string): ServerMessage | undefined {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!obj || typeof obj !== 'object' || typeof (obj as { type?: unknown }).type !== 'string') {
    return undefined;
  }
  return obj as ServerMessage;
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
