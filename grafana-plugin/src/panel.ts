/**
 * The queries of one `query()` call as one Observable: every emission carries the frames of all
 * of them, so a panel never draws a subset of its series once it has drawn them all.
 *
 * - Start (and refresh, and a range change, which are new `query()` calls): nothing is emitted
 *   until every query has answered once (its first data message, its cached rows, an error or its
 *   end), or `firstWaitMs` has passed; then one emission with all of them. Never inside
 *   `subscribe()` itself: when every query answers from the cache, right after it.
 * - After that, a change to any query asks for an emission; emissions are throttled together
 *   (one per `throttleMs`, leading and trailing), and each builds the frames of every query as of
 *   then. A panel with many queries so costs one update per interval, not one per query.
 * - Errors: a query that fails keeps its error on every emission (with its last frames), and the
 *   others go on. The state is `Error` while any query has failed, else `Streaming` while any
 *   query streams, else `Done` once all are done (then the Observable completes).
 * - One response key for all, set on every emission (`PanelOptions.key`): Grafana's request
 *   runner keeps the last response per key, so this one response is always the whole panel.
 *   Without a key it would file each response under its first frame's refId
 *   (`packet.key ?? packet.data[0]?.refId ?? 'A'`), and that changes whenever the first query has
 *   no frame yet (it has not answered within `firstWaitMs`, or it failed before its first data):
 *   the panel would then keep a stale copy of the other queries' frames beside the new ones.
 *
 * Unsubscribing ends every query (each QueryStream's teardown).
 */
import { DataFrame, DataQueryError, DataQueryResponse, LoadingState } from '@grafana/data';
import { Observable, SchedulerLike, Subject, Subscription, asyncScheduler } from 'rxjs';
import { map, throttleTime } from 'rxjs/operators';

import type { Emission } from './QueryStream';

export interface PanelOptions {
  /** The `key` of every response (the same for the whole `query()` call; see above). */
  key: string;
  /** At most one emission per this many ms. */
  throttleMs: number;
  /** Emit what has answered after this long even if some query has not (default 1000 ms). */
  firstWaitMs?: number;
  /** The clock of the throttle and of the wait (default: rxjs's asyncScheduler). */
  scheduler?: SchedulerLike;
}

export const DEFAULT_FIRST_WAIT_MS = 1000;

/** Anything with a stream of changes: a QueryStream. */
export interface ChangeSource {
  changes(): Observable<Emission>;
}

export function wholePanel(sources: ChangeSource[], opts: PanelOptions): Observable<DataQueryResponse> {
  const scheduler = opts.scheduler ?? asyncScheduler;
  const firstWaitMs = opts.firstWaitMs ?? DEFAULT_FIRST_WAIT_MS;
  return new Observable<DataQueryResponse>((subscriber) => {
    const n = sources.length;
    const latest: Array<Emission | undefined> = new Array(n).fill(undefined);
    const ended: boolean[] = new Array(n).fill(false);
    let answered = 0;
    let ready = false;
    let endedCount = 0;
    const ticks = new Subject<void>();
    const subs = new Subscription();

    const build = (): DataQueryResponse => {
      const data: DataFrame[] = [];
      const errors: DataQueryError[] = [];
      let streaming = false;
      let waiting = false;
      for (let i = 0; i < n; i++) {
        const emission = latest[i];
        if (!emission) {
          waiting = true;
          continue;
        }
        const r = emission();
        data.push(...(r.data as DataFrame[]));
        if (r.errors?.length) {
          errors.push(...r.errors);
        } else if (r.error) {
          errors.push(r.error);
        }
        if (r.state === LoadingState.Streaming || (!ended[i] && r.state !== LoadingState.Done)) {
          streaming = true;
        }
      }
      const state = errors.length
        ? LoadingState.Error
        : waiting
          ? LoadingState.Loading
          : streaming
            ? LoadingState.Streaming
            : LoadingState.Done;
      const out: DataQueryResponse = { data, key: opts.key, state };
      if (errors.length) {
        out.error = errors[0];
        out.errors = errors;
      }
      return out;
    };

    subs.add(
      ticks
        .pipe(
          throttleTime(opts.throttleMs, scheduler, { leading: true, trailing: true }),
          map(() => build())
        )
        .subscribe(subscriber)
    );

    let subscribing = true;
    const begin = () => {
      if (!ready) {
        ready = true;
        if (answered > 0) {
          if (subscribing) {
            // Every query answered inside subscribe() (a refresh from the cache): emit right after,
            // not inside it. Grafana's request runner subscribes twice to a shared Observable
            // (once to cancel its "loading" timer, once for the data); an emission inside the
            // first subscribe ends that subscription, and the queries would be started twice.
            queueMicrotask(() => !subscriber.closed && ticks.next());
          } else {
            ticks.next();
          }
        }
      }
    };

    sources.forEach((source, i) => {
      subs.add(
        source.changes().subscribe({
          next: (emission) => {
            if (!latest[i]) {
              answered++;
            }
            latest[i] = emission;
            if (ready) {
              ticks.next();
            } else if (answered === n) {
              begin();
            }
          },
          error: (err: unknown) => subscriber.error(err),
          complete: () => {
            ended[i] = true;
            endedCount++;
            if (!latest[i]) {
              // Ended without a word (nothing to show): it has answered all the same.
              answered++;
              latest[i] = () => ({ data: [], state: LoadingState.Done });
            }
            if (!ready && answered === n) {
              begin();
            }
            if (endedCount === n) {
              // The trailing emission (if one is due) goes out before the throttle completes.
              ticks.complete();
            }
          },
        })
      );
    });
    if (!ready) {
      subs.add(scheduler.schedule(begin, firstWaitMs));
    }
    subscribing = false;
    return () => {
      subs.unsubscribe();
      ticks.complete();
    };
  });
}
