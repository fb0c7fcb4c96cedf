/**
 * The data source against a real `livedata serve` (started by jest globalSetup), over the `ws`
 * package: backfill then live, several targets on one socket, teardown, restarts, cache.
 */
jest.mock('@grafana/runtime', () => jest.requireActual('../testing/runtime'));

import { LoadingState } from '@grafana/data';

import { DataSource } from '../datasource';
import {
  collect,
  instanceSettings,
  isSorted,
  makeRequest,
  push,
  recordingWebSocket,
  serverUrl,
  sleep,
  uniqueChannel,
  waitFor,
} from '../testing/harness';
import { resetRuntime, setTemplateVariables } from '../testing/runtime';
import { LiveOptions } from '../types';

function setup(jsonData: Partial<LiveOptions> = {}) {
  const rec = recordingWebSocket();
  const ds = new DataSource(instanceSettings({ url: serverUrl(), throttleMs: 0, ...jsonData }), {
    WebSocket: rec.Ctor,
    client: { idleCloseMs: 0 },
  });
  return { ds, rec };
}

afterEach(() => resetRuntime());

describe('streaming from a real livedata serve', () => {
  test('backfill of the range, then live points, in order and without duplicates', async () => {
    const { ds, rec } = setup();
    const c = collect(ds.query(makeRequest([{ channel: 'random-walk' }], { from: 'now-10s', to: 'now' })));
    try {
      const first = await waitFor(() => c.snapshots.find((s) => s.length > 0), 'backfilled frame');
      expect(first.state).toBe(LoadingState.Streaming);
      expect(first.key).toBe('A');
      expect(first.refIds).toEqual(['A']);
      expect(first.fields).toEqual(['time', 'series0']);
      // 10 s of history at 50 ms.
      expect(first.length).toBeGreaterThan(150);
      expect(first.times[0]).toBeGreaterThanOrEqual(Date.now() - 11_000);
      const firstLast = first.times[first.times.length - 1];
      const later = await waitFor(
        () => c.snapshots.find((s) => s.times.length && s.times[s.times.length - 1] >= firstLast + 500),
        'live points'
      );
      expect(isSorted(later.times)).toBe(true);
      const sub = rec.sent().find((m) => m.type === 'subscribe');
      expect(sub).toMatchObject({ channel: 'random-walk' });
      expect(typeof sub?.from).toBe('number');
      expect(sub?.to).toBeUndefined();
    } finally {
      c.unsubscribe();
    }
  });

  test('the schema packet is emitted at once as Streaming, even without rows', async () => {
    const { ds } = setup();
    const channel = uniqueChannel('empty');
    await push(serverUrl(), channel, [{ time: Date.now() - 60 * 60_000, v: 1 }]);
    const c = collect(ds.query(makeRequest([{ channel }], { from: 'now-1m', to: 'now' })));
    try {
      const s = await waitFor(() => c.snapshots[0], 'first emission', 5000);
      expect(s.state).toBe(LoadingState.Streaming);
      expect(s.length).toBe(0);
      expect(s.fields).toEqual(['time', 'v']);
    } finally {
      c.unsubscribe();
    }
  });

  test('two targets share one socket; unsubscribing closes it', async () => {
    const { ds, rec } = setup();
    const c = collect(
      ds.query(
        makeRequest([{ channel: 'random-walk', params: { series: 3 } }, { channel: 'sine' }], { from: 'now-5s', to: 'now' })
      )
    );
    await waitFor(() => c.last('A')?.length && c.last('B')?.length, 'frames for A and B');
    expect(c.last('A')?.fields).toEqual(['time', 'series0', 'series1', 'series2']);
    expect(c.last('B')?.fields).toEqual(['time', 'series0']);
    // One response for the panel, always under the same key (Grafana's runRequest replaces by key).
    expect(new Set(c.snapshots.map((s) => s.key))).toEqual(new Set(['A,B']));
    expect(c.last()?.refIds).toEqual(['A', 'B']);
    expect(rec.sockets).toHaveLength(1);
    expect(rec.sent().filter((m) => m.type === 'subscribe')).toHaveLength(2);
    c.unsubscribe();
    await waitFor(() => rec.sockets[0].socket.readyState === rec.sockets[0].socket.CLOSED, 'socket closed');
    expect(rec.sent().filter((m) => m.type === 'unsubscribe')).toHaveLength(2);
  });

  test('a finite range loads history and ends with Done', async () => {
    const { ds, rec } = setup();
    const now = Date.now();
    const c = collect(ds.query(makeRequest([{ channel: 'sine' }], { from: now - 8000, to: now - 3000 })));
    await waitFor(() => c.completed(), 'completion');
    const last = c.last();
    expect(last?.state).toBe(LoadingState.Done);
    expect(last!.length).toBeGreaterThan(80);
    expect(last!.times[0]).toBeGreaterThanOrEqual(now - 8000);
    expect(last!.times[last!.times.length - 1]).toBeLessThanOrEqual(now - 3000);
    expect(rec.sent().find((m) => m.type === 'subscribe')).toMatchObject({ to: now - 3000 });
  });

  test('changing the query ends the old subscription and starts a new one', async () => {
    const { ds, rec } = setup();
    const c1 = collect(ds.query(makeRequest([{ channel: 'random-walk' }], { from: 'now-5s', to: 'now' })));
    await waitFor(() => c1.last()?.length, 'first query data');
    c1.unsubscribe();
    const c2 = collect(ds.query(makeRequest([{ channel: 'sine', params: { series: 2 } }], { from: 'now-5s', to: 'now' })));
    try {
      await waitFor(() => c2.last()?.length, 'second query data');
      expect(c2.last()?.fields).toEqual(['time', 'series0', 'series1']);
      const subs = rec.sent().filter((m) => m.type === 'subscribe');
      expect(subs.map((m) => m.channel)).toEqual(['random-walk', 'sine']);
      expect(subs[1].params).toEqual({ series: 2 });
      expect(subs[1].since).toBeUndefined();
      expect(rec.sent().filter((m) => m.type === 'unsubscribe')).toHaveLength(1);
      const before = c1.snapshots.length;
      await sleep(200);
      expect(c1.snapshots.length).toBe(before);
    } finally {
      c2.unsubscribe();
    }
  });

  test('refresh reuses the cached frame and asks only for points since its position', async () => {
    const { ds, rec } = setup();
    const req = () => makeRequest([{ channel: 'random-walk', params: { series: 2 } }], { from: 'now-10s', to: 'now' });
    const c1 = collect(ds.query(req()));
    await waitFor(() => (c1.last()?.length ?? 0) > 150, 'first run data');
    await sleep(300);
    c1.unsubscribe();
    const kept = c1.last()!;
    const firstSub = rec.sent().filter((m) => m.type === 'subscribe')[0];
    const position = [...rec.sockets.flatMap((s) => s.received)]
      .reverse()
      .find((m) => m.type === 'data' && m.id === firstSub.id && m.position)?.position;
    expect(position).toBeTruthy();

    await sleep(500);
    const c2 = collect(ds.query(req()));
    try {
      // The cached frame is emitted right after subscribe() (a microtask: panel.ts says why),
      // before the server can answer.
      expect(c2.snapshots).toHaveLength(0);
      await Promise.resolve();
      expect(c2.snapshots.length).toBeGreaterThanOrEqual(1);
      expect(c2.snapshots[0].length).toBeGreaterThan(150);
      expect(c2.snapshots[0].times.slice(-5)).toEqual(kept.times.slice(-5));
      await waitFor(() => rec.sent().filter((m) => m.type === 'subscribe').length === 2, 'second subscribe');
      const second = rec.sent().filter((m) => m.type === 'subscribe')[1];
      expect(second.since).toBe(position);
      expect(second.from).toBeUndefined();
      const keptLast = kept.times[kept.times.length - 1];
      const grown = await waitFor(
        () => c2.snapshots.find((s) => s.times[s.times.length - 1] > keptLast + 600),
        'points after the refresh'
      );
      // The gap (~500 ms, 10 points) was filled, no duplicates, and the window is 10 s.
      expect(isSorted(grown.times)).toBe(true);
      const gap = grown.times.filter((t) => t > keptLast && t <= keptLast + 550);
      expect(gap.length).toBeGreaterThanOrEqual(9);
      expect(grown.times[grown.times.length - 1] - grown.times[0]).toBeLessThanOrEqual(10_000);
      // Only the missing points travelled: the first data after `since` is small.
      const secondData = rec.sockets
        .flatMap((s) => s.received)
        .filter((m) => m.type === 'data' && m.id === second.id) as Array<{ frame: { data?: { values: unknown[][] } } }>;
      const rows = secondData.map((m) => m.frame.data?.values?.[0]?.length ?? 0);
      expect(Math.max(...rows)).toBeLessThan(100);
    } finally {
      c2.unsubscribe();
    }
  });

  test('a wider range after a refresh does not reuse the cache', async () => {
    const { ds, rec } = setup();
    const c1 = collect(ds.query(makeRequest([{ channel: 'sine', params: { period: 2000 } }], { from: 'now-5s', to: 'now' })));
    await waitFor(() => c1.last()?.length, 'data');
    c1.unsubscribe();
    const c2 = collect(ds.query(makeRequest([{ channel: 'sine', params: { period: 2000 } }], { from: 'now-20s', to: 'now' })));
    try {
      await waitFor(() => (c2.last()?.length ?? 0) > 300, 'wider backfill');
      const second = rec.sent().filter((m) => m.type === 'subscribe')[1];
      expect(second.since).toBeUndefined();
      expect(typeof second.from).toBe('number');
    } finally {
      c2.unsubscribe();
    }
  });

  test('throttled emissions always include the trailing value', async () => {
    const { ds } = setup({ throttleMs: 400 });
    const channel = uniqueChannel('throttle');
    const t0 = Date.now() - 5000;
    await push(serverUrl(), channel, [{ time: t0, v: 0 }]);
    // interval 0: the server sends every push at once; only the client throttles.
    const c = collect(ds.query(makeRequest([{ channel, interval: 0 }], { from: 'now-1m', to: 'now' })));
    try {
      await waitFor(() => c.last()?.length === 1, 'first point');
      const startCount = c.snapshots.length;
      for (let i = 1; i <= 6; i++) {
        await push(serverUrl(), channel, [{ time: t0 + i * 100, v: i }]);
        await sleep(40);
      }
      const last = await waitFor(() => c.snapshots.find((s) => s.length === 7), 'trailing emission with all 7 points', 3000);
      expect(last.times[6]).toBe(t0 + 600);
      // 6 messages within ~300 ms: at most a leading and a trailing emission per 400 ms window.
      expect(c.snapshots.length - startCount).toBeLessThanOrEqual(3);
    } finally {
      c.unsubscribe();
    }
  });

  test('template variables are interpolated in channel, params, fields and alias', async () => {
    setTemplateVariables({ chan: 'random-walk', n: '2', f: ['series1'], who: 'walker' });
    const { ds, rec } = setup();
    const c = collect(
      ds.query(
        makeRequest([{ channel: '$chan', params: { series: '$n', spread: '${spread}' }, fields: ['$f'], alias: '$who {{__name__}}' }], {
          from: 'now-5s',
          to: 'now',
        }, { scopedVars: { spread: { text: '3', value: '3' } } })
      )
    );
    try {
      const s = await waitFor(() => c.snapshots.find((x) => x.length > 0), 'data');
      const sub = rec.sent().find((m) => m.type === 'subscribe');
      expect(sub).toMatchObject({ channel: 'random-walk', params: { series: 2, spread: 3 }, fields: ['series1'] });
      expect(s.fields).toEqual(['time', 'series1']);
      expect(s.displayNames[1]).toBe('walker series1');
    } finally {
      c.unsubscribe();
    }
  });

  test('a bad param ends that target with an error, the others keep streaming', async () => {
    const { ds } = setup();
    const c = collect(
      ds.query(makeRequest([{ channel: 'random-walk', params: { colour: 'red' } }, { channel: 'sine' }], { from: 'now-2s', to: 'now' }))
    );
    try {
      const err = await waitFor(() => c.snapshots.find((s) => s.state === LoadingState.Error), 'error response');
      // One response for the panel: the error names its query, B's frames ride along.
      expect(err.key).toBe('A,B');
      expect(err.errorRefIds).toEqual(['A']);
      expect(err.error).toMatch(/colour/);
      const lastB = () => c.last('B')?.times.slice(-1)[0] ?? 0;
      const t = lastB();
      await waitFor(() => lastB() > t + 200, 'B still streaming');
    } finally {
      c.unsubscribe();
    }
  });

  test('the HTTP stream transport gives the same frames', async () => {
    const ds = new DataSource(instanceSettings({ url: serverUrl(), transport: 'http', throttleMs: 0 }));
    const c = collect(ds.query(makeRequest([{ channel: 'random-walk', params: { series: 2 } }], { from: 'now-5s', to: 'now' })));
    try {
      const first = await waitFor(() => c.snapshots.find((s) => s.length > 50), 'backfill over HTTP');
      expect(first.fields).toEqual(['time', 'series0', 'series1']);
      const lastT = first.times[first.times.length - 1];
      const later = await waitFor(() => c.snapshots.find((s) => s.times[s.times.length - 1] > lastT + 300), 'live over HTTP');
      expect(isSorted(later.times)).toBe(true);
    } finally {
      c.unsubscribe();
    }
  });

  test('asked with maxDataPoints, a dense channel comes as at most that many buckets, live too', async () => {
    const { ds, rec } = setup();
    // the generator fills its hour of history (72,000 rows at 50 ms) when it starts
    const request = makeRequest([{ channel: 'sine', params: { series: 3 } }], { from: 'now-1h', to: 'now' }, {
      maxDataPoints: 300,
      intervalMs: 10_000,
    });
    const c = collect(ds.query(request));
    try {
      const first = await waitFor(() => c.snapshots.find((s) => s.length > 0), 'buckets', 20_000);
      const sub = rec.sent().find((m) => m.type === 'subscribe');
      expect(sub).toMatchObject({ max_points: 300, resolution_ms: 10_000 });
      expect(first.fields).toEqual(['time', 'series0', 'series1', 'series2']);
      // 1 h / 300 = 12 s -> 15 s buckets: two rows each (every field's min and max)
      expect(first.length).toBeLessThanOrEqual(2 * 300);
      expect(first.length).toBeGreaterThan(2 * 200);
      expect(new Set(first.times.map((t) => t % 7500))).toEqual(new Set([0]));
      expect(isSorted(first.times)).toBe(true);
      // live: the open bucket is sent again (replaced), new buckets are added; still at most 300
      const lastT = first.times[first.times.length - 1];
      const later = await waitFor(() => c.snapshots.find((s) => s.times[s.times.length - 1] > lastT), 'a new bucket', 20_000);
      expect(later.length).toBeLessThanOrEqual(2 * 300 + 2);
      expect(isSorted(later.times)).toBe(true);
    } finally {
      c.unsubscribe();
    }
  });
});
