import { parseServerMessage, unknownTypeNotice } from './parse';
import { ServerMessage, StreamTransport, SubscribeRequest, SubscriptionHandlers } from './protocol';
import { ReconnectCore } from './reconnect';
import { SubState } from './resume';
import { Timers, realTimers } from './timers';
import { streamUrl } from './url';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface HttpStreamClientOptions {
  /** The server's base URL, or Grafana's proxy path to it. */
  url: string;
  /** Sent as `Authorization: Bearer` (through Grafana's proxy the route adds it instead). */
  token?: string;
  fetch?: FetchLike;
  /** `same-origin` sends Grafana's session cookie through the proxy path. */
  credentials?: RequestCredentials;
  timers?: Timers;
  random?: () => number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  resumeSettleMs?: number;
  deadAfterMs?: number;
}

/**
 * NDJSON over fetch: one `GET /api/stream` per subscription, read with a ReadableStream. Same
 * handlers, and the same reconnect core (reconnect.ts) and resume bookkeeping (resume.ts) as the
 * WebSocket client, one of each per subscription.
 */
export class HttpStreamClient implements StreamTransport {
  private readonly timers: Timers;
  private readonly fetchImpl: FetchLike;

  constructor(private readonly opts: HttpStreamClientOptions) {
    this.timers = opts.timers ?? realTimers;
    const f = opts.fetch ?? (globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined);
    if (!f) {
      throw new Error('no fetch implementation available');
    }
    this.fetchImpl = f;
  }

  subscribe(req: SubscribeRequest, handlers: SubscriptionHandlers): () => void {
    const stream = new HttpSubscription(req, handlers, this.opts, this.timers, this.fetchImpl);
    stream.start();
    return () => stream.stop();
  }
}

class HttpSubscription {
  private readonly state: SubState;
  private readonly core: ReconnectCore;
  private abort: AbortController | null = null;
  private stopped = false;

  constructor(
    req: SubscribeRequest,
    private readonly handlers: SubscriptionHandlers,
    private readonly opts: HttpStreamClientOptions,
    private readonly timers: Timers,
    private readonly fetchImpl: FetchLike
  ) {
    this.state = new SubState(req, handlers, timers, opts.resumeSettleMs ?? 500);
    this.core = new ReconnectCore(
      { ...opts, timers },
      { connect: () => void this.run(), lost: (reason) => this.dropped(reason) }
    );
  }

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.state.cancelResume();
    this.core.stop();
    this.abort?.abort();
    this.abort = null;
  }

  private async run(): Promise<void> {
    if (this.stopped) {
      return;
    }
    const url = streamUrl(this.opts.url, this.state.subscribeMessage('A'));
    const controller = new AbortController();
    this.abort = controller;
    // Stopped, or this connection was given up (dropped, dead): what it says next is not news.
    const gone = () => this.stopped || this.abort !== controller;
    const headers: Record<string, string> = { Accept: 'application/x-ndjson' };
    if (this.opts.token) {
      headers.Authorization = `Bearer ${this.opts.token}`;
    }
    let resp: Response;
    try {
      resp = await this.fetchImpl(url, { headers, signal: controller.signal, credentials: this.opts.credentials });
    } catch (err) {
      if (!gone()) {
        this.dropped(errorText(err));
      }
      return;
    }
    if (gone()) {
      controller.abort();
      return;
    }
    if (!resp.ok) {
      const detail = await resp
        .json()
        .then((b: { error?: string; message?: string }) => b.error ?? b.message ?? '')
        .catch(() => '');
      if (gone()) {
        return;
      }
      if (resp.status >= 400 && resp.status < 500 && resp.status !== 408 && resp.status !== 429) {
        this.fail(httpErrorText(resp.status, detail));
      } else {
        this.dropped(`HTTP ${resp.status}${detail ? `: ${detail}` : ''}`);
      }
      return;
    }
    if (this.core.opened()) {
      this.state.startResume(this.timers.now());
    }
    if (!resp.body) {
      this.fail('the response has no body to stream (this browser cannot read streams?)');
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (gone()) {
          return;
        }
        if (done) {
          break;
        }
        this.core.alive();
        buffer += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (line && this.line(line)) {
            controller.abort();
            return;
          }
        }
      }
    } catch (err) {
      if (!gone()) {
        this.dropped(errorText(err));
      }
      return;
    }
    if (!gone()) {
      this.dropped('the stream ended');
    }
  }

  /** One NDJSON line; returns true when the subscription is over. */
  private line(text: string): boolean {
    const parsed = parseServerMessage(text);
    if (parsed.ok) {
      return this.handle(parsed.msg);
    }
    if (parsed.unknownType) {
      this.handlers.onNotice?.(unknownTypeNotice(parsed.error, parsed.id));
      return false;
    }
    // The stream carries this subscription only: a message it cannot read ends it.
    this.fail(parsed.error);
    return true;
  }

  /** Returns true when the subscription is over. */
  private handle(msg: ServerMessage): boolean {
    switch (msg.type) {
      case 'hello':
        this.core.hello(msg.heartbeat_ms);
        this.state.setCatchUp(msg.time);
        return false;
      case 'data':
        this.core.progress();
        this.state.data(msg);
        return false;
      case 'complete':
        this.stop();
        this.handlers.onComplete?.();
        return true;
      case 'error':
        this.fail(msg.message);
        return true;
      case 'notice':
        this.handlers.onNotice?.(msg);
        return false;
      default:
        return false;
    }
  }

  private fail(message: string): void {
    if (this.stopped) {
      return;
    }
    this.stop();
    this.handlers.onError?.(message);
  }

  private dropped(reason: string): void {
    if (this.stopped) {
      return;
    }
    this.state.cancelResume();
    this.abort?.abort();
    this.abort = null;
    this.state.status(this.core.dropped(reason));
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: { code?: string; message?: string } }).cause;
    return cause?.code ? `${err.message} (${cause.code})` : err.message;
  }
  return String(err);
}

export function httpErrorText(status: number, detail: string): string {
  const tail = detail ? `: ${detail}` : '';
  if (status === 401 || status === 403) {
    return `unauthorized (HTTP ${status})${tail}: check the read token in the data source settings`;
  }
  if (status === 404) {
    return `not found (HTTP 404)${tail}: is the URL the livedata server's base URL?`;
  }
  return `HTTP ${status}${tail}`;
}
