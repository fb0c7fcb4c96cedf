import type { LiveQuery } from './types';
import { FrameStore } from './store/FrameStore';

/** The rows of a live query kept after it ends, so a refresh resumes instead of starting over. */
export interface CacheEntry {
  /** The rows, and the position a new subscription resumes after (`store.position`). */
  store: FrameStore;
  /** The subscription asked for every point from this time on (the store trims: see `covers`). */
  coveredFrom: number;
  /** A stream is writing into this store now (a second one must take a copy). */
  active: boolean;
}

/** Least recently used first out, at most `limit` entries (one per query: channel, params, fields). */
export class FrameCache {
  private readonly entries_ = new Map<string, CacheEntry>();

  constructor(readonly limit = 64) {}

  get size(): number {
    return this.entries_.size;
  }

  get(key: string): CacheEntry | undefined {
    return this.entries_.get(key);
  }

  /** Store or refresh an entry (it becomes the most recently used). */
  remember(key: string, entry: CacheEntry): void {
    this.entries_.delete(key);
    this.entries_.set(key, entry);
    while (this.entries_.size > this.limit) {
      const oldest = this.entries_.keys().next().value as string;
      this.entries_.delete(oldest);
    }
  }

  entries(): IterableIterator<[string, CacheEntry]> {
    return this.entries_.entries();
  }
}

/** Whether an entry holds every point of its channel from `from` on (and can resume). */
export function covers(entry: CacheEntry, from: number): boolean {
  const trimmed = entry.store.trimmedThrough;
  return entry.coveredFrom <= from && (trimmed === undefined || trimmed < from) && Boolean(entry.store.position);
}

/** The cache key of a query: its channel, params (in any order) and fields. */
export function cacheKey(q: Pick<LiveQuery, 'channel' | 'params' | 'fields'>): string {
  const params = Object.entries(q.params ?? {})
    .map(([k, v]) => [k, String(v)])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([q.channel, params, [...(q.fields ?? [])]]);
}
