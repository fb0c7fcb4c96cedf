/**
 * Resume from any message (docs/protocol.md, "Positions"), against a real `livedata serve`: the
 * connection drops right after the 1st, 2nd, 3rd, ... `data` message of each connection (the
 * rest never reaches the client), while batches that mix late and on-time points are pushed. The
 * client resumes from the last position it got, whatever message carried it (schema, backfill,
 * late, live), and its FrameStore ends with every point exactly once, in time order.
 */
import WebSocket from 'ws';

import { FetchLike, HttpStreamClient, LiveClient, StreamTransport, WebSocketCtor, WebSocketLike } from '../client';
import { FrameStore } from '../store/FrameStore';
import { push, serverUrl, sleep, uniqueChannel, waitFor } from '../testing/harness';

jest.setTimeout(60_000);

/** Connection k (from 0) delivers `plan(k)` data messages, then drops: its later messages are lost. */
type Plan = (k: number) => number;

function droppingWebSocket(plan: Plan, stats: { connections: number }): WebSocketCtor {
  return class Dropping implements WebSocketLike {
    private readonly ws: WebSocket;
    private left: number;
    private gone = false;
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: { data: unknown }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;

    constructor(url: string) {
      this.left = plan(stats.connections++);
      this.ws = new WebSocket(url);
      this.ws.on('open', () => this.onopen?.({}));
      this.ws.on('message', (data: Buffer) => {
        if (this.gone) {
          return;
        }
        const text = data.toString();
        this.onmessage?.({ data: text });
        if (JSON.parse(text).type === 'data' && --this.left <= 0) {
          this.drop();
        }
      });
      this.ws.on('close', (code: number, reason: Buffer) => {
        if (!this.gone) {
          this.gone = true;
          this.onclose?.({ code, reason: reason.toString() });
        }
      });
      this.ws.on('error', (err) => this.onerror?.(err));
    }

    /** The network goes away: nothing more arrives, and the client learns it as an abnormal close. */
    private drop(): void {
      this.gone = true;
      this.ws.terminate();
      setTimeout(() => this.onclose?.({ code: 1006, reason: 'dropped by the test' }), 0);
    }

    get readyState(): number {
      return this.gone ? WebSocket.CLOSED : this.ws.readyState;
    }

    send(data: string): void {
      if (!this.gone) {
        this.ws.send(data);
      }
    }

    close(code?: number, reason?: string): void {
      this.gone = true;
      this.ws.close(code, reason);
    }
  };
}

function droppingFetch(plan: Plan, stats: { connections: number }): FetchLike {
  return async (input, init) => {
    const upstream = await fetch(input, init);
    if (!upstream.ok || !upstream.body) {
      return upstream;
    }
    let left = plan(stats.connections++);
    const reader = upstream.body.getReader();
    const encoder = new TextEncoder();
    const decoder = new TextDecoder();
    let buffer = '';
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        buffer += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl + 1);
          buffer = buffer.slice(nl + 1);
          controller.enqueue(encoder.encode(line));
          if (line.includes('"type":"data"') && --left <= 0) {
            await reader.cancel();
            controller.error(new Error('dropped by the test'));
            return;
          }
        }
      },
      cancel() {
        return reader.cancel();
      },
    });
    return new Response(body, { status: upstream.status, headers: upstream.headers });
  };
}

describe.each(['ws', 'http'] as const)('resume from the position of any message over %s', (transport) => {
  test('a connection that drops after any data message loses nothing and repeats nothing', async () => {
    const url = serverUrl();
    const channel = uniqueChannel(`resume-${transport}`);
    const t0 = Date.now() - 60_000;
    let seq = 0;
    const batch = (i: number) => [
      { time: t0 + 1000 + i * 100, seq: seq++ }, // on time
      { time: t0 + (i % 7) * 10, seq: seq++ }, // late: older than points already there
      { time: t0 + 1000 + i * 100 + 50, seq: seq++ }, // on time, in the same batch as the late one
    ];
    for (let i = 0; i < 5; i++) {
      await push(url, channel, batch(i)); // history before the subscription
    }
    const stats = { connections: 0 };
    const plan: Plan = (k) => 1 + (k % 4); // drop after the 1st, 2nd, 3rd, 4th, 1st, ... data message
    const opts = { url, backoffBaseMs: 5, backoffCapMs: 20, resumeSettleMs: 50 };
    const client: StreamTransport =
      transport === 'ws'
        ? new LiveClient({ ...opts, WebSocket: droppingWebSocket(plan, stats), idleCloseMs: 0 })
        : new HttpStreamClient({ ...opts, fetch: droppingFetch(plan, stats) });
    const store = new FrameStore();
    const errors: string[] = [];
    const unsubscribe = client.subscribe(
      { channel, from: t0 - 1, interval: 0 },
      {
        onData: (msg) => {
          expect(msg.position).toBeTruthy();
          store.merge(msg);
        },
        onError: (message) => errors.push(message),
        onNotice: (n) => errors.push(`notice: ${n.text}`),
      }
    );
    try {
      for (let i = 5; i < 40; i++) {
        await push(url, channel, batch(i));
        await sleep(i % 3 === 0 ? 15 : 2);
      }
      const seqCol = () => store.columns[store.fields.findIndex((f) => f.name === 'seq')] ?? [];
      await waitFor(() => seqCol().length >= seq, `all ${seq} points`, 20_000);
      await sleep(100); // nothing more may come
      const got = (seqCol() as number[]).slice().sort((a, b) => a - b);
      expect(got).toEqual(Array.from({ length: seq }, (_, i) => i));
      for (let i = 1; i < store.times.length; i++) {
        expect(store.times[i]).toBeGreaterThanOrEqual(store.times[i - 1]);
      }
      expect(errors).toEqual([]);
      expect(stats.connections).toBeGreaterThan(10);
      expect(store.stats.lateRows).toBeGreaterThan(0);
    } finally {
      unsubscribe();
    }
  });
});
