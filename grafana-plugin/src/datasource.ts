import {
  CoreApp,
  DataQueryRequest,
  DataQueryResponse,
  DataSourceApi,
  DataSourceInstanceSettings,
  LoadingState,
  MetricFindValue,
  ScopedVars,
  TestDataSourceResponse,
} from '@grafana/data';
import { getBackendSrv, getTemplateSrv } from '@grafana/runtime';
import { Observable, SchedulerLike, lastValueFrom, of } from 'rxjs';

import { FrameCache } from './cache';
import {
  ChannelInfo,
  FetchLike,
  HttpStreamClient,
  LiveClient,
  LiveClientOptions,
  ParamValue,
  StreamTransport,
  Timers,
  WebSocketCtor,
  joinUrl,
  parseChannelList,
  trimSlash,
} from './client';
import { frameNames } from './frames';
import { wholePanel } from './panel';
import { QueryStream } from './QueryStream';
import { DEFAULT_QUERY, LiveOptions, LiveQuery, withDefaults } from './types';

/** What tests (or the live view page) can inject instead of the browser's globals. */
export interface DataSourceDeps {
  WebSocket?: WebSocketCtor;
  fetch?: FetchLike;
  timers?: Timers;
  client?: Partial<LiveClientOptions>;
  /** Origin this Grafana is served from, for the CORS hint (default: window.location.origin). */
  origin?: string;
  /** The clock of the emission throttle (default: rxjs's asyncScheduler). */
  scheduler?: SchedulerLike;
}

export type { ChannelInfo };

export class DataSource extends DataSourceApi<LiveQuery, LiveOptions> {
  readonly options: LiveOptions;
  /** Base URL of HTTP calls: the server, or Grafana's proxy route to it. */
  readonly baseUrl: string;
  /** Per-datasource cache keyed by the interpolated query (channel + params + fields). */
  readonly cache = new FrameCache();
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
          onSocketError: (message) => console.warn(`livedata: ${message}`),
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

  /** One QueryStream per target, emitted together (panel.ts); see QueryStream.ts. */
  query(request: DataQueryRequest<LiveQuery>): Observable<DataQueryResponse> {
    const targets = request.targets
      .filter((t) => this.filterQuery(t))
      .map((t) => this.applyTemplateVariables(t, request.scopedVars))
      .filter((t) => t.channel);
    if (!targets.length) {
      return of({ data: [], state: LoadingState.Done });
    }
    const from = request.range.from.valueOf();
    const to = request.range.to.valueOf();
    const common = {
      from,
      to,
      live: isLiveEnd(request.rangeRaw?.to, to),
      // buckets are two rows each (min and max), and the first and last may be partial
      maxLength: Math.max(2 * (request.maxDataPoints ?? 0) + 4, this.options.maxPoints),
      maxDataPoints: request.maxDataPoints,
      intervalMs: request.intervalMs,
      throttleMs: this.options.throttleMs,
      transport: this.getTransport(),
      cache: this.cache,
      scheduler: this.deps.scheduler,
    };
    const names = frameNames(targets);
    const streams = targets.map((query, i) => new QueryStream({ ...common, query, frameName: names[i] }));
    // One key for the panel's one response: its queries' refIds ('A' for a lone query A).
    const key = targets.map((t) => t.refId).join(',');
    return wholePanel(streams, { key, throttleMs: this.options.throttleMs, scheduler: this.deps.scheduler });
  }

  async getChannels(): Promise<ChannelInfo[]> {
    return parseChannelList(await this.getJson<unknown>('/api/channels'));
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
    let body: unknown;
    try {
      body = await this.getJson<unknown>('/api/channels');
    } catch (err) {
      return { status: 'error', message: await this.explain(err) };
    }
    let channels: ChannelInfo[];
    try {
      channels = parseChannelList(body);
    } catch (err) {
      return { status: 'error', message: `${where}: ${err instanceof Error ? err.message : String(err)}` };
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
