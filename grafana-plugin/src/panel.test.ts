import { DataFrame, DataQueryResponse, LoadingState, toDataFrame } from '@grafana/data';
import { Observable, Subject, VirtualTimeScheduler } from 'rxjs';

import { ChangeSource, wholePanel } from './panel';
import type { Emission } from './QueryStream';

/** A query the test drives: `answer(rows)` is a change whose frame has that many rows. */
class FakeQuery implements ChangeSource {
  readonly subject = new Subject<Emission>();
  subscribed = 0;
  torn = 0;
  builds = 0;

  constructor(readonly refId: string) {}

  changes(): Observable<Emission> {
    return new Observable<Emission>((s) => {
      this.subscribed++;
      const sub = this.subject.subscribe(s);
      return () => {
        this.torn++;
        sub.unsubscribe();
      };
    });
  }

  answer(rows: number, state = LoadingState.Streaming, error?: string): void {
    this.subject.next(() => {
      this.builds++;
      const frame = toDataFrame({ refId: this.refId, fields: [{ name: 'v', values: new Array(rows).fill(1) }] });
      return {
        data: [frame],
        key: this.refId,
        state: error ? LoadingState.Error : state,
        ...(error ? { error: { message: error, refId: this.refId }, errors: [{ message: error, refId: this.refId }] } : {}),
      };
    });
  }
}

function setup(n: number, throttleMs = 100, firstWaitMs = 1000) {
  const scheduler = new VirtualTimeScheduler();
  const queries = Array.from({ length: n }, (_, i) => new FakeQuery(String.fromCharCode(65 + i)));
  const out: DataQueryResponse[] = [];
  let completed = false;
  const sub = wholePanel(queries, { key: queries.map((q) => q.refId).join(','), throttleMs, firstWaitMs, scheduler }).subscribe({
    next: (r) => out.push(r),
    complete: () => (completed = true),
  });
  /** Run the clock to `ms` (absolute virtual time). */
  const at = (ms: number) => {
    scheduler.maxFrames = ms;
    scheduler.flush();
  };
  const refIds = (r: DataQueryResponse) => (r.data as DataFrame[]).map((f) => f.refId);
  return { scheduler, queries, out, sub, at, refIds, completed: () => completed };
}

describe('wholePanel', () => {
  test('nothing until every query answered, then one emission with all of them', () => {
    const t = setup(3);
    t.queries[0].answer(5);
    t.queries[2].answer(1);
    t.at(50);
    expect(t.out).toEqual([]);
    t.queries[1].answer(2);
    expect(t.out).toHaveLength(1);
    expect(t.refIds(t.out[0])).toEqual(['A', 'B', 'C']);
    expect(t.out[0].state).toBe(LoadingState.Streaming);
    expect(t.out[0].key).toBe('A,B,C');
  });

  test('all queries answering at subscribe (a refresh from the cache) emit at once, right after subscribe()', async () => {
    const scheduler = new VirtualTimeScheduler();
    const sources: ChangeSource[] = ['A', 'B'].map((refId) => ({
      changes: () =>
        new Observable<Emission>((s) => {
          s.next(() => ({ data: [toDataFrame({ refId, fields: [] })], state: LoadingState.Streaming }));
        }),
    }));
    const out: DataQueryResponse[] = [];
    const sub = wholePanel(sources, { key: 'A,B', throttleMs: 100, scheduler }).subscribe((r) => out.push(r));
    // Not inside subscribe(): Grafana's runRequest would end that subscription and start another.
    expect(out).toEqual([]);
    await Promise.resolve();
    expect(out.map((r) => r.data.length)).toEqual([2]);
    sub.unsubscribe();
    // Unsubscribed before the microtask: nothing.
    const out2: DataQueryResponse[] = [];
    wholePanel(sources, { key: 'A,B', throttleMs: 100, scheduler })
      .subscribe((r) => out2.push(r))
      .unsubscribe();
    await Promise.resolve();
    expect(out2).toEqual([]);
  });

  test('every emission has the one key, also when the first query has no frame yet', () => {
    const t = setup(3, 100, 500);
    t.queries[1].answer(1);
    t.queries[2].answer(1);
    t.at(500);
    t.queries[0].answer(1);
    t.at(700);
    expect(t.out.length).toBeGreaterThanOrEqual(2);
    expect(new Set(t.out.map((r) => r.key))).toEqual(new Set(['A,B,C']));
    // Grafana's request runner files each response under `key ?? data[0]?.refId ?? 'A'` and draws
    // the frames of every key it holds: the panel shows each query once, not a stale B and C too.
    const held = new Map<string, DataQueryResponse>();
    for (const r of t.out) {
      held.set(r.key ?? (r.data[0] as DataFrame | undefined)?.refId ?? 'A', r);
    }
    const drawn = [...held.values()].flatMap((r) => (r.data as DataFrame[]).map((f) => f.refId));
    expect(drawn).toEqual(['A', 'B', 'C']);
  });

  test('a query that does not answer within firstWaitMs does not hold the others back', () => {
    const t = setup(3, 100, 500);
    t.queries[0].answer(1);
    t.queries[1].answer(1);
    t.at(499);
    expect(t.out).toEqual([]);
    t.at(500);
    expect(t.out).toHaveLength(1);
    expect(t.refIds(t.out[0])).toEqual(['A', 'B']);
    expect(t.out[0].state).toBe(LoadingState.Loading);
    t.queries[2].answer(1);
    t.at(700);
    expect(t.refIds(t.out[t.out.length - 1])).toEqual(['A', 'B', 'C']);
    expect(t.out[t.out.length - 1].state).toBe(LoadingState.Streaming);
  });

  test('after the start every emission has every query, throttled together; frames built once per emission', () => {
    const t = setup(3);
    t.queries.forEach((q) => q.answer(1));
    const builds = t.queries.map((q) => q.builds);
    expect(builds).toEqual([1, 1, 1]);
    // A burst from all three inside one interval: one trailing emission.
    for (let i = 0; i < 10; i++) {
      t.queries[i % 3].answer(2 + i);
    }
    t.at(100);
    expect(t.out).toHaveLength(2);
    expect(t.queries.map((q) => q.builds)).toEqual([2, 2, 2]);
    for (const r of t.out) {
      expect(t.refIds(r)).toEqual(['A', 'B', 'C']);
    }
    // The trailing emission has the newest of each.
    expect((t.out[1].data as DataFrame[]).map((f) => f.length)).toEqual([11, 9, 10]);
  });

  test('an error stays on the panel with its frames; the others go on', () => {
    const t = setup(2);
    t.queries[0].answer(1);
    t.queries[1].answer(1);
    t.queries[1].answer(1, LoadingState.Error, 'B: boom');
    t.queries[1].subject.complete();
    t.at(100);
    t.queries[0].answer(3);
    t.at(300);
    const last = t.out[t.out.length - 1];
    expect(last.state).toBe(LoadingState.Error);
    expect(last.errors).toEqual([{ message: 'B: boom', refId: 'B' }]);
    expect(t.refIds(last)).toEqual(['A', 'B']);
    expect((last.data[0] as DataFrame).length).toBe(3);
    expect(t.completed()).toBe(false);
  });

  test('finite queries: Done and complete once all are done, the last rows included', () => {
    const t = setup(2);
    t.queries[0].answer(1);
    t.queries[1].answer(1);
    t.queries[0].answer(4, LoadingState.Done);
    t.queries[0].subject.complete();
    t.at(100);
    expect(t.completed()).toBe(false);
    expect(t.out[t.out.length - 1].state).toBe(LoadingState.Streaming);
    t.queries[1].answer(6, LoadingState.Done);
    t.queries[1].subject.complete();
    t.at(300);
    const last = t.out[t.out.length - 1];
    expect(last.state).toBe(LoadingState.Done);
    expect((last.data as DataFrame[]).map((f) => f.length)).toEqual([4, 6]);
    expect(t.completed()).toBe(true);
  });

  test('a query that ends without a word counts as answered', () => {
    const t = setup(2);
    t.queries[0].subject.complete();
    t.queries[1].answer(1);
    expect(t.out).toHaveLength(1);
    expect(t.refIds(t.out[0])).toEqual(['B']);
  });

  test('unsubscribing ends every query and the wait', () => {
    const t = setup(3);
    t.queries[0].answer(1);
    t.sub.unsubscribe();
    expect(t.queries.map((q) => [q.subscribed, q.torn])).toEqual([
      [1, 1],
      [1, 1],
      [1, 1],
    ]);
    t.at(5000);
    expect(t.out).toEqual([]);
  });
});
