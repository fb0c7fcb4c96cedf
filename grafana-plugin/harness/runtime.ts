/**
 * The parts of `@grafana/runtime` that Grafana's shell provides and the data source uses:
 * `getTemplateSrv()` (no variables on this page) and `getBackendSrv().fetch` over the real fetch.
 */
import { Observable } from 'rxjs';

export interface FetchOptions {
  url: string;
  method?: string;
  data?: unknown;
  headers?: Record<string, string>;
}

export const runtime = {
  getTemplateSrv() {
    return {
      replace: (target?: string) => target ?? '',
      getVariables: () => [],
      containsTemplate: () => false,
      updateTimeRange: () => undefined,
    };
  },
  getBackendSrv() {
    return {
      fetch<T>(opts: FetchOptions): Observable<{ data: T; status: number; ok: boolean }> {
        return new Observable((subscriber) => {
          const abort = new AbortController();
          fetch(opts.url, {
            method: opts.method ?? 'GET',
            headers: opts.headers,
            body: opts.data === undefined ? undefined : JSON.stringify(opts.data),
            signal: abort.signal,
          })
            .then(async (resp) => {
              const text = await resp.text();
              let data: unknown = text;
              try {
                data = JSON.parse(text);
              } catch {
                // not JSON
              }
              if (!resp.ok) {
                subscriber.error({ status: resp.status, statusText: resp.statusText, data });
                return;
              }
              subscriber.next({ data: data as T, status: resp.status, ok: true });
              subscriber.complete();
            })
            .catch((err: unknown) => subscriber.error(err));
          return () => abort.abort();
        });
      },
    };
  },
};
