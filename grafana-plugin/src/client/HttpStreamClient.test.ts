import { ManualTimers, dataMsg } from '../testing/fakes';
import { FetchLike, HttpStreamClient } from './HttpStreamClient';
import { DataMessage, StreamStatus } from './protocol';

/** A scripted server: each fetch is a stream the test writes NDJSON lines into. */
class FakeServer {
  calls: Array<{ url: URL; ctrl?: ReadableStreamDefaultController<Uint8Array>; aborted: boolean }> = [];
  statuses: number[] = [];

  readonly fetch: FetchLike = async (url, init) => {
    const call: FakeServer['calls'][number] = { url: new URL(url), aborted: false };
    this.calls.push(call);
    const status = this.statuses.shift() ?? 200;
    if (status !== 200) {
      return new Response(JSON.stringify({ error: `status ${status}` }), { status });
    }
    const body = new ReadableStream<Uint8Array>({ start: (c) => void (call.ctrl = c) });
    init?.signal?.addEventListener('abort', () => {
      call.aborted = true;
      try {
        call.ctrl?.error(new Error('aborted'));
      } catch {
        // closed already
      }
    });
    return new Response(body, { status: 200 });
  };

  last() {
    return this.calls[this.calls.length - 1];
  }

  send(obj: unknown, raw = false): void {
    this.last().ctrl!.enqueue(new TextEncoder().encode(`${raw ? String(obj) : JSON.stringify(obj)}\n`));
  }

  hello(time = 1000, heartbeatMs = 15_000): void {
    this.send({ type: 'hello', version: 'test', time, heartbeat_ms: heartbeatMs });
  }

  end(): void {
    this.last().ctrl!.close();
  }
}

const tick = () => new Promise((r) => setTimeout(r, 5));

function setup() {
  const server = new FakeServer();
  const timers = new ManualTimers();
  const client = new HttpStreamClient({ url: 'http://live:8080', fetch: server.fetch, timers, random: () => 1, resumeSettleMs: 100 });
  const data: DataMessage[] = [];
  const statuses: StreamStatus[] = [];
  const errors: string[] = [];
  const notices: string[] = [];
  const handlers = {
    onData: (m: DataMessage) => data.push(m),
    onStatus: (s: StreamStatus) => statuses.push(s),
    onError: (e: string) => errors.push(e),
    onNotice: (n: { text: string }) => notices.push(n.text),
  };
  return { server, timers, client, handlers, data, statuses, errors, notices };
}

describe('HttpStreamClient (scripted server)', () => {
  test('a dropped stream is fetched again after the backoff, with since = the last position', async () => {
    const t = setup();
    t.client.subscribe({ channel: 'random-walk', from: 'now-1m', params: { series: 2 } }, t.handlers);
    await tick();
    expect(Object.fromEntries(t.server.last().url.searchParams)).toEqual({
      channel: 'random-walk',
      id: 'A',
      from: 'now-1m',
      series: '2',
    });
    t.server.hello();
    t.server.send(dataMsg('A', 'e:5', [900, 950], [1, 2], true));
    await tick();
    t.server.end();
    await tick();
    expect(t.statuses).toEqual([{ state: 'reconnecting', attempt: 1, delayMs: 250, reason: 'the stream ended' }]);
    t.timers.advance(250);
    await tick();
    expect(t.server.calls).toHaveLength(2);
    expect(t.server.last().url.searchParams.get('since')).toBe('e:5');
    expect(t.server.last().url.searchParams.has('from')).toBe(false);
    t.server.hello(2000);
    t.server.send(dataMsg('A', 'e:9', [1000, 2000], [3, 4], true));
    await tick();
    expect(t.statuses[1]).toEqual({ state: 'resumed', recovered: 2, since: 'e:5' });
    expect(t.data.map((m) => m.position)).toEqual(['e:5', 'e:9']);
  });

  test('a silent stream is given up after two heartbeats', async () => {
    const t = setup();
    t.client.subscribe({ channel: 'a' }, t.handlers);
    await tick();
    t.server.hello(0, 1000);
    await tick();
    t.timers.advance(3999);
    expect(t.statuses).toEqual([]);
    t.timers.advance(1);
    expect(t.server.last().aborted).toBe(true);
    await tick();
    // The aborted read that follows is not a second drop.
    expect(t.statuses).toEqual([
      { state: 'reconnecting', attempt: 1, delayMs: 250, reason: 'no message within the heartbeat interval' },
    ]);
    t.timers.advance(250);
    await tick();
    expect(t.server.calls).toHaveLength(2);
  });

  test('a line it cannot read ends the subscription with the reason, and no retry', async () => {
    const t = setup();
    t.client.subscribe({ channel: 'a' }, t.handlers);
    await tick();
    t.server.hello();
    t.server.send('{"type":"data","id":"A","frame":{"data":{"values":[[1],[2,3]]}}}', true);
    await tick();
    expect(t.errors).toEqual([expect.stringMatching(/columns differ in length/)]);
    expect(t.server.last().aborted).toBe(true);
    t.timers.advance(60_000);
    await tick();
    expect(t.server.calls).toHaveLength(1);
    expect(t.timers.pending()).toBe(0);
  });

  test('an unknown message type is a notice; the stream goes on', async () => {
    const t = setup();
    t.client.subscribe({ channel: 'a' }, t.handlers);
    await tick();
    t.server.hello();
    t.server.send({ type: 'sparkle' });
    t.server.send(dataMsg('A', 'p', [1], [1], true));
    await tick();
    expect(t.notices).toEqual([expect.stringMatching(/unknown type "sparkle"/)]);
    expect(t.data).toHaveLength(1);
    expect(t.errors).toEqual([]);
  });

  test('4xx ends with a sentence; 503 is retried', async () => {
    const t = setup();
    t.server.statuses = [503, 401];
    t.client.subscribe({ channel: 'a' }, t.handlers);
    await tick();
    expect(t.statuses[0]).toMatchObject({ state: 'reconnecting', reason: 'HTTP 503: status 503' });
    t.timers.advance(250);
    await tick();
    expect(t.errors).toEqual(['unauthorized (HTTP 401): status 401: check the read token in the data source settings']);
    expect(t.timers.pending()).toBe(0);
  });

  test('stopping aborts the stream and leaves no timer', async () => {
    const t = setup();
    const stop = t.client.subscribe({ channel: 'a' }, t.handlers);
    await tick();
    t.server.hello();
    await tick();
    stop();
    await tick();
    expect(t.server.last().aborted).toBe(true);
    expect(t.timers.pending()).toBe(0);
    expect(t.statuses).toEqual([]);
  });
});
