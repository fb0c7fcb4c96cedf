import { DataQueryResponse, FieldType, LoadingState, StreamingDataFrame } from '@grafana/data';
import { VirtualTimeScheduler } from 'rxjs';

import { FrameCache, cacheKey } from './cache';
import { StreamTransport, SubscribeRequest, SubscriptionHandlers } from './client';
import { FrameView } from './frames';
import { QueryStream, QueryStreamOptions, widthFits } from './QueryStream';
import { FrameStore } from './store/FrameStore';
import { dataMsg } from './testing/fakes';
import { LiveQuery } from './types';

/** A carrier that records subscriptions; the test plays the server through their handlers. */
class FakeTransport implements StreamTransport {
  subs: Array<{ req: SubscribeRequest; handlers: SubscriptionHandlers; active: boolean }> = [];

  subscribe(req: SubscribeRequest, handlers: SubscriptionHandlers): () => void {
    const sub = { req, handlers, active: true };
    this.subs.push(sub);
    return () => {
      sub.active = false;
    };
  }

  last() {
    return this.subs[this.subs.length - 1];
  }
}

const NOW = 1_700_000_000_000;
const query: LiveQuery = { refId: 'A', channel: 'x', params: {}, fields: [] };

/** The throttle's clock: `flush()` lets the trailing emissions out. */
const scheduler = new VirtualTimeScheduler();
const flush = () => scheduler.flush();

function setup(over: Partial<QueryStreamOptions> = {}) {
  const transport = new FakeTransport();
  const cache = new FrameCache();
  const opts: QueryStreamOptions = {
    scheduler,
    query,
    from: NOW - 60_000,
    to: NOW,
    live: true,
    maxLength: 1000,
    throttleMs: 0,
    transport,
    cache,
    ...over,
  };
  return { transport, cache, opts };
}

function run(opts: QueryStreamOptions) {
  const out: DataQueryResponse[] = [];
  const times: number[][] = [];
  let done = false;
  const sub = new QueryStream(opts).observable().subscribe({
    next: (r) => {
      out.push(r);
      const f = r.data[0] as StreamingDataFrame | undefined;
      times.push(f ? [...(f.fields.find((x) => x.type === FieldType.time)?.values ?? [])] : []);
    },
    complete: () => (done = true),
  });
  return { out, times, sub, done: () => done };
}

describe('QueryStream (fake transport, no Grafana runtime)', () => {
  test('subscribes from the range start; emits the merged frame with refId, notices and alias', () => {
    const { transport, opts } = setup({ query: { ...query, alias: 'temp' } });
    const r = run(opts);
    expect(transport.last().req).toEqual({ channel: 'x', from: NOW - 60_000, interval: 0 });
    const h = transport.last().handlers;
    h.onData(dataMsg('s1', 'p1', [NOW - 3000, NOW - 1000], [1, 3], true) as never);
    h.onData(dataMsg('s1', 'p2', [NOW - 2000], [2], false, true) as never);
    h.onNotice?.({ type: 'notice', level: 'warning', text: '5 points lost', lost: 5 });
    flush();
    expect(r.times[1]).toEqual([NOW - 3000, NOW - 2000, NOW - 1000]);
    const last = r.out[r.out.length - 1];
    const frame = last.data[0] as StreamingDataFrame;
    expect(last).toMatchObject({ key: 'A', state: LoadingState.Streaming });
    expect(frame.refId).toBe('A');
    expect(frame.fields[1].config.displayNameFromDS).toBe('temp');
    expect(frame.meta?.notices?.map((n) => n.text)).toEqual(['5 points lost']);
    r.sub.unsubscribe();
    expect(transport.last().active).toBe(false);
  });

  test('a finite range asks for `to` and completes with Done', () => {
    const { transport, opts } = setup({ live: false, to: NOW - 10_000 });
    const r = run(opts);
    expect(transport.last().req.to).toBe(NOW - 10_000);
    transport.last().handlers.onData(dataMsg('s1', 'p', [NOW - 20_000], [1], true) as never);
    transport.last().handlers.onComplete?.();
    flush();
    expect(r.out[r.out.length - 1].state).toBe(LoadingState.Done);
    expect(r.done()).toBe(true);
  });

  test('reconnecting and resumed show on the frame with the rows recovered', () => {
    const { transport, opts } = setup();
    const r = run(opts);
    const h = transport.last().handlers;
    h.onData(dataMsg('s1', 'p1', [NOW - 3000], [1], true) as never);
    h.onStatus?.({ state: 'reconnecting', attempt: 1, delayMs: 250, reason: 'connection lost' });
    flush();
    expect(r.out[r.out.length - 1].data[0].meta.notices[0].text).toBe('reconnecting… (connection lost; attempt 1, next in 0.3 s)');
    h.onData(dataMsg('s1', 'p2', [NOW - 2000, NOW - 1000], [2, 3]) as never);
    h.onStatus?.({ state: 'resumed', recovered: 2 });
    flush();
    expect(r.out[r.out.length - 1].data[0].meta.notices[0].text).toBe('resumed, 2 points recovered');
  });

  test('a frame the store refuses ends the query with an error that says why', () => {
    const { transport, opts } = setup();
    const r = run(opts);
    const h = transport.last().handlers;
    h.onData(dataMsg('s1', 'p1', [NOW - 3000], [1], true) as never);
    h.onData({ type: 'data', id: 's1', frame: { data: { values: [[NOW], [1], [2]] } } });
    flush();
    const last = r.out[r.out.length - 1];
    expect(last.state).toBe(LoadingState.Error);
    expect(last.error?.message).toBe('x: the server sent data this plugin cannot use: a data message has 3 columns but the schema has 2 fields');
    expect(last.data[0].length).toBe(1);
    expect(r.done()).toBe(true);
    expect(transport.last().active).toBe(false);
  });

  test('an error during subscribe still tears the subscription down', () => {
    const transport: StreamTransport = {
      subscribe: (_req, handlers) => {
        handlers.onError?.('refused at once');
        return () => (ended = true);
      },
    };
    let ended = false;
    const r = run(setup({ transport }).opts);
    expect(r.out[0].error?.message).toBe('x: refused at once');
    expect(ended).toBe(true);
  });

  test('a refresh shows the cached rows at once and resumes after their position', () => {
    const { transport, cache, opts } = setup();
    const r1 = run(opts);
    transport.last().handlers.onData(dataMsg('s1', 'p1', [NOW - 50_000, NOW - 2000], [1, 2], true) as never);
    r1.sub.unsubscribe();
    expect(cache.get(cacheKey(query))).toMatchObject({ active: false, coveredFrom: NOW - 60_000 });
    expect(cache.get(cacheKey(query))?.store.trimmedThrough).toBeUndefined();

    // A narrower range: the cached rows are trimmed to it.
    const r2 = run({ ...opts, from: NOW - 30_000 });
    expect(r2.times[0]).toEqual([NOW - 2000]);
    expect(transport.last().req).toMatchObject({ since: 'p1' });
    expect(transport.last().req.from).toBeUndefined();
    // While it streams, a second panel with the same query takes a copy.
    const r3 = run({ ...opts, from: NOW - 30_000 });
    transport.subs[1].handlers.onData(dataMsg('s2', 'p2', [NOW - 1000], [3]) as never);
    flush();
    expect(r2.times[r2.times.length - 1]).toEqual([NOW - 2000, NOW - 1000]);
    expect(r3.times[r3.times.length - 1]).toEqual([NOW - 2000]);
    r2.sub.unsubscribe();
    r3.sub.unsubscribe();
  });

  test('a wider range than the cache covers starts over; a finite range never uses it', () => {
    const { transport, opts } = setup();
    const r1 = run(opts);
    transport.last().handlers.onData(dataMsg('s1', 'p1', [NOW - 2000], [1], true) as never);
    r1.sub.unsubscribe();
    run({ ...opts, from: NOW - 120_000 });
    expect(transport.last().req).toMatchObject({ from: NOW - 120_000 });
    run({ ...opts, live: false });
    expect(transport.last().req.since).toBeUndefined();
  });

  test('a cache that had to drop rows newer than the range start is not reused', () => {
    const { transport, opts } = setup({ maxLength: 2 });
    const r1 = run(opts);
    transport.last().handlers.onData(dataMsg('s1', 'p1', [NOW - 40_000, NOW - 20_000, NOW - 1000], [1, 2, 3], true) as never);
    r1.sub.unsubscribe();
    // The row at NOW - 40 s was dropped: from NOW - 50 s is not all here; from NOW - 30 s is.
    run({ ...opts, from: NOW - 50_000 });
    expect(transport.last().req).toMatchObject({ from: NOW - 50_000 });
    run({ ...opts, from: NOW - 30_000 });
    expect(transport.last().req).toMatchObject({ since: 'p1' });
  });

  test('emissions are throttled, the trailing one kept', () => {
    const { transport, opts } = setup({ throttleMs: 100 });
    const r = run(opts);
    const h = transport.last().handlers;
    h.onData(dataMsg('s1', 'p1', [NOW - 5000], [1], true) as never);
    for (let i = 1; i <= 5; i++) {
      h.onData(dataMsg('s1', `p${i + 1}`, [NOW - 5000 + i], [1]) as never);
    }
    expect(r.out).toHaveLength(1);
    flush();
    expect(r.out).toHaveLength(2);
    expect(r.times[1]).toHaveLength(6);
  });

  test('a field gained in a throttled-away message still reaches Grafana as a schema change', () => {
    const { transport, opts } = setup({ throttleMs: 100 });
    const schemas: boolean[] = [];
    new QueryStream(opts).observable().subscribe((r) => schemas.push((r.data[0] as StreamingDataFrame).packetInfo.schemaChanged));
    const h = transport.last().handlers;
    h.onData(dataMsg('s1', 'p1', [NOW - 5000], [1], true) as never);
    h.onData({
      type: 'data',
      id: 's1',
      frame: {
        schema: { fields: [{ name: 'time', type: 'time' }, { name: 'v', type: 'number' }, { name: 'w', type: 'number' }] },
        data: { values: [[NOW - 4000], [2], [3]] },
      },
    });
    h.onData({ type: 'data', id: 's1', frame: { data: { values: [[NOW - 3000], [4], [5]] } } });
    flush();
    h.onData({ type: 'data', id: 's1', frame: { data: { values: [[NOW - 2000], [6], [7]] } } });
    flush();
    expect(schemas).toEqual([true, true, false]);
  });
});

describe('QueryStream: panel resolution', () => {
  test('asks for maxDataPoints buckets at least intervalMs wide; a refresh resumes in the mode it got', () => {
    const { transport, opts } = setup({ maxDataPoints: 800, intervalMs: 50 });
    const r1 = run(opts);
    expect(transport.last().req).toMatchObject({ from: NOW - 60_000, max_points: 800, resolution_ms: 50 });
    transport.last().handlers.onData({ ...dataMsg('s1', 'p1', [NOW - 2000, NOW - 1950], [1, 2], true), bucket_ms: 100 } as never);
    r1.sub.unsubscribe();
    run(opts);
    // the rows held are 100 ms buckets: the resume keeps that width (and the range, should the position be lost)
    expect(transport.last().req).toMatchObject({ since: 'p1', resolution_ms: 100, from: NOW - 60_000 });
    expect(transport.last().req.max_points).toBeUndefined();
  });

  test('raw points (the range was sparse) resume as raw points; no maxDataPoints, no buckets', () => {
    const { transport, opts } = setup({ maxDataPoints: 800, intervalMs: 50 });
    const r1 = run(opts);
    transport.last().handlers.onData(dataMsg('s1', 'p1', [NOW - 2000], [1], true) as never);
    r1.sub.unsubscribe();
    run(opts);
    expect(transport.last().req).toMatchObject({ since: 'p1' });
    expect(transport.last().req.max_points).toBeUndefined();
    expect(transport.last().req.resolution_ms).toBeUndefined();
    const plain = setup({ intervalMs: 50 });
    run(plain.opts);
    expect(plain.transport.last().req.resolution_ms).toBeUndefined();
  });

  test('cached buckets are reused only while their width suits the range', () => {
    expect(widthFits(undefined, 60_000, 600)).toBe(true);
    expect(widthFits(100, 60_000, 600)).toBe(true);
    expect(widthFits(100, 600_000, 600)).toBe(false); // zoomed out: 1 s buckets wanted
    expect(widthFits(1000, 60_000, 600)).toBe(false); // zoomed in: 100 ms wanted
    // Grafana's interval (a "Min interval" of 1s) asks for 1 s buckets over a minute: the same width
    expect(widthFits(1000, 60_000, 1000, 1000)).toBe(true);
    expect(widthFits(1000, 60_000, 1000, 100)).toBe(false);
    expect(widthFits(1000, 600_000, 1000, 500)).toBe(true);
  });
});

describe('FrameView', () => {
  test('one frame whose fields are the store columns; schemaChanged only when fields are added', () => {
    const store = new FrameStore({ missing: undefined });
    const view = new FrameView(store);
    store.merge(dataMsg('A', 'p', [1, 2], [10, 20], true));
    const f = view.update();
    expect(f.fields.map((x) => [x.name, x.type])).toEqual([
      ['time', FieldType.time],
      ['v', FieldType.number],
    ]);
    expect(f.length).toBe(2);
    expect(f.packetInfo.schemaChanged).toBe(true);
    expect(f.fields[0].values).toBe(store.times);
    store.merge(dataMsg('A', 'p', [3], [30]));
    expect(view.update()).toBe(f);
    expect(f.packetInfo.schemaChanged).toBe(false);
    expect(f.fields[1].values).toEqual([10, 20, 30]);
    store.merge({
      frame: {
        schema: { fields: [{ name: 'time', type: 'time' }, { name: 'v', type: 'number' }, { name: 'w', type: 'string', labels: { a: 'b' } }] },
        data: { values: [[4], [40], ['x']] },
      },
    });
    view.update();
    expect(f.packetInfo.schemaChanged).toBe(true);
    expect(f.fields[2]).toMatchObject({ name: 'w', type: FieldType.string, labels: { a: 'b' } });
    expect(f.fields[2].values).toEqual([undefined, undefined, undefined, 'x']);
    expect(f.length).toBe(4);
  });
});
