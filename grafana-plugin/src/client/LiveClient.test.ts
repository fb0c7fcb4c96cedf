import { DataMessage, StreamStatus } from './protocol';
import { Backoff } from './backoff';
import { LiveClient } from './LiveClient';
import { FakeWebSocket, ManualTimers, dataMsg } from '../testing/fakes';

function setup(opts: Partial<ConstructorParameters<typeof LiveClient>[0]> = {}) {
  FakeWebSocket.reset();
  const timers = new ManualTimers();
  const client = new LiveClient({ url: 'http://live:8080', WebSocket: FakeWebSocket, timers, random: () => 1, ...opts });
  return { client, timers };
}

function recorder() {
  const data: DataMessage[] = [];
  const statuses: StreamStatus[] = [];
  const errors: string[] = [];
  const notices: string[] = [];
  let completed = 0;
  return {
    data,
    statuses,
    errors,
    notices,
    completed: () => completed,
    handlers: {
      onData: (m: DataMessage) => data.push(m),
      onStatus: (s: StreamStatus) => statuses.push(s),
      onError: (e: string) => errors.push(e),
      onNotice: (n: { text: string }) => notices.push(n.text),
      onComplete: () => completed++,
    },
  };
}

describe('LiveClient (fake socket)', () => {
  test('one socket for all subscriptions, auth first, closed with the last one', () => {
    const { client } = setup({ token: 't0k' });
    const a = recorder();
    const b = recorder();
    const stopA = client.subscribe({ channel: 'random-walk', from: 'now-5m', interval: 100 }, a.handlers);
    const stopB = client.subscribe({ channel: 'sine', params: { series: 2 }, fields: ['series1'] }, b.handlers);
    expect(FakeWebSocket.instances).toHaveLength(1);
    const ws = FakeWebSocket.last();
    expect(ws.url).toBe('ws://live:8080/api/ws');
    ws.accept();
    expect(ws.sent[0]).toEqual({ type: 'auth', token: 't0k' });
    expect(ws.subscribes()).toEqual([
      { type: 'subscribe', id: 's1', channel: 'random-walk', from: 'now-5m', interval: 100 },
      { type: 'subscribe', id: 's2', channel: 'sine', params: { series: 2 }, fields: ['series1'] },
    ]);
    ws.receive(dataMsg('s1', 'p1', [1, 2], [10, 20], true));
    ws.receive(dataMsg('s2', 'q1', [5], [50], true));
    expect(a.data.map((m) => m.position)).toEqual(['p1']);
    expect(b.data.map((m) => m.position)).toEqual(['q1']);

    stopA();
    stopA(); // idempotent
    expect(ws.sent.filter((m) => m.type === 'unsubscribe')).toEqual([{ type: 'unsubscribe', id: 's1' }]);
    expect(ws.closedWith).toBeUndefined();
    stopB();
    expect(ws.closedWith?.code).toBe(1000);
    expect(client.connected).toBe(false);
    // A new subscription opens a new socket.
    client.subscribe({ channel: 'sine' }, recorder().handlers);
    expect(FakeWebSocket.instances).toHaveLength(2);
  });

  test('subscriptions made before the socket opens are sent on open', () => {
    const { client } = setup();
    client.subscribe({ channel: 'a' }, recorder().handlers);
    const ws = FakeWebSocket.last();
    expect(ws.sent).toEqual([]);
    client.subscribe({ channel: 'b' }, recorder().handlers);
    ws.accept();
    expect(ws.subscribes().map((m) => m.channel)).toEqual(['a', 'b']);
  });

  test('idleCloseMs keeps the socket for a quick resubscribe', () => {
    const { client, timers } = setup({ idleCloseMs: 1000 });
    const stop = client.subscribe({ channel: 'a' }, recorder().handlers);
    const ws = FakeWebSocket.last();
    ws.accept();
    stop();
    timers.advance(500);
    client.subscribe({ channel: 'a' }, recorder().handlers);
    timers.advance(2000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(ws.closedWith).toBeUndefined();
    expect(ws.subscribes()).toHaveLength(2);
  });

  test('reconnects with backoff and resubscribes with since = last position', () => {
    const { client, timers } = setup({ resumeSettleMs: 200 });
    const r = recorder();
    client.subscribe({ channel: 'random-walk', from: 1000 }, r.handlers);
    const ws1 = FakeWebSocket.last();
    ws1.accept(5000);
    ws1.receive(dataMsg('s1', 'e1:10', [4900, 4950], [1, 2], true));
    ws1.drop(1006);
    expect(r.statuses[0]).toEqual({ state: 'reconnecting', attempt: 1, delayMs: 250, reason: 'connection lost' });
    timers.advance(249);
    expect(FakeWebSocket.instances).toHaveLength(1);
    timers.advance(1);
    const ws2 = FakeWebSocket.last();
    expect(ws2).not.toBe(ws1);
    ws2.accept(6000);
    expect(ws2.subscribes()).toEqual([{ type: 'subscribe', id: 's1', channel: 'random-walk', since: 'e1:10' }]);
    // Backfill of the outage, then a packet that reaches the new hello time: resumed.
    ws2.receive(dataMsg('s1', 'e1:20', [5000, 5050, 5100], [3, 4, 5], true));
    expect(r.statuses).toHaveLength(1);
    ws2.receive(dataMsg('s1', 'e1:21', [6000], [6]));
    expect(r.statuses[1]).toEqual({ state: 'resumed', recovered: 4, since: 'e1:10' });
    // Next drop resubscribes from the newest position.
    ws2.drop(1001);
    timers.advance(1000);
    FakeWebSocket.last().accept(7000);
    expect(FakeWebSocket.last().subscribes()[0].since).toBe('e1:21');
  });

  test('a quiet channel reports resumed after the settle time', () => {
    const { client, timers } = setup({ resumeSettleMs: 300 });
    const r = recorder();
    client.subscribe({ channel: 'sensors/x', from: 0 }, r.handlers);
    FakeWebSocket.last().accept(100);
    FakeWebSocket.last().receive(dataMsg('s1', 'p', [50], [1], true));
    FakeWebSocket.last().drop();
    timers.advance(250);
    FakeWebSocket.last().accept(9000);
    FakeWebSocket.last().receive(dataMsg('s1', 'p', [], [], true));
    timers.advance(299);
    expect(r.statuses.map((s) => s.state)).toEqual(['reconnecting']);
    timers.advance(1);
    expect(r.statuses[1]).toEqual({ state: 'resumed', recovered: 0, since: 'p' });
  });

  test('without any position yet the resubscription repeats the original request', () => {
    const { client, timers } = setup();
    client.subscribe({ channel: 'a', from: 'now-1m', to: 'now+1h' }, recorder().handlers);
    FakeWebSocket.last().accept();
    FakeWebSocket.last().drop();
    timers.advance(250);
    FakeWebSocket.last().accept();
    expect(FakeWebSocket.last().subscribes()[0]).toEqual({
      type: 'subscribe',
      id: 's1',
      channel: 'a',
      from: 'now-1m',
      to: 'now+1h',
    });
  });

  test('backoff doubles with jitter and is capped at 10 s', () => {
    const exact = new Backoff({ random: () => 1 });
    expect(Array.from({ length: 8 }, () => exact.next())).toEqual([250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
    const low = new Backoff({ random: () => 0 });
    expect(Array.from({ length: 3 }, () => low.next())).toEqual([125, 250, 500]);
    exact.reset();
    expect(exact.next()).toBe(250);

    const { client, timers } = setup();
    const r = recorder();
    client.subscribe({ channel: 'a' }, r.handlers);
    for (let i = 0; i < 8; i++) {
      FakeWebSocket.last().drop();
      timers.advance(10_000);
    }
    const delays = r.statuses.filter((s) => s.state === 'reconnecting').map((s) => (s as { delayMs: number }).delayMs);
    expect(delays).toEqual([250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
    // Data on a new socket resets the backoff.
    FakeWebSocket.last().accept();
    FakeWebSocket.last().receive(dataMsg('s1', 'x', [1], [1], true));
    FakeWebSocket.last().drop();
    expect((r.statuses[r.statuses.length - 1] as { delayMs: number }).delayMs).toBe(250);
  });

  test('close 4001 ends the subscriptions with an unauthorized error and no reconnect', () => {
    const { client, timers } = setup();
    const r = recorder();
    client.subscribe({ channel: 'a' }, r.handlers);
    FakeWebSocket.last().accept();
    FakeWebSocket.last().drop(4001, 'unauthorized');
    expect(r.errors[0]).toMatch(/^unauthorized/);
    timers.advance(60_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(client.size).toBe(0);
  });

  test('error with an id ends that subscription only; complete ends it cleanly', () => {
    const { client, timers } = setup();
    const a = recorder();
    const b = recorder();
    const c = recorder();
    client.subscribe({ channel: 'a' }, a.handlers);
    client.subscribe({ channel: 'b' }, b.handlers);
    client.subscribe({ channel: 'c', to: 5 }, c.handlers);
    const ws = FakeWebSocket.last();
    ws.accept();
    ws.receive({ type: 'error', id: 's1', message: "unknown param 'colour'" });
    ws.receive({ type: 'complete', id: 's3' });
    ws.receive({ type: 'notice', id: 's2', level: 'warning', text: '3 points lost: beyond retention', lost: 3 });
    expect(a.errors).toEqual(["unknown param 'colour'"]);
    expect(c.completed()).toBe(1);
    expect(b.notices).toEqual(['3 points lost: beyond retention']);
    expect(client.size).toBe(1);
    ws.drop();
    timers.advance(250);
    FakeWebSocket.last().accept();
    expect(FakeWebSocket.last().subscribes().map((m) => m.channel)).toEqual(['b']);
  });

  test('a silent server is declared dead after two heartbeats', () => {
    const { client, timers } = setup();
    const r = recorder();
    client.subscribe({ channel: 'a' }, r.handlers);
    const ws = FakeWebSocket.last();
    ws.accept(0, 1000);
    timers.advance(2000);
    ws.receive({ type: 'heartbeat', time: 1 });
    timers.advance(3999);
    expect(r.statuses).toEqual([]);
    timers.advance(1);
    expect(ws.closedWith?.code).toBe(4002);
    expect(r.statuses[0]).toMatchObject({ state: 'reconnecting' });
  });

  test('a malformed message ends the subscription it names with a clear error; others go on', () => {
    const socketErrors: string[] = [];
    const { client } = setup({ onSocketError: (m) => socketErrors.push(m) });
    const a = recorder();
    const b = recorder();
    client.subscribe({ channel: 'a' }, a.handlers);
    client.subscribe({ channel: 'b' }, b.handlers);
    const ws = FakeWebSocket.last();
    ws.accept();
    ws.receive({ type: 'data', id: 's1', position: 'p', frame: { data: { values: [[1, 2], [3]] } } });
    expect(a.errors).toHaveLength(1);
    expect(a.errors[0]).toMatch(/columns differ in length/);
    expect(a.data).toEqual([]);
    expect(ws.sent.filter((m) => m.type === 'unsubscribe')).toEqual([{ type: 'unsubscribe', id: 's1' }]);
    ws.receive(dataMsg('s2', 'q', [1], [1], true));
    expect(b.data).toHaveLength(1);
    expect(client.size).toBe(1);
    // Not JSON, no type, a malformed hello: the socket's, not a subscription's.
    ws.onmessage?.({ data: 'not json' });
    ws.receive({ kind: 'data' });
    ws.receive({ type: 'hello', time: 'soon' });
    expect(socketErrors).toHaveLength(3);
    expect(socketErrors[0]).toMatch(/not JSON/);
    expect(b.errors).toEqual([]);
  });

  test('a message of an unknown type is a warning, not an end', () => {
    const socketErrors: string[] = [];
    const { client } = setup({ onSocketError: (m) => socketErrors.push(m) });
    const a = recorder();
    client.subscribe({ channel: 'a' }, a.handlers);
    const ws = FakeWebSocket.last();
    ws.accept();
    ws.receive({ type: 'sparkle', id: 's1' });
    ws.receive({ type: 'sparkle' });
    expect(a.notices).toEqual([expect.stringMatching(/unknown type "sparkle"/)]);
    expect(socketErrors).toEqual([expect.stringMatching(/unknown type "sparkle"/)]);
    expect(a.errors).toEqual([]);
    expect(client.size).toBe(1);
  });

  test('when the last subscription ends no timer is left behind', () => {
    const { client, timers } = setup();
    const stop = client.subscribe({ channel: 'a' }, recorder().handlers);
    FakeWebSocket.last().accept();
    FakeWebSocket.last().drop();
    timers.advance(250);
    FakeWebSocket.last().accept();
    stop();
    expect(timers.pending()).toBe(0);
    expect(client.connected).toBe(false);
  });
});
