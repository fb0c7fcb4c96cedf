/**
 * One query of a `query()` call as an Observable of Grafana responses: a subscription on the
 * shared carrier, its `data` messages merged into a FrameStore, emitted as frames (throttled,
 * the trailing emission kept), with the connection's state and the server's notices on the frame.
 *
 * Testable without Grafana's runtime: give it a transport (a fake socket under a LiveClient, or a
 * real one) and, for the throttle, a scheduler. `DataSource.query()` only builds these.
 */
import { DataFrame, DataQueryResponse, LoadingState, QueryResultMetaNotice } from '@grafana/data';
import { Observable, SchedulerLike, Subscriber, asyncScheduler } from 'rxjs';
import { map, throttleTime } from 'rxjs/operators';

import { CacheEntry, FrameCache, cacheKey, covers } from './cache';
import { DataMessage, NoticeMessage, StreamStatus, StreamTransport, SubscribeRequest } from './client';
import { resumeRequest } from './client/resume';
import { FrameNaming, FrameView, channelName } from './frames';
import { FrameError, FrameStore, MergeResult } from './store/FrameStore';
import { LiveQuery } from './types';

export interface QueryStreamOptions {
  /** The query, template variables already replaced. */
  query: LiveQuery;
  /** The time range, epoch ms. */
  from: number;
  to: number;
  /** The range ends at "now": stream on (else load the range and complete). */
  live: boolean;
  /** Rows kept (the newest). */
  maxLength: number;
  /** At most one emission per this many ms; also the default server-side batching interval. */
  throttleMs: number;
  /** The carrier the subscription runs on. */
  transport: StreamTransport;
  /** Where a live query leaves its rows for the next run of the same query (a refresh). */
  cache?: FrameCache;
  /** The throttle's clock (default: rxjs's asyncScheduler). */
  scheduler?: SchedulerLike;
  /** The frame's name, when the data source decided it (see frames.ts `FrameNaming`). */
  frameName?: string;
  /** Grafana's `maxDataPoints` (the panel's width): the server sends at most this many buckets. */
  maxDataPoints?: number;
  /** Grafana's `intervalMs`: buckets at least this wide. */
  intervalMs?: number;
}

/** Server notices shown on a frame (the newest). */
const MAX_SERVER_NOTICES = 3;

export class QueryStream {
  constructor(readonly opts: QueryStreamOptions) {}

  /**
   * Each subscription runs the query once; unsubscribing ends its server subscription. Every
   * change is throttled first and only the emissions that pass are turned into frames, so a burst
   * of messages costs one frame update per throttle interval, not one per message.
   */
  observable(): Observable<DataQueryResponse> {
    const { throttleMs, scheduler } = this.opts;
    return this.changes().pipe(
      throttleTime(throttleMs, scheduler ?? asyncScheduler, { leading: true, trailing: true }),
      map((emission) => emission())
    );
  }

  /**
   * Every change, unthrottled, as a function that builds the response as of when it is called
   * (panel.ts throttles the queries of a panel together and builds them in one go).
   */
  changes(): Observable<Emission> {
    return new Observable<Emission>((subscriber) => {
      const run = new QueryRun(this.opts, subscriber);
      run.start();
      return () => run.stop();
    });
  }
}

/** A response to build when (if) the throttle lets it through: it shows the rows as of then. */
export type Emission = () => DataQueryResponse;

/** One run of a query, from subscribe to teardown. */
class QueryRun {
  private readonly key: string;
  /** The rows (from the cache, or created by the first data message). */
  private entry?: CacheEntry;
  private view?: FrameView;
  private serverNotices: QueryResultMetaNotice[] = [];
  /** "reconnecting…" / "resumed, N points recovered". */
  private statusNotice?: QueryResultMetaNotice;
  /** Rows taken since the connection dropped; undefined while it is up. */
  private recovered?: number;
  private unsubscribe?: () => void;
  private ended = false;

  constructor(
    private readonly opts: QueryStreamOptions,
    private readonly subscriber: Subscriber<Emission>
  ) {
    this.key = cacheKey(opts.query);
  }

  start(): void {
    this.entry = this.fromCache();
    if (this.entry) {
      // A refresh shows what it has at once, before the server answers.
      this.emit(LoadingState.Streaming);
    }
    const unsubscribe = this.opts.transport.subscribe(this.request(), {
      onData: (msg) => this.onData(msg),
      onComplete: () => this.onComplete(),
      onError: (message) => this.onError(message),
      onNotice: (notice) => this.onNotice(notice),
      onStatus: (status) => this.onStatus(status),
    });
    if (this.ended) {
      unsubscribe();
    } else {
      this.unsubscribe = unsubscribe;
    }
  }

  /** The teardown: end the server subscription; a live query leaves its rows in the cache. */
  stop(): void {
    this.ended = true;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    const entry = this.entry;
    if (entry) {
      entry.active = false;
      if (this.opts.live && entry.store.position) {
        this.opts.cache?.remember(this.key, entry);
      }
    }
  }

  /** A cached store that covers the range, when the query is live: trimmed to the range, reused. */
  private fromCache(): CacheEntry | undefined {
    const { cache, live, from, to, maxLength } = this.opts;
    const cached = live ? cache?.get(this.key) : undefined;
    const { maxDataPoints, intervalMs } = this.opts;
    if (!cache || !cached || !covers(cached, from) || !widthFits(cached.store.bucketMs, to - from, maxDataPoints, intervalMs)) {
      return undefined;
    }
    // Another panel streams into it: take a copy.
    const entry = cached.active ? { store: cached.store.clone(), coveredFrom: cached.coveredFrom, active: true } : cached;
    entry.active = true;
    entry.store.setLimits({ maxRows: maxLength, maxDelta: Math.max(1, to - from) });
    entry.store.trimBefore(from);
    cache.remember(this.key, entry);
    return entry;
  }

  private request(): SubscribeRequest {
    const { query, from, to, live, throttleMs } = this.opts;
    let req: SubscribeRequest = {
      channel: query.channel,
      params: Object.keys(query.params ?? {}).length ? query.params : undefined,
      fields: query.fields?.length ? query.fields : undefined,
      interval: Math.min(60_000, Math.max(0, query.interval ?? throttleMs)),
    };
    const { maxDataPoints, intervalMs } = this.opts;
    if (maxDataPoints && maxDataPoints > 0) {
      // the server sends raw points when the range has no more than this per field, else buckets
      req.max_points = Math.min(100_000, Math.round(maxDataPoints));
      if (intervalMs && intervalMs >= 1) {
        req.resolution_ms = Math.round(intervalMs);
      }
    }
    const store = this.entry?.store;
    if (store?.position) {
      // a refresh resumes the rows held: buckets of the width they have, or raw points
      req = { ...resumeRequest(req, store.position, store.bucketMs), since: store.position };
      if (req.resolution_ms !== undefined) {
        req.from = from; // buckets: the range to send again should the position be lost
      }
    } else {
      req.from = from;
    }
    if (!live) {
      req.to = to;
    }
    return req;
  }

  private onData(msg: DataMessage): void {
    const entry = this.entry ?? this.create();
    let merged: MergeResult;
    try {
      merged = entry.store.merge(msg);
    } catch (err) {
      if (err instanceof FrameError) {
        this.onError(`the server sent data this plugin cannot use: ${err.message}`);
        return;
      }
      throw err;
    }
    if (this.recovered !== undefined) {
      this.recovered += merged.rows;
    }
    if (this.opts.live) {
      this.opts.cache?.remember(this.key, entry);
    }
    this.emit(LoadingState.Streaming);
  }

  private create(): CacheEntry {
    const { from, to, maxLength } = this.opts;
    const store = new FrameStore({ maxRows: maxLength, maxDelta: Math.max(1, to - from), missing: undefined });
    this.entry = { store, coveredFrom: from, active: true };
    return this.entry;
  }

  private onNotice(notice: NoticeMessage): void {
    this.serverNotices.push({ severity: notice.level === 'warning' ? 'warning' : 'info', text: notice.text });
    this.serverNotices.splice(0, Math.max(0, this.serverNotices.length - MAX_SERVER_NOTICES));
    if (notice.lost !== undefined) {
      this.entry?.store.noteLoss();
    }
    this.emit(LoadingState.Streaming);
  }

  private onStatus(status: StreamStatus): void {
    if (status.state === 'reconnecting') {
      const next = (status.delayMs / 1000).toFixed(1);
      this.statusNotice = {
        severity: 'warning',
        text: `reconnecting… (${status.reason}; attempt ${status.attempt}, next in ${next} s)`,
      };
      this.recovered = 0;
    } else if (status.state === 'resumed') {
      this.statusNotice = { severity: 'info', text: `resumed, ${this.recovered ?? 0} points recovered` };
      this.recovered = undefined;
    }
    this.emit(LoadingState.Streaming);
  }

  private onComplete(): void {
    this.emit(LoadingState.Done);
    this.subscriber.complete();
  }

  private onError(message: string): void {
    const { channel, refId } = this.opts.query;
    const text = `${channel}: ${message}`;
    this.subscriber.next(() => ({
      data: this.frames(),
      key: refId,
      state: LoadingState.Error,
      error: { message: text, refId },
      errors: [{ message: text, refId }],
    }));
    this.subscriber.complete();
  }

  private emit(state: LoadingState): void {
    if (this.entry) {
      this.subscriber.next(() => ({ data: this.frames(), key: this.opts.query.refId, state }));
    }
  }

  /** The frames as of now: named, aliased, with the notices. */
  private frames(): DataFrame[] {
    if (!this.entry) {
      return [];
    }
    const { query, frameName } = this.opts;
    this.view ??= new FrameView(this.entry.store, this.naming(query, frameName));
    const notices = [...this.serverNotices];
    if (this.statusNotice) {
      notices.push(this.statusNotice);
    }
    const frames = this.view.frames();
    for (const frame of frames) {
      frame.meta = { ...frame.meta, notices: notices.length ? notices : undefined };
    }
    return frames;
  }

  private naming(query: LiveQuery, name: string | undefined): FrameNaming {
    return { channel: channelName(query), refId: query.refId, alias: query.alias, name };
  }
}

/**
 * Whether rows held in buckets of `bucketMs` still suit a panel showing `span` ms in
 * `maxDataPoints` points, with buckets at least `intervalMs` wide (Grafana's interval, which a
 * query's or data source's "Min interval" raises): the server picks the smallest width that is
 * both, so a zoom in or out needs another width (its widths step by at most 2.5x), and the rows
 * are not reused then.
 */
export function widthFits(
  bucketMs: number | undefined,
  span: number,
  maxDataPoints: number | undefined,
  intervalMs?: number
): boolean {
  if (!bucketMs || !maxDataPoints) {
    return true;
  }
  const want = Math.max(span / maxDataPoints, intervalMs && intervalMs >= 1 ? intervalMs : 0);
  return bucketMs >= want && bucketMs <= 2.5 * Math.max(want, 2);
}
