jest.mock('@grafana/runtime', () => jest.requireActual('./testing/runtime'));

import { DataQueryResponse, LoadingState, StreamingDataFrame } from '@grafana/data';
import { AddressInfo } from 'net';
import http from 'http';

import { cacheKey } from './cache';
import { DataSource, isLiveEnd } from './datasource';
import { FakeWebSocket, ManualTimers, dataMsg } from './testing/fakes';
import { collect, instanceSettings, makeRequest } from './testing/harness';

function setup() {
  FakeWebSocket.reset();
  const timers = new ManualTimers();
  const ds = new DataSource(instanceSettings({ url: 'http://live:8080', throttleMs: 0 }), {
    WebSocket: FakeWebSocket,
    timers,
    client: { idleCloseMs: 0, random: () => 1, resumeSettleMs: 100 },
  });
  return { ds, timers };
}

const frameOf = (r: DataQueryResponse) => r.data[0] as StreamingDataFrame;

describe('DataSource (fake socket)', () => {
  test('the schema packet is emitted at once as Streaming; data appends', async () => {
    const { ds } = setup();
    const now = Date.now();
    const c = collect(ds.query(makeRequest([{ channel: 'x' }], { from: 'now-1m', to: 'now' })));
    const ws = FakeWebSocket.last();
    ws.accept(now);
    const sub = ws.subscribes()[0];
    expect(sub).toMatchObject({ channel: 'x', interval: 0 });
    expect(sub.from).toBeGreaterThan(now - 61_000);
    ws.receive(dataMsg('s1', 'p0', [], [], true));
    await Promise.resolve();
    expect(c.snapshots[0]).toMatchObject({ state: LoadingState.Streaming, length: 0, fields: ['time', 'v'] });
    ws.receive(dataMsg('s1', 'p1', [now - 2000, now - 1000], [1, 2]));
    await new Promise((r) => setTimeout(r, 5));
    expect(c.last()?.times).toEqual([now - 2000, now - 1000]);
    c.unsubscribe();
  });

  test('late rows are inserted; reconnect and resume show as notices', async () => {
    const { ds, timers } = setup();
    const now = Date.now();
    const c = collect(ds.query(makeRequest([{ channel: 'x' }], { from: 'now-1m', to: 'now' })));
    const ws = FakeWebSocket.last();
    ws.accept(now);
    ws.receive(dataMsg('s1', 'p1', [now - 3000, now - 1000], [1, 3], true));
    ws.receive(dataMsg('s1', 'p2', [now - 2000], [2], false, true));
    await new Promise((r) => setTimeout(r, 5));
    expect(c.last()?.times).toEqual([now - 3000, now - 2000, now - 1000]);
    expect(frameOf(c.responses[c.responses.length - 1]).fields[1].values).toEqual([1, 2, 3]);

    ws.drop(1006);
    await new Promise((r) => setTimeout(r, 5));
    expect(c.last()?.notices.some((n) => n.startsWith('reconnecting…'))).toBe(true);
    timers.advance(250);
    const ws2 = FakeWebSocket.last();
    ws2.accept(now + 1000);
    expect(ws2.subscribes()[0]).toMatchObject({ since: 'p2' });
    expect(ws2.subscribes()[0].from).toBeUndefined();
    ws2.receive({ type: 'notice', id: 's1', level: 'warning', text: '5 points lost: beyond retention', lost: 5 });
    ws2.receive(dataMsg('s1', 'p3', [now - 500, now + 1000], [4, 5], true));
    await new Promise((r) => setTimeout(r, 5));
    const s = c.last()!;
    expect(s.notices).toEqual(['5 points lost: beyond retention', 'resumed, 2 points recovered']);
    expect(s.times).toEqual([now - 3000, now - 2000, now - 1000, now - 500, now + 1000]);
    c.unsubscribe();
  });

  test('after a loss, resent points older than the frame are dropped, not duplicated', async () => {
    const { ds, timers } = setup();
    const now = Date.now();
    const c = collect(ds.query(makeRequest([{ channel: 'x' }], { from: 'now-1m', to: 'now' })));
    FakeWebSocket.last().accept(now);
    FakeWebSocket.last().receive(dataMsg('s1', 'a:1', [now - 3000, now - 2000], [1, 2], true));
    FakeWebSocket.last().drop();
    timers.advance(250);
    const ws = FakeWebSocket.last();
    ws.accept(now);
    ws.receive({ type: 'notice', id: 's1', level: 'warning', text: 'an unknown number of points lost', lost: -1 });
    ws.receive(dataMsg('s1', 'b:9', [now - 4000, now - 3000, now - 2000, now - 1000], [9, 9, 9, 3], true));
    await new Promise((r) => setTimeout(r, 5));
    expect(c.last()?.times).toEqual([now - 3000, now - 2000, now - 1000]);
    c.unsubscribe();
  });

  test('an error message ends the target with an Error response', async () => {
    const { ds } = setup();
    const c = collect(ds.query(makeRequest([{ channel: 'random-walk', params: { colour: 'red' } }])));
    FakeWebSocket.last().accept();
    FakeWebSocket.last().receive({ type: 'error', id: 's1', message: "unknown param 'colour'" });
    await new Promise((r) => setTimeout(r, 5));
    expect(c.last()).toMatchObject({ state: LoadingState.Error, error: "random-walk: unknown param 'colour'" });
    expect(c.completed()).toBe(true);
  });

  test('three queries emit together: on start and after a range change, never fewer frames than queries', async () => {
    const { ds } = setup();
    const now = Date.now();
    const targets = [
      { channel: 'random-walk', params: { series: 3 } },
      { channel: 'sine', params: { series: 2 } },
      { channel: 'random-walk' },
    ];
    const counts: number[] = [];
    const run = (from: string) => {
      const obs = ds.query(makeRequest(targets, { from, to: 'now' }));
      return obs.subscribe((r) => counts.push(r.data.length));
    };
    const sub1 = run('now-1m');
    const ws = FakeWebSocket.last();
    ws.accept(now);
    let [a, b, c] = ws.subscribes().map((m) => String(m.id));
    ws.receive(dataMsg(a, 'p1', [now - 3000], [1], true));
    ws.receive(dataMsg(c, 'p1', [now - 3000], [1], true));
    await new Promise((r) => setTimeout(r, 5));
    expect(counts).toEqual([]);
    ws.receive(dataMsg(b, 'p1', [now - 3000], [1], true));
    await new Promise((r) => setTimeout(r, 5));
    expect(counts).toEqual([3]);
    // The range change: Grafana ends the old query() and starts a new one.
    sub1.unsubscribe();
    counts.length = 0;
    const sub2 = run('now-5m');
    const ws2 = FakeWebSocket.last();
    if (ws2 !== ws) {
      ws2.accept(now); // the client closed the idle socket: a new one
    }
    [a, b, c] = ws2.subscribes().map((m) => String(m.id)).slice(-3);
    for (const id of [c, a, b]) {
      ws2.receive(dataMsg(id, 'p2', [now - 200_000, now - 1000], [1, 2], true));
      await new Promise((r) => setTimeout(r, 5));
    }
    ws2.receive(dataMsg(a, 'p3', [now - 500], [3]));
    await new Promise((r) => setTimeout(r, 5));
    expect(counts.length).toBeGreaterThan(0);
    expect(counts.every((n) => n === 3)).toBe(true);
    sub2.unsubscribe();
  });

  test('hidden and empty targets are skipped', async () => {
    const { ds } = setup();
    const c = collect(ds.query(makeRequest([{ channel: 'a', hide: true }, { channel: '' }])));
    expect(FakeWebSocket.instances).toHaveLength(0);
    expect(c.completed()).toBe(true);
  });

  test('cache keys ignore param order; live ends are detected', () => {
    expect(cacheKey({ channel: 'a', params: { b: 1, a: 2 }, fields: [] })).toBe(
      cacheKey({ channel: 'a', params: { a: 2, b: 1 }, fields: [] })
    );
    expect(cacheKey({ channel: 'a', params: {}, fields: ['x'] })).not.toBe(cacheKey({ channel: 'a', params: {}, fields: [] }));
    const now = Date.now();
    expect(isLiveEnd('now', now, now)).toBe(true);
    expect(isLiveEnd('now/d', now + 3600_000, now)).toBe(true);
    expect(isLiveEnd('now-1h', now - 3600_000, now)).toBe(false);
    expect(isLiveEnd(undefined, now, now)).toBe(false);
  });

  test('proxy access uses the proxy path for HTTP and the NDJSON stream', () => {
    const ds = new DataSource(
      instanceSettings({ url: 'http://live:8080', access: 'proxy' }, { url: '/api/datasources/proxy/uid/abc' })
    );
    expect(ds.baseUrl).toBe('/api/datasources/proxy/uid/abc/livedata');
    expect(ds.getTransport().constructor.name).toBe('HttpStreamClient');
  });

  test('a server that answers /api/channels unlike livedata gets a sentence, not "0 channels"', async () => {
    const server = http.createServer((req, res) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(req.url === '/api/health' ? '{"status":"ok","version":"x"}' : '{"items":[]}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const ds = new DataSource(instanceSettings({ url }));
      const result = await ds.testDatasource();
      expect(result.status).toBe('error');
      expect(result.message).toBe(`${url}: /api/channels did not answer {"channels": [...]} ({"items":[]}): is the URL a livedata server, of a version this client supports?`);
      await expect(ds.getChannels()).rejects.toThrow(/did not answer/);
    } finally {
      server.close();
    }
  });
});
