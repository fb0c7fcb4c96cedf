/**
 * Reconnect after the server restarts: the client backs off, reconnects, resubscribes with
 * `since`, and the frame shows "reconnecting…" then "resumed, N points recovered".
 * This suite runs its own `livedata serve` (it kills and restarts it on the same port).
 */
jest.mock('@grafana/runtime', () => jest.requireActual('../testing/runtime'));

import { RunningServer, freePort, startServer } from '../../.config/jest/livedataServer';
import { LiveClient } from '../client';
import { DataSource } from '../datasource';
import { collect, instanceSettings, isSorted, makeRequest, push, recordingWebSocket, sleep, waitFor } from '../testing/harness';

jest.setTimeout(60_000);

let server: RunningServer | undefined;

afterEach(async () => {
  await server?.stop();
  server = undefined;
});

describe.each(['ws', 'http'] as const)('server restart over %s', (transport) => {
  test('reconnects, resumes with since, and reports it on the frame', async () => {
    server = await startServer({ args: ['--retention', '30'] });
    const port = server.port;
    const rec = recordingWebSocket();
    const ds = new DataSource(instanceSettings({ url: server.url, transport, throttleMs: 0 }), {
      WebSocket: rec.Ctor,
      client: { idleCloseMs: 0, backoffBaseMs: 100, resumeSettleMs: 300 },
    });
    const c = collect(ds.query(makeRequest([{ channel: 'random-walk' }], { from: 'now-30s', to: 'now' })));
    try {
      const before = await waitFor(() => c.snapshots.find((s) => s.length > 300), 'data before the restart');
      await server.stop();
      const down = Date.now();
      await waitFor(
        () => c.snapshots.find((s) => s.notices.some((n) => n.startsWith('reconnecting…'))),
        '"reconnecting…" notice'
      );
      await sleep(Math.max(0, 700 - (Date.now() - down)));
      server = await startServer({ port, args: ['--retention', '30'] });
      const resumed = await waitFor(
        () => c.snapshots.find((s) => s.notices.some((n) => /^resumed, \d+ points recovered$/.test(n))),
        '"resumed" notice',
        20_000
      );
      const n = Number(/resumed, (\d+) points/.exec(resumed.notices.find((x) => x.startsWith('resumed'))!)![1]);
      // The restarted server's generator refilled its history: the points of the outage come back.
      expect(n).toBeGreaterThan(5);
      // Its positions are from another epoch: the server says so, and that is shown too.
      expect(resumed.notices.some((x) => /points lost/.test(x))).toBe(true);
      const lastBefore = before.times[before.times.length - 1];
      const after = await waitFor(
        () => c.snapshots.find((s) => s.times[s.times.length - 1] > Date.now() - 300),
        'live data after the restart'
      );
      // One continuous, ordered series across the outage: old points up to the drop, then the
      // restarted server's points (those of the outage included), then live ones.
      expect(after.times[0]).toBeLessThanOrEqual(lastBefore);
      expect(isSorted(after.times)).toBe(true);
      const gaps = after.times.slice(1).map((t, i) => t - after.times[i]);
      expect(Math.max(...gaps)).toBeLessThanOrEqual(150);
      if (transport === 'ws') {
        expect(rec.sockets.length).toBeGreaterThanOrEqual(2);
        const subs = rec.sent().filter((m) => m.type === 'subscribe');
        expect(subs[subs.length - 1].since).toBeTruthy();
        expect(subs[subs.length - 1].from).toBeUndefined();
      }
    } finally {
      c.unsubscribe();
    }
  });
});

test('backoff is capped and the socket gives up nothing while subscriptions live', async () => {
  // No server on this port at all: attempts continue with growing delays.
  const url = `http://127.0.0.1:${await freePort()}`;
  const rec = recordingWebSocket();
  const client = new LiveClient({ url, WebSocket: rec.Ctor, backoffBaseMs: 50, backoffCapMs: 200 });
  const delays: number[] = [];
  const stop = client.subscribe(
    { channel: 'random-walk' },
    { onData: () => undefined, onStatus: (s) => s.state === 'reconnecting' && delays.push(s.delayMs) }
  );
  await waitFor(() => delays.length >= 5, 'five reconnect attempts', 10_000);
  stop();
  expect(Math.max(...delays)).toBeLessThanOrEqual(200);
  expect(client.connected).toBe(false);
  const attempts = rec.sockets.length;
  await sleep(500);
  expect(rec.sockets.length).toBe(attempts);
});

test('a cached position beyond retention shows "N points lost: beyond retention"', async () => {
  server = await startServer({ args: ['--retention-points', '50'] });
  const rec = recordingWebSocket();
  const ds = new DataSource(instanceSettings({ url: server.url, throttleMs: 0 }), {
    WebSocket: rec.Ctor,
    client: { idleCloseMs: 0 },
  });
  const channel = 'test/retention';
  const t0 = Date.now() - 50_000;
  const points = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ time: t0 + (from + i) * 10, v: from + i }));
  await push(server.url, channel, points(0, 10));
  const req = () => makeRequest([{ channel, interval: 0 }], { from: 'now-1m', to: 'now' });
  const c1 = collect(ds.query(req()));
  await waitFor(() => c1.last()?.length === 10, 'ten points');
  c1.unsubscribe();
  // 200 more points while nobody listens: the server keeps only the newest 50.
  await push(server.url, channel, points(10, 200));
  const c2 = collect(ds.query(req()));
  try {
    const s = await waitFor(() => c2.snapshots.find((x) => x.notices.some((n) => /points lost: beyond retention/.test(n))), 'loss notice');
    expect(s.notices.find((n) => /lost/.test(n))).toMatch(/^150 points lost: beyond retention/);
    const full = await waitFor(() => c2.snapshots.find((x) => x.length === 60), 'cached 10 + retained 50');
    expect(isSorted(full.times)).toBe(true);
    expect(rec.sent().filter((m) => m.type === 'subscribe')[1].since).toBeTruthy();
  } finally {
    c2.unsubscribe();
  }
});
