import {
  CoreApp,
  DataQueryRequest,
  DataFrameJSON,
  DataQueryResponse,
  DataSourceApi,
  DataSourceInstanceSettings,
  FieldType,
  LoadingState,
  MetricFindValue,
  QueryResultMetaNotice,
  ScopedVars,
  StreamingDataFrame,
  TestDataSourceResponse,
} from '@grafana/data';
import { getBackendSrv, getTemplateSrv } from '@grafana/runtime';
import { Observable, asyncScheduler, lastValueFrom, merge, of } from 'rxjs';
import { throttleTime } from 'rxjs/operators';

import {
  FetchLike,
  HttpStreamClient,
  LiveClient,
  LiveClientOptions,
  NoticeMessage,
  StreamStatus,
  StreamTransport,
  SubscribeRequest,
  Timers,
  WebSocketCtor,
  joinUrl,
  trimSlash,
} from './client';
import { cloneFrame, firstTimeOf, insertRows, lastTime, rowCount, rowsAfter, timeIndex, trimBefore } from './frames';
import { DEFAULT_QUERY, LiveOptions, LiveQuery, ParamValue, withDefaults } from './types';

/** What tests (or the live view page) can inject instead of the browser's globals. */
export interface DataSourceDeps {
  WebSocket?: WebSocketCtor;
  fetch?: FetchLike;
  timers?: Timers;
  client?: Partial<LiveClientOptions>;
  /** Origin this Grafana is served from, for the CORS hint (default: window.location.origin). */
  origin?: string;
}

export interface ChannelInfo {
  name: string;
  schema?: Array<{ name: string; type: string; labels?: Record<string, string> }>;
  last_time?: number | null;
  points_per_s?: number;
  generated?: boolean;
  params?: Record<string, unknown>;
}

/** The last frame of a query and where it ended, so a refresh resumes instead of starting over. */
export interface CacheEntry {
  frame: StreamingDataFrame;
  /** Last position received: the next subscription sends it as `since`. */
  position?: string;
  /** The frame has every point of the channel from this time on. */
  coveredFrom: number;
  /** A stream is writing into this frame now. */
  active: boolean;
}

const CACHE_LIMIT = 64;

export class DataSource extends DataSourceApi<LiveQuery, LiveOptions> {
  readonly options: LiveOptions;
  /** Base URL of HTTP calls: the server, or Grafana's proxy route to it. */
  readonly baseUrl: string;
  /** Per-datasource cache keyed by the interpolated query (channel + params + fields). */
  readonly cache = new Map<string, CacheEntry>();
  private transport?: StreamTransport;

  constructor(
    instanceSettings: DataSourceInstanceSettings<LiveOptions>,
    private readonly deps: DataSourceDeps = {}
  ) {
    super(instanceSettings);
    this.options = withDefaults(instanceSettings.jsonData);
    this.baseUrl =
      this.options.access === 'proxy' ? `${trimSlash(instanceSettings.url ?? '')}/livedata` : trimSlash(this.options.url);
  }

  /** The streaming carrier: one shared WebSocket, or NDJSON over fetch (always through the proxy). */
  getTransport(): StreamTransport {
    if (!this.transport) {
      const { timers } = this.deps;
      if (this.options.access === 'proxy') {
        // Grafana's data source proxy does not carry WebSockets: stream NDJSON through it.
        this.transport = new HttpStreamClient({
          url: this.baseUrl,
          fetch: this.deps.fetch,
          credentials: 'same-origin',
          timers,
        });
      } else if (this.options.transport === 'http') {
        this.transport = new HttpStreamClient({ url: this.baseUrl, fetch: this.deps.fetch, timers });
      } else {
        this.transport = new LiveClient({
          url: this.baseUrl,
          WebSocket: this.deps.WebSocket,
          timers,
          idleCloseMs: 1000,
          ...this.deps.client,
        });
      }
    }
    return this.transport;
  }

  override getDefaultQuery(_app: CoreApp): Partial<LiveQuery> {
    return DEFAULT_QUERY;
  }

  override filterQuery(query: LiveQuery): boolean {
    return !query.hide && Boolean(query.channel);
  }

  applyTemplateVariables(query: LiveQuery, scopedVars: ScopedVars): LiveQuery {
    const srv = getTemplateSrv();
    const replace = (s: string, format?: string) => srv.replace(s, scopedVars, format);
    const params: Record<string, ParamValue> = {};
    for (const [k, v] of Object.entries(query.params ?? {})) {
      const value = typeof v === 'string' ? replace(v).trim() : v;
      if (value === '' || value === undefined || value === null) {
        continue;
      }
      params[k] = typeof value === 'string' && /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value;
    }
    const fields = (query.fields ?? [])
      .flatMap((f) => replace(f, 'csv').split(','))
      .map((f) => f.trim())
      .filter(Boolean);
    return {
      ...query,
      channel: replace(query.channel ?? '').trim(),
      params,
      fields,
      alias: query.alias ? replace(query.alias) : query.alias,
    };
  }

  query(request: DataQueryRequest<LiveQuery>): Observable<DataQueryResponse> {
    const streams = request.targets
      .filter((t) => this.filterQuery(t))
      .map((t) => this.applyTemplateVariables(t, request.scopedVars))
      .filter((t) => t.channel)
      .map((t) => this.stream(t, request));
    if (!streams.length) {
      return of({ data: [], state: LoadingState.Done });
    }
    return merge(...streams);
  }

  /** One target: a streaming frame fed by one subscription, emissions throttled (trailing kept). */
  stream(query: LiveQuery, request: DataQueryRequest<LiveQuery>): Observable<DataQueryResponse> {
    const throttleMs = this.options.throttleMs;
    return new Observable<DataQueryResponse>((subscriber) => {
      const fromMs = request.range.from.valueOf();
      const toMs = request.range.to.valueOf();
      const live = isLiveEnd(request.rangeRaw?.to, toMs);
      const span = Math.max(1, toMs - fromMs);
      const maxLength = Math.max(request.maxDataPoints ?? 0, this.options.maxPoints);
      const key = cacheKey(query);
      const refId = query.refId;

      let entry: CacheEntry | undefined;
      const cached = live ? this.cache.get(key) : undefined;
      if (cached && cached.coveredFrom <= fromMs && cached.position) {
        entry = cached.active
          ? { frame: cloneFrame(cached.frame), position: cached.position, coveredFrom: cached.coveredFrom, active: true }
          : cached;
        entry.active = true;
        entry.frame.options = { ...entry.frame.options, maxDelta: span, maxLength };
        trimBefore(entry.frame, fromMs);
        entry.coveredFrom = fromMs;
        this.remember(key, entry);
      }

      const statusNotice: { current?: QueryResultMetaNotice } = {};
      const serverNotices: QueryResultMetaNotice[] = [];
      let lossFloor: number | undefined;
      let addedSinceReconnect = 0;
      let counting = false;

      const emit = (state: LoadingState) => {
        const frame = entry?.frame;
        if (!frame) {
          return;
        }
        frame.refId = refId;
        applyAlias(frame, query.alias);
        const notices = [...serverNotices];
        if (statusNotice.current) {
          notices.push(statusNotice.current);
        }
        frame.meta = { ...frame.meta, notices: notices.length ? notices : undefined };
        subscriber.next({ data: [frame], key: refId, state });
      };

      if (entry) {
        emit(LoadingState.Streaming);
      }

      const req: SubscribeRequest = {
        channel: query.channel,
        params: Object.keys(query.params ?? {}).length ? query.params : undefined,
        fields: query.fields?.length ? query.fields : undefined,
        interval: Math.min(60_000, Math.max(0, query.interval ?? throttleMs)),
      };
      if (entry?.position) {
        req.since = entry.position;
      } else {
        req.from = fromMs;
      }
      if (!live) {
        req.to = toMs;
      }

      const unsubscribe = this.getTransport().subscribe(req, {
        onData: (msg) => {
          const json = msg.frame ?? {};
          if (!entry) {
            const frame = StreamingDataFrame.fromDataFrameJSON(json as DataFrameJSON, { maxLength, maxDelta: span });
            entry = { frame, position: msg.position ?? undefined, coveredFrom: fromMs, active: true };
            if (counting) {
              addedSinceReconnect += frame.length;
            }
          } else {
            const frame = entry.frame;
            let body = json;
            if (lossFloor !== undefined && !msg.late) {
              // After a loss the server resumes from its oldest retained point: keep what we have.
              const cut = rowsAfter(body, lossFloor, timeIndex(frame));
              body = cut.json;
              if (rowCount(body) > 0 && cut.dropped === 0) {
                lossFloor = undefined;
              }
            }
            const before = frame.length;
            const n = rowCount(body);
            const last = lastTime(frame);
            const first = firstTimeOf(body, timeIndex(frame));
            if (msg.late || (last !== undefined && first !== undefined && first < last)) {
              insertRows(frame, body);
            } else {
              frame.push(body as DataFrameJSON);
            }
            if (frame.length < before + n) {
              // Trimmed by maxDelta/maxLength: the frame now starts later.
              const ti = timeIndex(frame);
              const start = ti >= 0 && frame.length ? (frame.fields[ti].values[0] as number) : undefined;
              if (start !== undefined) {
                entry.coveredFrom = Math.max(entry.coveredFrom, start);
              }
            }
            if (counting) {
              addedSinceReconnect += n;
            }
          }
          if (msg.position) {
            entry.position = msg.position;
          }
          if (live) {
            this.remember(key, entry);
          }
          emit(LoadingState.Streaming);
        },
        onComplete: () => {
          emit(LoadingState.Done);
          subscriber.complete();
        },
        onError: (message) => {
          subscriber.next({
            data: entry ? [entry.frame] : [],
            key: refId,
            state: LoadingState.Error,
            error: { message: `${query.channel}: ${message}`, refId },
            errors: [{ message: `${query.channel}: ${message}`, refId }],
          });
          subscriber.complete();
        },
        onNotice: (notice: NoticeMessage) => {
          serverNotices.push({ severity: notice.level === 'warning' ? 'warning' : 'info', text: notice.text });
          serverNotices.splice(0, Math.max(0, serverNotices.length - 3));
          if (notice.lost !== undefined && entry) {
            lossFloor = lastTime(entry.frame);
          }
          emit(LoadingState.Streaming);
        },
        onStatus: (status: StreamStatus) => {
          if (status.state === 'reconnecting') {
            statusNotice.current = {
              severity: 'warning',
              text: `reconnecting… (${status.reason}; attempt ${status.attempt}, next in ${(status.delayMs / 1000).toFixed(1)} s)`,
            };
            counting = true;
            addedSinceReconnect = 0;
          } else if (status.state === 'resumed') {
            statusNotice.current = { severity: 'info', text: `resumed, ${addedSinceReconnect} points recovered` };
            counting = false;
          }
          emit(LoadingState.Streaming);
        },
      });

      return () => {
        unsubscribe();
        if (entry) {
          entry.active = false;
          if (live && entry.position) {
            this.remember(key, entry);
          }
        }
      };
    }).pipe(throttleTime(throttleMs, asyncScheduler, { leading: true, trailing: true }));
  }

  private remember(key: string, entry: CacheEntry): void {
    this.cache.delete(key);
    this.cache.set(key, entry);
    while (this.cache.size > CACHE_LIMIT) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
  }

  async getChannels(): Promise<ChannelInfo[]> {
    const body = await this.getJson<{ channels?: ChannelInfo[] }>('/api/channels');
    return body?.channels ?? [];
  }

  override async metricFindQuery(query?: unknown): Promise<MetricFindValue[]> {
    const channels = await this.getChannels();
    const raw = typeof query === 'string' ? query : ((query as { query?: string } | undefined)?.query ?? '');
    const pattern = getTemplateSrv().replace(raw).trim();
    let match: (name: string) => boolean = () => true;
    if (pattern) {
      const re = /^\/(.*)\/([gimsuy]*)$/.exec(pattern);
      if (re) {
        const rx = new RegExp(re[1], re[2]);
        match = (name) => rx.test(name);
      } else {
        match = (name) => name.includes(pattern);
      }
    }
    return channels.filter((c) => match(c.name)).map((c) => ({ text: c.name, value: c.name }));
  }

  async testDatasource(): Promise<TestDataSourceResponse> {
    const where = this.options.access === 'proxy' ? `${this.options.url} (through the Grafana proxy)` : this.baseUrl;
    let health: { status?: string; version?: string; uptime_s?: number };
    try {
      health = await this.getJson('/api/health');
    } catch (err) {
      return { status: 'error', message: await this.explain(err) };
    }
    if (!health || health.status !== 'ok') {
      return {
        status: 'error',
        message: `${where} answered /api/health, but not like livedata does (${JSON.stringify(health).slice(0, 200)}): check the URL.`,
      };
    }
    // Reading needs the read token when the server has one: /api/channels checks it.
    let channels: ChannelInfo[];
    try {
      channels = await this.getChannels();
    } catch (err) {
      return { status: 'error', message: await this.explain(err) };
    }
    return {
      status: 'success',
      message: `livedata ${health.version ?? ''} is up at ${where}: ${channels.length} channel${
        channels.length === 1 ? '' : 's'
      }.`,
    };
  }

  /** Turn a failed health check into a sentence saying what to do. */
  private async explain(err: unknown): Promise<string> {
    const e = (err ?? {}) as { status?: number; statusText?: string; data?: { error?: string; message?: string }; message?: string };
    const status = typeof e.status === 'number' ? e.status : 0;
    const proxy = this.options.access === 'proxy';
    const url = this.options.url;
    const detail = e.data?.error ?? e.data?.message ?? e.message ?? e.statusText ?? '';
    if (status === 401 || status === 403) {
      return proxy
        ? `livedata at ${url} refused the token (HTTP ${status}): set the right read token under Authentication and save.`
        : `livedata at ${url} wants a token (HTTP ${status}): switch Access to "proxy" and set the token, so Grafana adds it (the browser never sees secure settings).`;
    }
    if (status === 404) {
      return `Nothing at ${joinUrl(proxy ? url : this.baseUrl, '/api/health')} (HTTP 404): the URL must be the livedata server's base URL, e.g. http://localhost:8080 (no path).`;
    }
    if (proxy && (status === 502 || status === 503 || status === 504)) {
      return `Grafana could not reach livedata at ${url} (HTTP ${status}, connection refused or timed out): start \`livedata serve\` and check the URL is reachable from the Grafana server${detail ? ` (${detail})` : ''}.`;
    }
    if (status >= 100) {
      return `livedata at ${url} answered HTTP ${status}${detail ? `: ${detail}` : ''}.`;
    }
    // No HTTP status: the request never got an answer the browser would show us.
    if (!proxy && (await this.reachableOpaque(joinUrl(this.baseUrl, '/api/health')))) {
      const origin = this.origin();
      return `Blocked by CORS: livedata at ${url} is running but does not allow requests from ${origin}. Start it with \`--cors-origin ${origin}\` (or LIVEDATA_CORS_ORIGIN), or switch Access to "proxy".`;
    }
    return `Cannot reach livedata at ${url}: connection refused or host unreachable${detail ? ` (${detail})` : ''}. Is \`livedata serve\` running, and is the URL right${proxy ? ' as seen from the Grafana server' : ' as seen from this browser'}?`;
  }

  /** A no-cors request succeeds when the server answers at all, whatever its CORS headers say. */
  private async reachableOpaque(url: string): Promise<boolean> {
    const f = this.deps.fetch ?? (globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined);
    if (!f) {
      return false;
    }
    try {
      await f(url, { mode: 'no-cors', cache: 'no-store' });
      return true;
    } catch {
      return false;
    }
  }

  private origin(): string {
    return this.deps.origin ?? (globalThis as { location?: { origin?: string } }).location?.origin ?? 'this Grafana';
  }

  private async getJson<T>(path: string): Promise<T> {
    const resp = await lastValueFrom(
      getBackendSrv().fetch<T>({
        url: joinUrl(this.baseUrl, path),
        method: 'GET',
        showErrorAlert: false,
        showSuccessAlert: false,
      })
    );
    return resp.data;
  }
}

/** Live when the range end is "now"-relative and not in the past; else a finite query. */
export function isLiveEnd(rawTo: unknown, toMs: number, now = Date.now()): boolean {
  const relative = typeof rawTo === 'string' && rawTo.trim().startsWith('now');
  return relative && toMs >= now - 1000;
}

export function cacheKey(q: Pick<LiveQuery, 'channel' | 'params' | 'fields'>): string {
  const params = Object.entries(q.params ?? {})
    .map(([k, v]) => [k, String(v)])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([q.channel, params, [...(q.fields ?? [])]]);
}

/**
 * Alias: with `{{...}}` it is a legend format per field (`{{__name__}}` or `{{field}}` is the field
 * name, any other key a label); plain text names the only value field, or prefixes each field.
 */
export function applyAlias(frame: StreamingDataFrame, alias: string | undefined): void {
  const valueFields = frame.fields.filter((f) => f.type !== FieldType.time);
  for (const f of valueFields) {
    let name: string | undefined;
    if (!alias) {
      name = undefined;
    } else if (alias.includes('{{')) {
      const labels: Record<string, string> = { __name__: f.name, field: f.name, ...(f.labels ?? {}) };
      name = alias.replace(/\{\{\s*([^}\s]+)\s*\}\}/g, (_m, k: string) => labels[k] ?? '');
    } else {
      name = valueFields.length === 1 ? alias : `${alias} ${f.name}`;
    }
    if (name === undefined) {
      if (f.config.displayNameFromDS !== undefined) {
        f.config = { ...f.config, displayNameFromDS: undefined };
      }
    } else if (f.config.displayNameFromDS !== name) {
      f.config = { ...f.config, displayNameFromDS: name };
    }
  }
}
