/**
 * The live view served by `livedata serve` at `/`: a channel list, one live chart per selected
 * channel, a time window (backfilled on open), pause, a legend with last values and the connection
 * state. It talks to the server through the same protocol client as the Grafana plugin
 * (`src/client`), so the page and the plugin exercise one implementation.
 */
import {
  ChannelInfo,
  LiveClient,
  NoticeMessage,
  StreamStatus,
  parseChannelList,
  readChannels,
  readableQuery,
  writeChannels,
} from '../src/client';
import { FrameError, FrameStore } from '../src/store/FrameStore';
import { Panel, el } from './panel';

export const WINDOWS: Record<string, number> = { '1m': 60_000, '5m': 300_000, '1h': 3_600_000 };
const DEFAULT_CHANNELS = ['random-walk'];
const CHANNELS_EVERY_MS = 5000;
const CHANNELS_RETRY_MS = 1000;
const RESUMED_SHOW_MS = 5000;

type ConnState = 'connecting' | 'connected' | 'reconnecting' | 'resumed' | 'idle';

/** Rows kept per channel at most (the window trims long before, unless paused). */
const MAX_ROWS = 400_000;

interface Live {
  store: FrameStore;
  panel: Panel;
  unsubscribe: () => void;
  error?: string;
  complete?: boolean;
  notices: string[];
}

interface StatusEntry {
  state: ConnState;
  at: number;
  detail?: string;
}

class LiveView {
  private readonly client: LiveClient;
  private readonly live = new Map<string, Live>();
  private selected: string[];
  private windowKey: string;
  private paused = false;
  private pausedAt = 0;
  private state: ConnState = 'connecting';
  private readonly statusLog: StatusEntry[] = [];
  private resumedTimer: number | undefined;
  private channels: ChannelInfo[] = [];
  private channelsError: string | null = null;
  private channelsRetry: number | undefined;
  private lastTrim = 0;
  /** Points the server said were lost since the connection dropped (-1: an unknown number). */
  private lostSinceDrop: number | null = null;

  private readonly panelsEl = byId('panels');
  private readonly listEl = byId('channels');
  private readonly filterEl = byId('filter') as HTMLInputElement;
  private readonly statusEl = byId('status');
  private readonly pauseEl = byId('pause') as HTMLButtonElement;
  private readonly windowEl = byId('window');

  constructor() {
    const q = new URLSearchParams(location.search);
    const chosen = readChannels(location.search);
    this.selected = chosen.length ? chosen : [...DEFAULT_CHANNELS];
    const w = q.get('window') ?? '1m';
    this.windowKey = w in WINDOWS ? w : '1m';
    this.client = new LiveClient({
      url: location.origin,
      idleCloseMs: 2000,
      backoffBaseMs: 250,
      backoffCapMs: 5000,
      onSocketError: (m) => console.warn('livedata:', m),
    });
  }

  start(): void {
    this.panelsEl.textContent = '';
    this.renderWindow();
    this.windowEl.addEventListener('click', (ev) => {
      const key = (ev.target as HTMLElement).closest<HTMLElement>('[data-window]')?.dataset.window;
      if (key) {
        this.setWindow(key);
      }
    });
    this.pauseEl.addEventListener('click', () => this.setPaused(!this.paused));
    document.addEventListener('keydown', (ev) => {
      if (ev.key === ' ' && ev.target === document.body) {
        ev.preventDefault();
        this.setPaused(!this.paused);
      }
    });
    this.filterEl.addEventListener('input', () => this.renderChannels());
    this.setStatus('connecting');
    for (const name of this.selected) {
      this.open(name);
    }
    this.renderEmpty();
    void this.loadChannels();
    window.setInterval(() => void this.loadChannels(), CHANNELS_EVERY_MS);
    const frame = () => {
      this.tick();
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    // rAF stops in hidden tabs; keep the data trimmed there too.
    window.setInterval(() => this.trim(), 1000);
    window.addEventListener('resize', () => this.layout());
    this.layout();
    this.installDebugHook();
  }

  get windowMs(): number {
    return WINDOWS[this.windowKey];
  }

  // --- subscriptions ------------------------------------------------------------------------------

  private open(name: string): void {
    if (this.live.has(name)) {
      return;
    }
    const store = new FrameStore({ maxRows: MAX_ROWS });
    const panel = new Panel(name, store, this.panelsEl);
    const entry: Live = { store, panel, unsubscribe: () => undefined, notices: [] };
    this.live.set(name, entry);
    this.subscribe(name, entry);
  }

  private subscribe(name: string, entry: Live): void {
    entry.error = undefined;
    entry.complete = false;
    entry.panel.notice(null);
    entry.unsubscribe = this.client.subscribe(
      // at most one bucket per pixel: a dense channel draws as its envelope, not a solid band
      { channel: name, from: `now-${this.windowKey}`, interval: 100, max_points: entry.panel.width() },
      {
        onData: (msg) => {
          if (this.live.get(name) !== entry || entry.error) {
            return;
          }
          try {
            entry.store.merge(msg);
          } catch (err) {
            if (!(err instanceof FrameError)) {
              throw err;
            }
            entry.error = `the server sent data this page cannot use: ${err.message}`;
            entry.panel.notice(entry.error, 'error');
            entry.unsubscribe();
            return;
          }
          if (this.state === 'connecting' || this.state === 'idle') {
            this.setStatus('connected');
          }
        },
        onNotice: (n: NoticeMessage) => this.onNotice(entry, n),
        onStatus: (s: StreamStatus) => this.onStatus(s),
        onError: (message) => {
          entry.error = message;
          entry.panel.notice(message, 'error');
        },
        onComplete: () => {
          entry.complete = true;
          entry.panel.notice('the stream is complete (the channel was deleted or reached its end)', 'info');
        },
      }
    );
  }

  private close(name: string): void {
    const entry = this.live.get(name);
    if (!entry) {
      return;
    }
    this.live.delete(name);
    entry.unsubscribe();
    entry.panel.destroy();
  }

  private onNotice(entry: Live, n: NoticeMessage): void {
    if (n.lost !== undefined) {
      entry.store.noteLoss();
      const prev = this.lostSinceDrop;
      this.lostSinceDrop = n.lost < 0 || (prev !== null && prev < 0) ? -1 : (prev ?? 0) + n.lost;
      if (this.state === 'resumed') {
        this.setStatus('resumed', this.resumedDetail(0));
      }
    }
    entry.notices.push(n.text);
    entry.notices.splice(0, Math.max(0, entry.notices.length - 5));
    entry.panel.notice(n.text, n.level === 'warning' ? 'warning' : 'info');
    window.setTimeout(() => {
      if (entry.notices[entry.notices.length - 1] === n.text && !entry.error) {
        entry.panel.notice(null);
      }
    }, 8000);
  }

  private onStatus(s: StreamStatus): void {
    if (s.state === 'reconnecting') {
      if (this.state !== 'reconnecting') {
        this.lostSinceDrop = null;
      }
      const secs = (s.delayMs / 1000).toFixed(1);
      this.setStatus('reconnecting', `${s.reason}; attempt ${s.attempt}, next in ${secs} s`);
    } else if (s.state === 'resumed') {
      this.setStatus('resumed', this.resumedDetail(s.recovered));
      // The server is back: the channel list (and its error) need not wait for the next poll.
      void this.loadChannels();
    }
  }

  /** What a resume brought back, never contradicting a loss notice of the same reconnect. */
  private resumedDetail(recovered: number): string {
    const lost = this.lostSinceDrop;
    if (lost !== null && lost < 0) {
      return 'the server restarted: points from before it may be missing';
    }
    if (lost !== null && lost > 0) {
      return `${lost} point${lost === 1 ? '' : 's'} lost (beyond retention)`;
    }
    return `${recovered} point${recovered === 1 ? '' : 's'} recovered`;
  }

  private setStatus(state: ConnState, detail?: string): void {
    const prev = this.statusLog[this.statusLog.length - 1];
    const changed = !prev || state !== prev.state || detail !== prev.detail;
    this.state = state;
    if (changed) {
      this.statusLog.push({ state, at: Date.now(), detail });
      this.statusLog.splice(0, Math.max(0, this.statusLog.length - 100));
    }
    window.clearTimeout(this.resumedTimer);
    if (state === 'resumed') {
      this.resumedTimer = window.setTimeout(() => {
        if (this.state === 'resumed') {
          this.setStatus('connected');
        }
      }, RESUMED_SHOW_MS);
    }
    this.statusEl.className = `status ${state}`;
    this.statusEl.dataset.state = state;
    const label = this.statusEl.querySelector('.status-label');
    if (label) {
      label.textContent = state;
    }
    this.statusEl.title = detail ?? state;
    const d = this.statusEl.querySelector('.status-detail');
    if (d) {
      d.textContent = detail ?? '';
    }
  }

  // --- controls -----------------------------------------------------------------------------------

  setWindow(key: string): void {
    if (!(key in WINDOWS) || key === this.windowKey) {
      return;
    }
    this.windowKey = key;
    this.renderWindow();
    this.saveUrl();
    // A new window needs its backfill: subscribe again from `now-<window>`.
    for (const [name, entry] of this.live) {
      entry.unsubscribe();
      entry.store.clear();
      this.subscribe(name, entry);
    }
  }

  setPaused(paused: boolean): void {
    this.paused = paused;
    this.pausedAt = Date.now();
    this.pauseEl.setAttribute('aria-pressed', String(paused));
    this.pauseEl.classList.toggle('active', paused);
    this.pauseEl.querySelector('.label')!.textContent = paused ? 'Resume' : 'Pause';
    document.body.classList.toggle('paused', paused);
    if (!paused) {
      this.tick(true);
    }
  }

  select(names: string[]): void {
    const want = new Set(names);
    for (const name of [...this.live.keys()]) {
      if (!want.has(name)) {
        this.close(name);
      }
    }
    for (const name of names) {
      this.open(name);
    }
    this.selected = names.filter((n, i) => names.indexOf(n) === i);
    this.saveUrl();
    this.renderChannels();
    this.renderEmpty();
    this.layout();
    this.tick(true);
  }

  /** Share the screen's height among the panels: 200..440 px each. */
  private layout(): void {
    const n = Math.max(1, this.live.size);
    const free = window.innerHeight - 48 - 32 - n * 110;
    const h = Math.max(200, Math.min(440, free / n));
    for (const entry of this.live.values()) {
      entry.panel.setHeight(h);
    }
  }

  private toggle(name: string, on: boolean): void {
    const names = on ? [...this.selected, name] : this.selected.filter((n) => n !== name);
    this.select(names);
  }

  private saveUrl(): void {
    const q = new URLSearchParams();
    const defaults = this.selected.length === 1 && this.selected[0] === DEFAULT_CHANNELS[0];
    if (!defaults) {
      writeChannels(q, this.selected); // one `channel` per name: names may hold commas
    }
    if (this.windowKey !== '1m') {
      q.set('window', this.windowKey);
    }
    const s = readableQuery(q);
    history.replaceState(null, '', s ? `?${s}` : location.pathname);
  }

  // --- drawing ------------------------------------------------------------------------------------

  private tick(force = false): void {
    if (this.paused && !force) {
      return;
    }
    const now = Date.now();
    const windowMs = this.windowMs;
    for (const entry of this.live.values()) {
      const panel = entry.panel;
      // Redraw about once per pixel of time, between 30 fps and 1 fps.
      const every = Math.min(1000, Math.max(33, windowMs / panel.width()));
      if (!force && now - panel.lastDrawAt < every) {
        continue;
      }
      const last = entry.store.lastTime;
      const max = this.paused ? this.pausedAt : Math.max(now, last ?? now);
      panel.draw({ max, windowMs }, force);
    }
    if (now - this.lastTrim > 1000) {
      this.trim();
    }
  }

  private trim(): void {
    this.lastTrim = Date.now();
    if (this.paused) {
      return;
    }
    const cutoff = Date.now() - this.windowMs * 1.05 - 2000;
    for (const entry of this.live.values()) {
      entry.store.trimBefore(cutoff);
    }
  }

  private renderWindow(): void {
    for (const b of this.windowEl.querySelectorAll<HTMLElement>('[data-window]')) {
      const on = b.dataset.window === this.windowKey;
      b.classList.toggle('active', on);
      b.setAttribute('aria-pressed', String(on));
    }
  }

  private renderEmpty(): void {
    let empty = this.panelsEl.querySelector('.empty');
    if (this.live.size === 0) {
      if (!empty) {
        empty = el('div', 'empty');
        empty.textContent = 'No channel selected: pick one on the left.';
        this.panelsEl.append(empty);
      }
    } else {
      empty?.remove();
    }
  }

  // --- channel list -------------------------------------------------------------------------------

  private async loadChannels(): Promise<void> {
    try {
      const resp = await fetch('/api/channels', { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!resp.ok) {
        throw new Error(`HTTP ${resp.status}`);
      }
      this.channels = parseChannelList(await resp.json());
      this.channelsError = null;
    } catch (err) {
      this.channelsError = `cannot list channels (${err instanceof Error ? err.message : String(err)})`;
    }
    window.clearTimeout(this.channelsRetry);
    if (this.channelsError) {
      // Ask again soon rather than at the next poll, so the error goes as soon as the server is back.
      this.channelsRetry = window.setTimeout(() => void this.loadChannels(), CHANNELS_RETRY_MS);
    }
    this.renderChannels();
  }

  /** Whether `name` is a generated channel: a base the server generates, with or without params. */
  private isGenerated(name: string): boolean | undefined {
    const listed = this.channels.find((c) => c.name === name);
    if (listed?.generated !== undefined) {
      return listed.generated;
    }
    const base = name.split('/')[0];
    const bases = this.channels.filter((c) => c.generated).map((c) => c.name.split('/')[0]);
    if (bases.includes(base)) {
      return true;
    }
    return this.channels.length ? false : undefined;
  }

  private renderChannels(): void {
    const filter = this.filterEl.value.trim().toLowerCase();
    const known = new Map(this.channels.map((c) => [c.name, c]));
    for (const name of this.selected) {
      if (!known.has(name)) {
        known.set(name, { name });
      }
    }
    const all = [...known.values()].sort((a, b) => a.name.localeCompare(b.name));
    const items: HTMLElement[] = [];
    for (const c of all) {
      if (filter && !c.name.toLowerCase().includes(filter)) {
        continue;
      }
      const on = this.selected.includes(c.name);
      const li = el('li', on ? 'channel selected' : 'channel');
      li.dataset.channel = c.name;
      const label = el('label');
      const box = el('input');
      box.type = 'checkbox';
      box.checked = on;
      box.addEventListener('change', () => this.toggle(c.name, box.checked));
      const name = el('span', 'channel-name');
      name.textContent = c.name;
      name.title = c.name;
      const meta = el('span', 'channel-meta');
      const rate = c.points_per_s;
      const generated = this.isGenerated(c.name);
      meta.textContent = [
        c.source !== undefined ? `source ${c.source}` : generated === undefined ? '' : generated ? 'generated' : 'pushed',
        rate !== undefined && rate > 0 ? `${rate >= 10 ? rate.toFixed(0) : rate.toFixed(1)}/s` : '',
      ]
        .filter(Boolean)
        .join(' · ');
      label.append(box, name);
      li.append(label, meta);
      items.push(li);
    }
    if (!items.length) {
      const li = el('li', 'channel-none');
      li.textContent = this.channelsError ?? (filter ? 'no channel matches' : 'no channels yet');
      items.push(li);
    } else if (this.channelsError) {
      const li = el('li', 'channel-none');
      li.textContent = this.channelsError;
      items.push(li);
    }
    this.listEl.replaceChildren(...items);
  }

  // --- debug hook (used by the browser tests) ------------------------------------------------------

  private installDebugHook(): void {
    const hook = {
      /** A copy of what the page holds for a channel (`times` and `values` only when `full`). */
      channel: (name: string, full = false) => this.snapshot(name, full),
      setWindow: (key: string) => this.setWindow(key),
      setPaused: (p: boolean) => this.setPaused(p),
      select: (names: string[]) => this.select(names),
    };
    const getters: Record<string, () => unknown> = {
      status: () => this.state,
      statusDetail: () => this.statusLog[this.statusLog.length - 1]?.detail ?? '',
      channelsError: () => this.channelsError,
      statusLog: () => this.statusLog.map((s) => ({ ...s })),
      window: () => this.windowKey,
      windowMs: () => this.windowMs,
      paused: () => this.paused,
      selected: () => [...this.selected],
      socketsOpened: () => this.client.socketsOpened,
    };
    for (const [key, get] of Object.entries(getters)) {
      Object.defineProperty(hook, key, { get, enumerable: true });
    }
    (window as unknown as { __livedata: unknown }).__livedata = hook;
  }

  private snapshot(name: string, full: boolean): Record<string, unknown> | null {
    const e = this.live.get(name);
    if (!e) {
      return null;
    }
    const s = e.store;
    const out: Record<string, unknown> = {
      fields: s.fields.map((f) => f.name),
      rows: s.times.length,
      firstTime: s.firstTime ?? null,
      lastTime: s.lastTime ?? null,
      span: s.times.length ? s.times[s.times.length - 1] - s.times[0] : 0,
      messages: s.stats.messages,
      received: s.stats.received,
      position: s.position ?? null,
      draws: e.panel.draws,
      drawnRows: e.panel.drawnRows,
      shownRows: e.panel.shownRows,
      shownSpan: e.panel.shownSpanMs,
      error: e.error ?? null,
      notices: [...e.notices],
    };
    if (full) {
      out.times = [...s.times];
      out.values = Object.fromEntries(s.fields.map((f, i) => [f.name, [...s.columns[i]]]));
    }
    return out;
  }
}

function byId(id: string): HTMLElement {
  const e = document.getElementById(id);
  if (!e) {
    throw new Error(`index.html has no #${id}`);
  }
  return e;
}

function main(): void {
  new LiveView().start();
}

if (document.readyState === 'loading') {
  document.addEventListener('DOMContentLoaded', main);
} else {
  main();
}
