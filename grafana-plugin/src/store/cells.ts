/** The cells of a frame store: what a message's values become. */
import type { FieldValueEntities } from '../client/protocol';

/** A cell: the protocol's values (`null` is a missing value on the wire), or `undefined`. */
export type Cell = number | string | boolean | null | undefined;

/** DataFrameJSON `entities`: the cells a JSON number cannot say (NaN, ±Infinity, undefined). */
export function decodeEntities(values: unknown[][], entities: Array<FieldValueEntities | null>): unknown[][] {
  const out = values.slice();
  entities.forEach((e, c) => {
    if (!e || !out[c]) {
      return;
    }
    const col = out[c].slice();
    const put = (rows: unknown, v: unknown) => {
      if (Array.isArray(rows)) {
        for (const r of rows) {
          if (Number.isInteger(r) && r >= 0 && r < col.length) {
            col[r] = v;
          }
        }
      }
    };
    put(e.NaN, NaN);
    put(e.Inf, Infinity);
    put(e.NegInf, -Infinity);
    put(e.Undef, undefined);
    out[c] = col;
  });
  return out;
}
