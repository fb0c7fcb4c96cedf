/** A scripted WebSocket and a manual clock, for unit tests of the client's state machine only. */
import type { WebSocketLike } from '../client';
import type { TimerHandle, Timers } from '../client/timers';

export class FakeWebSocket implements WebSocketLike {
  static instances: FakeWebSocket[] = [];
  readyState = 0;
  sent: Array<Record<string, unknown>> = [];
  closedWith?: { code?: number; reason?: string };
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  constructor(readonly url: string) {
    FakeWebSocket.instances.push(this);
  }

  static reset(): void {
    FakeWebSocket.instances = [];
  }

  static last(): FakeWebSocket {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }

  send(data: string): void {
    if (this.readyState !== 1) {
      throw new Error('send on a socket that is not open');
    }
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  /** Server side: accept the connection and say hello. */
  accept(time = 1_000_000, heartbeatMs = 15_000): void {
    this.readyState = 1;
    this.onopen?.({});
    this.receive({ type: 'hello', version: 'test', time, heartbeat_ms: heartbeatMs });
  }

  receive(obj: unknown): void {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }

  /** Server side: drop the connection. */
  drop(code = 1006, reason = ''): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  subscribes(): Array<Record<string, unknown>> {
    return this.sent.filter((m) => m.type === 'subscribe');
  }
}

export class ManualTimers implements Timers {
  private t = 0;
  private seq = 0;
  private queue = new Map<number, { at: number; fn: () => void }>();

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.queue.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.queue.delete(handle as number);
  }

  now(): number {
    return this.t;
  }

  pending(): number {
    return this.queue.size;
  }

  /** Move the clock, running every timer that falls due (in order). */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.queue) {
        if (e[1].at <= end && (!next || e[1].at < next[1].at)) {
          next = e;
        }
      }
      if (!next) {
        break;
      }
      this.queue.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
}

export function dataMsg(id: string, position: string, times: number[], values: number[], schema = false, late = false) {
  return {
    type: 'data',
    id,
    position,
    ...(late ? { late: true } : {}),
    frame: {
      ...(schema
        ? { schema: { fields: [{ name: 'time', type: 'time' }, { name: 'v', type: 'number' }] } }
        : {}),
      data: { values: [times, values] },
    },
  };
}
