/**
 * Grafana's `runRequest` for this page: Grafana registers it with `setRunRequest` at start-up and
 * `SceneQueryRunner` calls it (it is part of Grafana, not published on npm). Written from what it
 * is documented and observed to do, not copied:
 *
 * - it calls `datasource.query(request)` (an Observable or a Promise) once;
 * - each response packet replaces the previous packet with the same `key` (no key: its first
 *   frame's refId, else `A`), and the panel data is all the packets' frames together, in the
 *   order their keys first came;
 * - the state is the last packet's, but `Error` while any packet carries an error (with `error`
 *   and `errors` from it); frames of the annotations topic go to `annotations`;
 * - a streaming packet of a relative range moves the time range to "now";
 * - nothing after 200 ms: a `Loading` panel data with no series (which the query runner's
 *   `preProcessPanelData` shows with the previous series);
 * - an error thrown by the data source becomes an `Error` panel data with the last series;
 * - unsubscribing ends the data source's Observable.
 */
import {
  DataFrame,
  DataQueryError,
  DataQueryRequest,
  DataQueryResponse,
  DataSourceApi,
  DataTopic,
  LoadingState,
  PanelData,
  TimeRange,
  dateMath,
} from '@grafana/data';
import { Observable, from, merge, of, timer } from 'rxjs';
import { catchError, map, share, takeUntil } from 'rxjs/operators';

export const LOADING_AFTER_MS = 200;

export function runRequest(datasource: DataSourceApi, request: DataQueryRequest): Observable<PanelData> {
  let packets: Array<[string, DataQueryResponse]> = [];
  let panelData: PanelData = { state: LoadingState.Loading, series: [], request, timeRange: request.range };
  if (!request.targets.length) {
    return of({ ...panelData, state: LoadingState.Done });
  }
  const data$ = from(datasource.query(request) as Observable<DataQueryResponse> | Promise<DataQueryResponse>).pipe(
    map((packet) => {
      if (!Array.isArray(packet.data)) {
        throw new Error(`Expected response data to be an array, got ${typeof packet.data}.`);
      }
      const first = packet.data[0] as Partial<DataFrame> | undefined;
      const key = packet.key ?? first?.refId ?? 'A';
      const i = packets.findIndex(([k]) => k === key);
      packets = i < 0 ? [...packets, [key, packet]] : packets.map((p, j) => (j === i ? [key, packet] : p));
      panelData = combine(packets, request, packet.state ?? LoadingState.Done);
      return panelData;
    }),
    catchError((err: unknown) =>
      of<PanelData>({ ...panelData, state: LoadingState.Error, error: toError(err), errors: [toError(err)] })
    ),
    share()
  );
  return merge(timer(LOADING_AFTER_MS).pipe(map(() => panelData), takeUntil(data$)), data$);
}

function combine(packets: Array<[string, DataQueryResponse]>, request: DataQueryRequest, state: LoadingState): PanelData {
  const series: DataFrame[] = [];
  const annotations: DataFrame[] = [];
  let error: DataQueryError | undefined;
  let errors: DataQueryError[] | undefined;
  for (const [, packet] of packets) {
    if (packet.error || packet.errors?.length) {
      state = LoadingState.Error;
      error = packet.error ?? packet.errors?.[0];
      errors = packet.errors ?? (packet.error ? [packet.error] : undefined);
    }
    for (const frame of packet.data as DataFrame[]) {
      (frame.meta?.dataTopic === DataTopic.Annotations ? annotations : series).push(frame);
    }
  }
  return { state, series, annotations, error, errors, request, timeRange: timeRangeOf(request, state) };
}

function timeRangeOf(request: DataQueryRequest, state: LoadingState): TimeRange {
  const range = request.range;
  if (state !== LoadingState.Streaming || typeof range.raw.from !== 'string') {
    return range;
  }
  const fromTime = dateMath.parse(range.raw.from, false);
  const toTime = dateMath.parse(range.raw.to, true);
  return fromTime && toTime ? { ...range, from: fromTime, to: toTime } : range;
}

function toError(err: unknown): DataQueryError {
  if (err && typeof err === 'object' && 'message' in err) {
    return { message: String((err as { message: unknown }).message) };
  }
  return { message: String(err) };
}
