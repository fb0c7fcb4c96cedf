/**
 * A thin stand-in for the parts of `@grafana/runtime` that Grafana's shell provides at run time:
 * `getTemplateSrv()` and `getBackendSrv()` (over the real `fetch`). It can also play Grafana's data
 * source proxy route (rewrite the proxy path to the server and add the Authorization header) and
 * the browser's CORS check, so the tests exercise the plugin against a real server.
 *
 * Used by the tests as: jest.mock('@grafana/runtime', () => jest.requireActual('../testing/runtime')).
 */
import { Observable, from } from 'rxjs';

export interface ProxyRoute {
  /** The path Grafana serves the route at, e.g. `/api/datasources/proxy/uid/x/livedata`. */
  prefix: string;
  /** The route's target, `{{ .JsonData.url }}`. */
  target: string;
  /** `{{ .SecureJsonData.token }}`. */
  token?: string;
}

const state: {
  variables: Record<string, string | string[]>;
  corsOrigin?: string;
  proxy?: ProxyRoute;
} = { variables: {} };

export function setTemplateVariables(vars: Record<string, string | string[]>): void {
  state.variables = { ...vars };
}

/** Behave like a browser page at `origin`: cross-origin answers without a matching ACAO header fail. */
export function emulateCors(origin: string | undefined): void {
  state.corsOrigin = origin;
}

export function setProxyRoute(route: ProxyRoute | undefined): void {
  state.proxy = route;
}

export function resetRuntime(): void {
  state.variables = {};
  state.corsOrigin = undefined;
  state.proxy = undefined;
}

/** Rewrite a proxy-path URL the way Grafana's data source proxy route does. */
function viaProxy(url: string, headers: Record<string, string>): { url: string; headers: Record<string, string>; proxied: boolean } {
  const route = state.proxy;
  if (!route || !url.startsWith(route.prefix)) {
    return { url, headers, proxied: false };
  }
  const rest = url.slice(route.prefix.length);
  const out = { ...headers };
  if (route.token) {
    out.Authorization = `Bearer ${route.token}`;
  }
  return { url: `${route.target.replace(/\/+$/, '')}${rest}`, headers: out, proxied: true };
}

/** `fetch` as the browser would do it through Grafana's proxy path (for the HTTP stream transport). */
export async function proxyFetch(input: string, init: RequestInit = {}): Promise<Response> {
  const { url, headers, proxied } = viaProxy(input, { ...((init.headers as Record<string, string>) ?? {}) });
  try {
    return await fetch(url, { ...init, headers });
  } catch (err) {
    if (proxied && !(init.signal && init.signal.aborted)) {
      return new Response(JSON.stringify({ message: 'Bad Gateway' }), { status: 502 });
    }
    throw err;
  }
}

function formatValue(value: string | string[], format?: string): string {
  if (Array.isArray(value)) {
    return format === 'csv' || format === undefined ? value.join(',') : value.join(',');
  }
  return value;
}

export function getTemplateSrv() {
  return {
    getVariables: () => [],
    containsTemplate: (target?: string) => Boolean(target && /\$\w+|\$\{\w+\}|\[\[\w+\]\]/.test(target)),
    updateTimeRange: () => undefined,
    replace(target?: string, scopedVars?: Record<string, { value: unknown }>, format?: string): string {
      if (!target) {
        return target ?? '';
      }
      return target.replace(/\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]/g, (match, a?: string, b?: string, c?: string) => {
        const name = (a ?? b ?? c) as string;
        const scoped = scopedVars?.[name];
        if (scoped !== undefined) {
          return formatValue(scoped.value as string | string[], format);
        }
        const v = state.variables[name];
        return v === undefined ? match : formatValue(v, format);
      });
    },
  };
}

export interface StandInFetchOptions {
  url: string;
  method?: string;
  data?: unknown;
  headers?: Record<string, string>;
}

export function getBackendSrv() {
  return {
    fetch<T>(options: StandInFetchOptions): Observable<{ data: T; status: number; statusText: string; ok: boolean }> {
      return from(
        (async () => {
          const { url, headers, proxied } = viaProxy(options.url, { ...(options.headers ?? {}) });
          const crossOrigin = !proxied && state.corsOrigin !== undefined;
          if (crossOrigin) {
            headers.Origin = state.corsOrigin as string;
          }
          let resp: Response;
          try {
            resp = await fetch(url, {
              method: options.method ?? 'GET',
              headers,
              body: options.data === undefined ? undefined : JSON.stringify(options.data),
            });
          } catch (err) {
            if (proxied) {
              throw { status: 502, statusText: 'Bad Gateway', data: { message: 'Bad Gateway' }, config: options };
            }
            // The browser's fetch has no status for a refused connection.
            throw new TypeError(`Failed to fetch (${(err as Error).message})`);
          }
          if (crossOrigin) {
            const allow = resp.headers.get('access-control-allow-origin');
            if (allow !== '*' && allow !== state.corsOrigin) {
              throw new TypeError('Failed to fetch');
            }
          }
          const text = await resp.text();
          let data: unknown = text;
          try {
            data = text ? JSON.parse(text) : undefined;
          } catch {
            // not JSON
          }
          if (!resp.ok) {
            throw { status: resp.status, statusText: resp.statusText, data, config: options };
          }
          return { data: data as T, status: resp.status, statusText: resp.statusText, ok: true };
        })()
      );
    },
  };
}
