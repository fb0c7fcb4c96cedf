import fc from 'fast-check';

import type { FrameFieldSchema } from '../client/protocol';
import { lowerBound, upperBound } from './bisect';
import { FrameError, FrameMessage, FrameStore } from './FrameStore';

const TV: FrameFieldSchema[] = [
  { name: 'time', type: 'time' },
  { name: 'v', type: 'number' },
];

function msg(times: number[], values: unknown[], opts: { schema?: FrameFieldSchema[]; late?: boolean; position?: string } = {}): FrameMessage {
  return {
    position: opts.position,
    late: opts.late,
    frame: { ...(opts.schema ? { schema: { fields: opts.schema } } : {}), data: { values: [times, values] } },
  };
}

function schemaOnly(fields: FrameFieldSchema[]): FrameMessage {
  return { frame: { schema: { fields } } };
}

describe('bisect', () => {
  test('lowerBound goes before equal times, upperBound after', () => {
    expect(lowerBound([1, 2, 2, 3], 2)).toBe(1);
    expect(upperBound([1, 2, 2, 3], 2)).toBe(3);
    expect(lowerBound([1, 2, 3], 0)).toBe(0);
    expect(upperBound([1, 2, 3], 9)).toBe(3);
    expect(lowerBound([], 5)).toBe(0);
  });

  test('both agree with a linear scan', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 20 })), fc.integer({ min: -1, max: 21 }), (xs, t) => {
        const a = [...xs].sort((x, y) => x - y);
        expect(lowerBound(a, t)).toBe(a.filter((x) => x < t).length);
        expect(upperBound(a, t)).toBe(a.filter((x) => x <= t).length);
      })
    );
  });
});

describe('FrameStore', () => {
  test('the schema message creates the fields, even without rows', () => {
    const s = new FrameStore();
    const r = s.merge(schemaOnly(TV));
    expect(r.schemaChanged).toBe(true);
    expect(s.fields.map((f) => f.name)).toEqual(['v']);
    expect(s.timeField).toEqual({ name: 'time', type: 'time' });
    expect(s.length).toBe(0);
    expect(s.schema().map((f) => f.name)).toEqual(['time', 'v']);
  });

  test('on-time messages append; the time field may be anywhere in the schema', () => {
    const s = new FrameStore();
    s.merge({ frame: { schema: { fields: [{ name: 'v', type: 'number' }, { name: 'ts', type: 'time' }] }, data: { values: [[1, 2], [10, 20]] } } });
    s.merge({ frame: { data: { values: [[3], [30]] } } });
    expect(s.times).toEqual([10, 20, 30]);
    expect(s.columns).toEqual([[1, 2, 3]]);
    expect(s.timeField.name).toBe('ts');
    expect(s.stats).toEqual({ messages: 2, received: 3, lateRows: 0 });
  });

  test('a field gained later is missing on the earlier rows (null, or undefined when asked)', () => {
    for (const missing of [null, undefined]) {
      const s = new FrameStore({ missing });
      s.merge(msg([1, 2], [10, 20], { schema: TV }));
      const r = s.merge({
        frame: { schema: { fields: [...TV, { name: 'w', type: 'number' }] }, data: { values: [[3], [30], [300]] } },
      });
      expect(r.schemaChanged).toBe(true);
      expect(s.fields.map((f) => f.name)).toEqual(['v', 'w']);
      expect(s.columns).toEqual([
        [10, 20, 30],
        [missing, missing, 300],
      ]);
      expect(s.schemaVersion).toBe(2);
    }
  });

  test('fields with the same name and different labels are two fields; label order does not matter', () => {
    const s = new FrameStore();
    const a = { name: 'usage', type: 'number', labels: { host: 'a', dc: 'x' } };
    const b = { name: 'usage', type: 'number', labels: { host: 'b', dc: 'x' } };
    s.merge({ frame: { schema: { fields: [TV[0], a] }, data: { values: [[1], [0.5]] } } });
    s.merge({ frame: { schema: { fields: [TV[0], { ...a, labels: { dc: 'x', host: 'a' } }, b] }, data: { values: [[2], [0.6], [0.7]] } } });
    expect(s.fields.map((f) => f.labels?.host)).toEqual(['a', 'b']);
    expect(s.columns).toEqual([
      [0.5, 0.6],
      [null, 0.7],
    ]);
  });

  test('late rows go in at their place; equal times keep their arrival order', () => {
    const s = new FrameStore();
    s.merge(msg([10, 20, 30], ['a', 'b', 'c'], { schema: TV }));
    const r = s.merge(msg([25, 5, 20], ['d', 'e', 'f'], { late: true }));
    expect(r).toMatchObject({ rows: 3, inserted: true });
    expect(s.times).toEqual([5, 10, 20, 20, 25, 30]);
    expect(s.columns[0]).toEqual(['e', 'a', 'b', 'f', 'd', 'c']);
    expect(s.stats.lateRows).toBe(3);
  });

  test('a late message with old and new rows (one batch of the log) inserts the old and appends the new', () => {
    const s = new FrameStore();
    s.merge(msg([10, 20, 30], ['a', 'b', 'c'], { schema: TV, position: 'e:1-0:3' }));
    const r = s.merge(msg([15, 30, 40, 50], ['d', 'e', 'f', 'g'], { late: true, position: 'e:2-0:7' }));
    expect(r).toMatchObject({ rows: 4, inserted: true });
    expect(s.times).toEqual([10, 15, 20, 30, 30, 40, 50]);
    expect(s.columns[0]).toEqual(['a', 'd', 'b', 'c', 'e', 'f', 'g']);
    expect(s.stats.lateRows).toBe(1); // only 15 is older than the newest row held (30)
    expect(s.position).toBe('e:2-0:7'); // a late message's position is where to resume, like any other
    expect(s.merge(msg([60], ['h'], { position: 'e:3-0:8' })).inserted).toBe(false);
  });

  test('an unmarked message that starts before the newest row, or is unsorted, is merged in too', () => {
    const s = new FrameStore();
    s.merge(msg([10, 20], [1, 2], { schema: TV }));
    expect(s.merge(msg([15, 30], [1.5, 3])).inserted).toBe(true);
    expect(s.merge(msg([40, 35], [4, 3.5])).inserted).toBe(true);
    expect(s.times).toEqual([10, 15, 20, 30, 35, 40]);
    expect(s.columns[0]).toEqual([1, 1.5, 2, 3, 3.5, 4]);
    expect(s.stats.lateRows).toBe(0);
    expect(s.merge(msg([40, 41], [4.1, 4.2])).inserted).toBe(false);
  });

  test('after a loss, the replay up to the rows held is skipped until a message brings only newer rows', () => {
    const s = new FrameStore();
    s.merge(msg([1, 2, 3], [1, 2, 3], { schema: TV, position: 'a:3' }));
    s.noteLoss();
    let r = s.merge(msg([0, 1, 2, 3, 4], [9, 9, 9, 9, 4], { position: 'b:1' }));
    expect(r).toMatchObject({ rows: 1, skipped: 4 });
    // Still under the floor: the next message's old rows are skipped too.
    r = s.merge(msg([3, 5], [9, 5]));
    expect(r).toMatchObject({ rows: 1, skipped: 1 });
    // All rows newer: the floor is gone.
    s.merge(msg([6], [6]));
    r = s.merge(msg([2.5], [2.5]));
    expect(r).toMatchObject({ rows: 1, skipped: 0, inserted: true });
    expect(s.times).toEqual([1, 2, 2.5, 3, 4, 5, 6]);
    expect(s.position).toBe('b:1');
  });

  test('late rows are never skipped by the loss floor', () => {
    const s = new FrameStore();
    s.merge(msg([1, 5], [1, 5], { schema: TV }));
    s.noteLoss();
    expect(s.merge(msg([2], [2], { late: true })).rows).toBe(1);
    expect(s.times).toEqual([1, 2, 5]);
  });

  test('trim: maxRows keeps the newest rows, maxDelta the rows within it of the newest', () => {
    const s = new FrameStore({ maxRows: 3 });
    s.merge(msg([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], { schema: TV }));
    expect(s.times).toEqual([3, 4, 5]);
    const d = new FrameStore({ maxDelta: 10 });
    d.merge(msg([0, 5, 10, 15], [0, 5, 10, 15], { schema: TV }));
    expect(d.times).toEqual([5, 10, 15]);
    const r = d.merge(msg([30], [30]));
    expect(r.trimmed).toBe(3);
    expect(d.times).toEqual([30]);
    // A late row older than the window is dropped as soon as it arrives.
    expect(d.merge(msg([1], [1], { late: true })).trimmed).toBe(1);
    expect(d.times).toEqual([30]);
  });

  test('setLimits and trimBefore', () => {
    const s = new FrameStore();
    s.merge(msg([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], { schema: TV }));
    expect(s.trimBefore(2)).toBe(1);
    expect(s.setLimits({ maxDelta: 1 })).toBe(2);
    expect(s.times).toEqual([4, 5]);
    expect(s.columns[0]).toEqual([4, 5]);
    expect(s.limits).toEqual({ maxRows: Infinity, maxDelta: 1 });
    expect(s.trimmedThrough).toBe(3);
    s.clear();
    expect(s.trimmedThrough).toBeUndefined();
  });

  test('cells: values of the protocol kept, anything else (null too) is missing; entities decoded', () => {
    const s = new FrameStore({ missing: undefined });
    s.merge({
      frame: {
        schema: { fields: [...TV, { name: 's', type: 'string' }] },
        data: {
          values: [
            [1, 2, 3, 4, 5],
            [1, null, 0, 0, { x: 1 }],
            ['a', true, null, [1], 'e'],
          ],
          entities: [null, { NaN: [2], Inf: [3], Undef: [0] }, null],
        },
      },
    });
    expect(s.columns[0]).toEqual([undefined, undefined, NaN, Infinity, undefined]);
    expect(s.columns[1]).toEqual(['a', true, undefined, undefined, 'e']);
    // The live view's store keeps `null` for a missing cell, whichever way the wire said it.
    const v = new FrameStore();
    v.merge({ frame: { schema: { fields: TV }, data: { values: [[1, 2, 3], [null, 0, 1]], entities: [null, { Undef: [1] }] } } });
    expect(v.columns[0]).toEqual([null, null, 1]);
  });

  test('a message that does not fit is refused whole, with a sentence, and changes nothing', () => {
    const s = new FrameStore();
    expect(() => s.merge(msg([1], [1]))).toThrow(/before any schema/);
    s.merge(msg([1], [1], { schema: TV, position: 'p1' }));
    const before = JSON.stringify(s);
    const bad: Array<[FrameMessage, RegExp]> = [
      [{ frame: { data: { values: [[2], [2], [2]] } } }, /3 columns but the schema has 2/],
      [{ frame: { data: { values: [[2, 3], [2]] } } }, /column 1 .* not a list of 2 values/],
      [msg(['2'] as unknown as number[], [2]), /time "2", not epoch milliseconds/],
      [msg([NaN], [2]), /not epoch milliseconds/],
      [{ frame: { schema: { fields: [...TV, TV[1]] }, data: { values: [[2], [2], [2]] } }, position: 'p2' }, /lists the field "v" twice/],
    ];
    for (const [m, why] of bad) {
      expect(() => s.merge(m)).toThrow(FrameError);
      expect(() => s.merge(m)).toThrow(why);
      expect(JSON.stringify(s)).toBe(before);
    }
    expect(s.position).toBe('p1');
  });

  test('the position follows the messages that carry one', () => {
    const s = new FrameStore();
    s.merge(msg([1], [1], { schema: TV, position: 'p1' }));
    s.merge(msg([2], [2]));
    expect(s.position).toBe('p1');
    s.merge(msg([3], [3], { position: 'p3' }));
    expect(s.position).toBe('p3');
    s.clear();
    expect(s.position).toBeUndefined();
    expect(s.length).toBe(0);
    expect(s.fields.map((f) => f.name)).toEqual(['v']);
    s.merge(msg([9], [9]));
    expect(s.columns).toEqual([[9]]);
  });

  test('a clone is independent', () => {
    const s = new FrameStore({ maxRows: 10 });
    s.merge(msg([1, 2], [1, 2], { schema: TV, position: 'p' }));
    const c = s.clone();
    s.merge(msg([3], [3]));
    c.merge(msg([1.5], [1.5], { late: true }));
    expect(s.times).toEqual([1, 2, 3]);
    expect(c.times).toEqual([1, 1.5, 2]);
    expect(c.position).toBe('p');
    expect(c.limits.maxRows).toBe(10);
  });

  test('lastValue skips missing cells', () => {
    const s = new FrameStore();
    s.merge(msg([1, 2, 3], [7, null, null], { schema: TV }));
    expect(s.lastValue(0)).toBe(7);
    expect(s.lastValue(5)).toBeUndefined();
  });
});

// --- properties: any interleaving of late and on-time rows -------------------------------------------

/** A message: rows (time, and an id that says the arrival order) and whether it is marked late. */
const batches = fc.array(
  fc.record({ late: fc.boolean(), times: fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 8 }) }),
  { maxLength: 25 }
);

/** Feed the batches; return the store and every row in arrival order. */
function feed(store: FrameStore, input: Array<{ late: boolean; times: number[] }>): Array<[number, number]> {
  store.merge(schemaOnly(TV));
  const all: Array<[number, number]> = [];
  for (const b of input) {
    const ids = b.times.map((_, i) => all.length + i);
    b.times.forEach((t, i) => all.push([t, ids[i]]));
    store.merge(msg(b.times, ids, { late: b.late }));
  }
  return all;
}

/** A stable sort by time: the order the store promises. */
function sorted(rows: Array<[number, number]>): Array<[number, number]> {
  return [...rows].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

function held(store: FrameStore): Array<[number, number]> {
  return store.times.map((t, i) => [t, store.columns[0][i] as number]);
}

describe('FrameStore properties', () => {
  test('any interleaving of late and on-time rows gives the stable time sort of all rows', () => {
    fc.assert(
      fc.property(batches, (input) => {
        const store = new FrameStore();
        const all = feed(store, input);
        expect(held(store)).toEqual(sorted(all));
        expect(store.stats.received).toBe(all.length);
      }),
      { numRuns: 500 }
    );
  });

  test('with maxRows: the newest maxRows rows of that sort', () => {
    fc.assert(
      fc.property(batches, fc.integer({ min: 1, max: 30 }), (input, maxRows) => {
        const store = new FrameStore({ maxRows });
        const all = sorted(feed(store, input));
        expect(held(store)).toEqual(all.slice(Math.max(0, all.length - maxRows)));
      }),
      { numRuns: 300 }
    );
  });

  test('with maxDelta: the rows within maxDelta of the newest', () => {
    fc.assert(
      fc.property(batches, fc.integer({ min: 0, max: 40 }), (input, maxDelta) => {
        const store = new FrameStore({ maxDelta });
        const all = sorted(feed(store, input));
        const newest = all.length ? all[all.length - 1][0] : 0;
        expect(held(store)).toEqual(all.filter(([t]) => t >= newest - maxDelta));
      }),
      { numRuns: 300 }
    );
  });

  test('fields gained at any point: each row has the cells its message carried, missing otherwise', () => {
    const input = fc.array(
      fc.record({
        late: fc.boolean(),
        times: fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 5 }),
        grow: fc.boolean(),
      }),
      { maxLength: 15 }
    );
    fc.assert(
      fc.property(input, (bs) => {
        const store = new FrameStore();
        let fields: FrameFieldSchema[] = [TV[0], { name: 'f0', type: 'number' }];
        store.merge(schemaOnly(fields));
        const rows: Array<{ t: number; id: number; width: number }> = [];
        for (const b of bs) {
          const grow = b.grow && fields.length < 5;
          if (grow) {
            fields = [...fields, { name: `f${fields.length - 1}`, type: 'number' }];
          }
          const width = fields.length - 1;
          const ids = b.times.map((_, i) => rows.length + i);
          b.times.forEach((t, i) => rows.push({ t, id: ids[i], width }));
          const values = [b.times, ...Array.from({ length: width }, () => ids)];
          store.merge({ late: b.late, frame: { ...(grow ? { schema: { fields } } : {}), data: { values } } });
        }
        const want = [...rows].sort((a, b) => a.t - b.t || a.id - b.id);
        expect(store.times).toEqual(want.map((r) => r.t));
        store.fields.forEach((_, f) => {
          expect(store.columns[f]).toEqual(want.map((r) => (f < r.width ? r.id : null)));
        });
      }),
      { numRuns: 300 }
    );
  });
});

describe('buckets (bucket_ms): a row replaces the row held at the same time', () => {
  const bucket = (times: number[], values: unknown[], schema?: FrameFieldSchema[]): FrameMessage => ({
    ...msg(times, values, { schema }),
    bucket_ms: 10,
  });

  test('an open bucket sent again replaces its two rows; a new bucket is appended; a late one inserted', () => {
    const s = new FrameStore();
    s.merge(bucket([0, 5, 10, 15], [1, 9, 2, 3], TV));
    expect(s.bucketMs).toBe(10);
    s.merge(bucket([10, 15], [0, 8])); // the open bucket again
    expect(s.times).toEqual([0, 5, 10, 15]);
    expect(s.columns[0]).toEqual([1, 9, 0, 8]);
    s.merge(bucket([20, 25, 10, 15], [4, 4, 0, 9])); // a new bucket and the previous one again
    expect(s.times).toEqual([0, 5, 10, 15, 20, 25]);
    expect(s.columns[0]).toEqual([1, 9, 0, 9, 4, 4]);
    s.merge(bucket([-10, -5], [7, 7])); // a late point opened an older bucket
    expect(s.times).toEqual([-10, -5, 0, 5, 10, 15, 20, 25]);
    expect(s.length).toBe(8);
  });

  test('whatever the order buckets come in, the store ends with the last version of each', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 30 }), fc.integer({ min: -9, max: 9 })), { minLength: 1, maxLength: 60 }),
        (updates) => {
          const s = new FrameStore();
          s.merge(bucket([], [], TV));
          const want = new Map<number, number>();
          for (const [b, v] of updates) {
            s.merge(bucket([b * 10, b * 10 + 5], [v, -v]));
            want.set(b * 10, v);
            want.set(b * 10 + 5, -v);
          }
          const times = [...want.keys()].sort((a, b) => a - b);
          expect(s.times).toEqual(times);
          expect(s.columns[0]).toEqual(times.map((t) => want.get(t)));
        }
      )
    );
  });

  test('raw messages leave bucketMs 0 and keep their duplicate times', () => {
    const s = new FrameStore();
    s.merge(msg([1, 1], [1, 2], { schema: TV }));
    s.merge(msg([1], [3]));
    expect(s.bucketMs).toBe(0);
    expect(s.columns[0]).toEqual([1, 2, 3]);
  });
});
