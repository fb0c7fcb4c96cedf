import { Backoff } from './backoff';
import { ServerMessage, StreamTransport, SubscribeRequest, SubscriptionHandlers, parseServerMessage } from './protocol';
import { SubState } from './resume';
import { TimerHandle, Timers, realTimers } from './timers';
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
 * handlers, same reconnect-and-resume-with-`since` behaviour as the WebSocket client.
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
  private readonly backoff: Backoff;
  private abort: AbortController | null = null;
  private retryTimer: TimerHandle | null = null;
  private deadTimer: TimerHandle | null = null;
  private heartbeatMs = 15_000;
  private stopped = false;
  private reconnecting = false;

  constructor(
    private readonly req: SubscribeRequest,
    private readonly handlers: SubscriptionHandlers,
    private readonly opts: HttpStreamClientOptions,
    private readonly timers: Timers,
    private readonly fetchImpl: FetchLike
  ) {
    this.state = new SubState(handlers, timers, opts.resumeSettleMs ?? 500);
    this.backoff = new Backoff({ baseMs: opts.backoffBaseMs, capMs: opts.backoffCapMs, random: opts.random });
  }

  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.state.cancelResume();
    this.clearTimers();
    this.abort?.abort();
    this.abort = null;
  }

  private async run(): Promise<void> {
    if (this.stopped) {
      return;
    }
    const since = this.state.position ?? this.req.since;
    const url = streamUrl(this.opts.url, { ...this.req, since });
    const controller = new AbortController();
    this.abort = controller;
    const headers: Record<string, string> = { Accept: 'application/x-ndjson' };
    if (this.opts.token) {
      headers.Authorization = `Bearer ${this.opts.token}`;
    }
    let resp: Response;
    try {
      resp = await this.fetchImpl(url, { headers, signal: controller.signal, credentials: this.opts.credentials });
    } catch (err) {
      this.dropped(errorText(err));
      return;
    }
    if (this.stopped) {
      controller.abort();
      return;
    }
    if (!resp.ok) {
      const detail = await resp
        .json()
        .then((b: { error?: string; message?: string }) => b.error ?? b.message ?? '')
        .catch(() => '');
      if (resp.status >= 400 && resp.status < 500 && resp.status !== 408 && resp.status !== 429) {
        this.fail(httpErrorText(resp.status, detail));
      } else {
        this.dropped(`HTTP ${resp.status}${detail ? `: ${detail}` : ''}`);
      }
      return;
    }
    if (this.reconnecting) {
      this.reconnecting = false;
      this.state.startResume(this.timers.now());
    }
    if (!resp.body) {
      this.fail('the response has no body to stream (this browser cannot read streams?)');
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    this.armDeadTimer();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (this.stopped) {
          return;
        }
        if (done) {
          break;
        }
        this.armDeadTimer();
        buffer += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl).trim();
          buffer = buffer.slice(nl + 1);
          if (line) {
            const msg = parseServerMessage(line);
            if (msg && this.handle(msg)) {
              controller.abort();
              return;
            }
          }
        }
      }
    } catch (err) {
      if (this.stopped) {
        return;
      }
      this.dropped(errorText(err));
      return;
    }
    this.dropped('the stream ended');
  }

  /** Returns true when the subscription is over. */
  private handle(msg: ServerMessage): boolean {
    switch (msg.type) {
      case 'hello':
        this.heartbeatMs = msg.heartbeat_ms || this.heartbeatMs;
        this.state.setCatchUp(msg.time);
        this.armDeadTimer();
        return false;
      case 'data':
        this.backoff.reset();
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
    this.clearTimers();
    this.state.cancelResume();
    this.abort?.abort();
    this.abort = null;
    const delayMs = this.backoff.next();
    this.reconnecting = true;
    this.state.status({ state: 'reconnecting', attempt: this.backoff.attempt, delayMs, reason });
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      void this.run();
    }, delayMs);
  }

  private armDeadTimer(): void {
    if (this.deadTimer !== null) {
      this.timers.clearTimeout(this.deadTimer);
    }
    this.deadTimer = this.timers.setTimeout(() => {
      this.deadTimer = null;
      this.dropped('no message within the heartbeat interval');
    }, this.opts.deadAfterMs ?? this.heartbeatMs * 2 + 2000);
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) {
      this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    if (this.deadTimer !== null) {
      this.timers.clearTimeout(this.deadTimer);
      this.deadTimer = null;
    }
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
