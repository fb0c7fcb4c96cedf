import { DataFrameJSON, FieldType, StreamingDataFrame } from '@grafana/data';

import { cloneFrame, insertRows, rowsAfter, trimBefore, upperBound } from './frames';

const schema = { fields: [{ name: 'time', type: FieldType.time }, { name: 'v', type: FieldType.number }] };

function frame(times: number[], values: number[]) {
  return StreamingDataFrame.fromDataFrameJSON({ schema, data: { values: [times, values] } } as DataFrameJSON, {
    maxLength: 1000,
  });
}

describe('frame helpers', () => {
  test('upperBound inserts after equal times', () => {
    expect(upperBound([1, 2, 2, 3], 2)).toBe(3);
    expect(upperBound([1, 2, 3], 0)).toBe(0);
    expect(upperBound([1, 2, 3], 9)).toBe(3);
  });

  test('insertRows puts late rows in time order', () => {
    const f = frame([10, 20, 30], [1, 2, 3]);
    const n = insertRows(f, { data: { values: [[25, 5], [2.5, 0.5]] } });
    expect(n).toBe(2);
    expect(f.length).toBe(5);
    expect(f.fields[0].values).toEqual([5, 10, 20, 25, 30]);
    expect(f.fields[1].values).toEqual([0.5, 1, 2, 2.5, 3]);
  });

  test('insertRows applies a new schema first', () => {
    const f = frame([10, 20], [1, 2]);
    insertRows(f, {
      schema: { fields: [...schema.fields, { name: 'w', type: 'number' }] },
      data: { values: [[15], [1.5], [9]] },
    });
    expect(f.fields.map((x) => x.name)).toEqual(['time', 'v', 'w']);
    expect(f.fields[0].values).toEqual([10, 15, 20]);
    expect(f.fields[2].values).toEqual([undefined, 9, undefined]);
  });

  test('trimBefore drops rows older than the range', () => {
    const f = frame([10, 20, 30, 40], [1, 2, 3, 4]);
    expect(trimBefore(f, 25)).toBe(2);
    expect(f.fields[0].values).toEqual([30, 40]);
    expect(f.length).toBe(2);
  });

  test('rowsAfter keeps only rows newer than a time', () => {
    const { json, dropped } = rowsAfter({ data: { values: [[1, 2, 3], [7, 8, 9]] } }, 2);
    expect(dropped).toBe(2);
    expect(json.data?.values).toEqual([[3], [9]]);
  });

  test('cloneFrame is independent', () => {
    const f = frame([1, 2], [3, 4]);
    const c = cloneFrame(f);
    f.push({ data: { values: [[3], [5]] } });
    expect(c.length).toBe(2);
    expect(f.length).toBe(3);
  });
});
