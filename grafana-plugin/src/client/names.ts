/**
 * Channel names in URLs (docs/protocol.md, "Channels"): any printable Unicode, `/` between levels.
 *
 * In a path each level is percent-encoded (UTF-8) and the slashes are kept; in a query string a
 * name is one value. A list of names goes in a query as one `channel` parameter per name, never
 * joined by commas: names may hold commas (`telegraf/c,pu`), spaces, `%`, `?`, `#` or emoji.
 */

/** `sensors/température 1` → `sensors/temp%C3%A9rature%201`, for `/api/push/...` and the like. */
export function channelPath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

/** The channels a page URL selects: every `channel` parameter, else the older comma list `channels`. */
export function readChannels(search: string): string[] {
  const q = new URLSearchParams(search);
  const many = q.getAll('channel').filter((s) => s.length > 0);
  if (many.length) {
    return many;
  }
  return (q.get('channels') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Adds one `channel` parameter per name to `q` (the inverse of {@link readChannels}). */
export function writeChannels(q: URLSearchParams, names: readonly string[]): void {
  for (const name of names) {
    q.append('channel', name);
  }
}

/** `q.toString()` with `/` left readable (it needs no escaping in a query value). */
export function readableQuery(q: URLSearchParams): string {
  return q.toString().replace(/%2F/gi, '/');
}
