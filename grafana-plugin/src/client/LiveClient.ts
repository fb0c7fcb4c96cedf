import { Parsed, parseServerMessage, unknownTypeNotice } from './parse';
import { ClientMessage, ServerMessage, StreamTransport, SubscribeRequest, SubscriptionHandlers } from './protocol';
import { ReconnectCore } from './reconnect';
import { SubState } from './resume';
import { TimerHandle, Timers, realTimers } from './timers';
import { wsUrl } from './url';

/** The part of the WebSocket API the client uses: the browser's, or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketCtor = new (url: string) => WebSocketLike;

const OPEN = 1;

export interface LiveClientOptions {
  /** The server's base URL (`http://host:8080`) or its `ws://.../api/ws` URL. */
  url: string;
  /** Sent as `{"type":"auth"}` first when set. */
  token?: string;
  /** Defaults to `globalThis.WebSocket`; in Node pass the `ws` package's. */
  WebSocket?: WebSocketCtor;
  timers?: Timers;
  random?: () => number;
  backoffBaseMs?: number;
  /** Cap of the reconnect delay, ms (default 10 000). */
  backoffCapMs?: number;
  /** Keep the socket this long after the last subscription ends (default 0: close at once). */
  idleCloseMs?: number;
  /** After a reconnect, report "resumed" when nothing more arrived for this long (default 500). */
  resumeSettleMs?: number;
  /** Declare the server dead after this long without any message (default 2×heartbeat + 2 s). */
  deadAfterMs?: number;
  /** Errors that concern the socket rather than a subscription (and messages it could not read). */
  onSocketError?: (message: string) => void;
}

interface Sub {
  id: string;
  state: SubState;
  /** Sent on the current socket. */
  sent: boolean;
}

/**
 * One WebSocket to one livedata server, shared by reference-counted subscriptions.
 *
 * The socket opens with the first subscription and closes when the last one ends. When it drops,
 * the reconnect core (reconnect.ts) schedules the next attempt with backoff and jitter (capped at
 * 10 s), and every live subscription is sent again with `since` = the last position it received
 * (resume.ts), so only missing points travel.
 */
export class LiveClient implements StreamTransport {
  readonly url: string;
  private readonly opts: LiveClientOptions;
  private readonly timers: Timers;
  private readonly Ctor: WebSocketCtor;
  private readonly core: ReconnectCore;
  private readonly subs = new Map<string, Sub>();
  private nextId = 0;
  private socket: WebSocketLike | null = null;
  private idleTimer: TimerHandle | null = null;
  private opened = 0;

  constructor(opts: LiveClientOptions) {
    this.opts = opts;
    this.url = wsUrl(opts.url);
    this.timers = opts.timers ?? realTimers;
    const ctor = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!ctor) {
      throw new Error('no WebSocket implementation: pass options.WebSocket (e.g. the "ws" package in Node)');
    }
    this.Ctor = ctor;
    this.core = new ReconnectCore(
      { ...opts, timers: this.timers },
      {
        connect: () => {
          if (this.subs.size > 0 && !this.socket) {
            this.open();
          }
        },
        lost: (reason) => {
          const ws = this.socket;
          if (ws) {
            detach(ws);
            try {
              ws.close(4002, 'no heartbeat');
            } catch {
              // already closing
            }
            this.dropped(4002, reason);
          }
        },
      }
    );
  }

  /** Live subscriptions on this client. */
  get size(): number {
    return this.subs.size;
  }

  /** Whether a socket exists (open or connecting). */
  get connected(): boolean {
    return this.socket !== null;
  }

  /** How many sockets this client has opened so far. */
  get socketsOpened(): number {
    return this.opened;
  }

  subscribe(req: SubscribeRequest, handlers: SubscriptionHandlers): () => void {
    const id = `s${++this.nextId}`;
    const sub: Sub = { id, state: new SubState(req, handlers, this.timers, this.opts.resumeSettleMs ?? 500), sent: false };
    this.subs.set(id, sub);
    this.cancelIdleClose();
    if (this.socket && this.socket.readyState === OPEN) {
      this.sendSubscribe(sub);
    } else if (!this.socket && !this.core.waiting) {
      this.open();
    }
    let active = true;
    return () => {
      if (!active) {
        return;
      }
      active = false;
      this.end(sub, true);
    };
  }

  /** Close the socket and drop every subscription without calling their handlers. */
  close(): void {
    for (const sub of this.subs.values()) {
      sub.state.cancelResume();
    }
    this.subs.clear();
    this.closeSocket();
  }

  private end(sub: Sub, sendUnsubscribe: boolean): void {
    if (this.subs.get(sub.id) !== sub) {
      return;
    }
    this.subs.delete(sub.id);
    sub.state.cancelResume();
    if (sendUnsubscribe && sub.sent && this.socket?.readyState === OPEN) {
      this.send({ type: 'unsubscribe', id: sub.id });
    }
    if (this.subs.size === 0) {
      this.scheduleIdleClose();
    }
  }

  private open(): void {
    const ws = new this.Ctor(this.url);
    this.opened++;
    this.socket = ws;
    ws.onopen = () => {
      if (this.socket !== ws) {
        return;
      }
      if (this.opts.token) {
        this.send({ type: 'auth', token: this.opts.token });
      }
      const resumed = this.core.opened();
      for (const sub of this.subs.values()) {
        if (resumed) {
          sub.state.startResume(this.timers.now());
        }
        this.sendSubscribe(sub);
      }
    };
    ws.onmessage = (ev) => {
      if (this.socket !== ws) {
        return;
      }
      this.core.alive();
      const parsed = parseServerMessage(typeof ev.data === 'string' ? ev.data : String(ev.data));
      if (parsed.ok) {
        this.handle(parsed.msg);
      } else {
        this.invalid(parsed);
      }
    };
    ws.onerror = () => {
      // A close event follows; reconnecting is decided there.
    };
    ws.onclose = (ev) => {
      if (this.socket !== ws) {
        return;
      }
      this.dropped(ev.code, ev.reason);
    };
  }

  private handle(msg: ServerMessage): void {
    switch (msg.type) {
      case 'hello':
        this.core.hello(msg.heartbeat_ms);
        for (const sub of this.subs.values()) {
          sub.state.setCatchUp(msg.time);
        }
        return;
      case 'data': {
        const sub = this.subs.get(msg.id);
        if (sub) {
          this.core.progress();
          sub.state.data(msg);
        }
        return;
      }
      case 'complete': {
        const sub = this.subs.get(msg.id);
        if (sub) {
          this.end(sub, false);
          sub.state.handlers.onComplete?.();
        }
        return;
      }
      case 'error': {
        const sub = msg.id !== undefined ? this.subs.get(msg.id) : undefined;
        if (sub) {
          this.end(sub, false);
          sub.state.handlers.onError?.(msg.message);
        } else if (msg.id === undefined) {
          this.opts.onSocketError?.(msg.message);
        }
        return;
      }
      case 'notice': {
        const sub = msg.id !== undefined ? this.subs.get(msg.id) : undefined;
        if (sub) {
          sub.state.handlers.onNotice?.(msg);
        } else if (msg.id === undefined) {
          for (const s of this.subs.values()) {
            s.state.handlers.onNotice?.(msg);
          }
        }
        return;
      }
      default:
        // heartbeat, pong, ack, auth: liveness only (the dead timer was re-armed above).
        return;
    }
  }

  /**
   * A message that failed its check (parse.ts): an unknown type is a warning; a malformed message
   * ends the subscription it names (its data could no longer be trusted), else it is a socket error.
   */
  private invalid(p: Extract<Parsed, { ok: false }>): void {
    const sub = p.id !== undefined ? this.subs.get(p.id) : undefined;
    if (p.unknownType && sub) {
      sub.state.handlers.onNotice?.(unknownTypeNotice(p.error, p.id));
    } else if (!p.unknownType && sub) {
      this.end(sub, true);
      sub.state.handlers.onError?.(p.error);
    } else {
      this.opts.onSocketError?.(p.error);
    }
  }

  private sendSubscribe(sub: Sub): void {
    sub.sent = true;
    this.send(sub.state.subscribeMessage(sub.id));
  }

  private send(obj: ClientMessage): void {
    this.socket?.send(JSON.stringify(obj));
  }

  private dropped(code: number, reason: string): void {
    this.socket = null;
    for (const sub of this.subs.values()) {
      sub.sent = false;
      sub.state.cancelResume();
    }
    if (this.subs.size === 0) {
      this.core.stop();
      return;
    }
    if (code === 4001) {
      this.core.stop();
      const text = `unauthorized: ${reason || 'the server needs a read token'} (set the token in the data source settings)`;
      for (const sub of [...this.subs.values()]) {
        this.end(sub, false);
        sub.state.handlers.onError?.(text);
      }
      return;
    }
    const status = this.core.dropped(describeClose(code, reason));
    for (const sub of this.subs.values()) {
      sub.state.status(status);
    }
  }

  private scheduleIdleClose(): void {
    const ms = this.opts.idleCloseMs ?? 0;
    if (ms <= 0) {
      this.closeSocket();
      return;
    }
    this.cancelIdleClose();
    this.idleTimer = this.timers.setTimeout(() => {
      this.idleTimer = null;
      if (this.subs.size === 0) {
        this.closeSocket();
      }
    }, ms);
  }

  private cancelIdleClose(): void {
    if (this.idleTimer !== null) {
      this.timers.clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }

  private closeSocket(): void {
    this.cancelIdleClose();
    this.core.stop();
    const ws = this.socket;
    this.socket = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(1000, 'done');
      } catch {
        // already closed
      }
    }
  }
}

function detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = () => undefined;
}

function describeClose(code: number, reason: string): string {
  switch (code) {
    case 1001:
      return 'server going away';
    case 1006:
      return 'connection lost';
    case 1008:
      return `invalid message${reason ? `: ${reason}` : ''}`;
    case 4000:
      return 'too slow: the server dropped this client';
    default:
      return reason ? `closed (${code}): ${reason}` : `closed (${code})`;
  }
}
