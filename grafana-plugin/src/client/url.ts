import { SubscribeMessage } from './protocol';

/** `http://host:8080/x/` + `/api/ws` → `ws://host:8080/x/api/ws`. */
export function wsUrl(baseUrl: string): string {
  const base = trimSlash(baseUrl);
  let url: string;
  if (/^https?:\/\//i.test(base)) {
    url = base.replace(/^http/i, 'ws');
  } else if (/^wss?:\/\//i.test(base)) {
    url = base;
  } else {
    // A path relative to the page (Grafana proxy path): resolve against the page's origin.
    const loc = (globalThis as { location?: { protocol: string; host: string } }).location;
    const proto = loc?.protocol === 'https:' ? 'wss:' : 'ws:';
    url = `${proto}//${loc?.host ?? 'localhost'}${base.startsWith('/') ? '' : '/'}${base}`;
  }
  return url.endsWith('/api/ws') ? url : `${url}/api/ws`;
}

export function joinUrl(baseUrl: string, path: string): string {
  return `${trimSlash(baseUrl)}/${path.replace(/^\/+/, '')}`;
}

export function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

/** `GET /api/stream?...` carrying one `subscribe` message (protocol.md, "HTTP stream"). */
export function streamUrl(baseUrl: string, req: SubscribeMessage): string {
  const q = new URLSearchParams();
  q.set('channel', req.channel);
  q.set('id', req.id);
  if (req.since) {
    q.set('since', req.since);
  } else if (req.from !== undefined) {
    q.set('from', String(req.from));
  }
  if (req.to !== undefined) {
    q.set('to', String(req.to));
  }
  if (req.fields && req.fields.some((f) => f.includes(','))) {
    // Names with commas (line-protocol labels, escaped keys): one `field` each, never split.
    for (const f of req.fields) {
      q.append('field', f);
    }
  } else if (req.fields && req.fields.length) {
    q.set('fields', req.fields.join(','));
  }
  if (req.interval !== undefined) {
    q.set('interval', String(req.interval));
  }
  for (const [k, v] of Object.entries(req.params ?? {})) {
    q.set(k, String(v));
  }
  return `${joinUrl(baseUrl, '/api/stream')}?${q.toString()}`;
}
