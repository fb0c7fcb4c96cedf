import { Backoff } from './backoff';
import type { StreamStatus } from './protocol';
import { TimerHandle, Timers } from './timers';

export interface ReconnectOptions {
  timers: Timers;
  random?: () => number;
  /** First reconnect delay, ms (default 250); doubles per attempt. */
  backoffBaseMs?: number;
  /** Cap of the reconnect delay, ms (default 10 000). */
  backoffCapMs?: number;
  /** Declare the connection dead after this long without any message (default 2×heartbeat + 2 s). */
  deadAfterMs?: number;
}

/** What a carrier does when the core decides. */
export interface Connector {
  /** Time for the next attempt: open a connection (if there is still something to carry). */
  connect(): void;
  /** Nothing arrived within the dead time: close the connection and report it dropped. */
  lost(reason: string): void;
}

export type ReconnectingStatus = Extract<StreamStatus, { state: 'reconnecting' }>;

/**
 * The connection lifecycle both carriers share (the WebSocket one for all its subscriptions, the
 * NDJSON stream one per subscription): exponential backoff with jitter between attempts, reset by
 * data that arrives; the dead timer (no message, heartbeat included, for two heartbeats: give the
 * connection up); and whether the next connection resumes a dropped one, so its subscriptions send
 * `since` (resume.ts keeps the position) and report "resumed".
 */
export class ReconnectCore {
  private readonly timers: Timers;
  private readonly backoff: Backoff;
  private retryTimer: TimerHandle | null = null;
  private deadTimer: TimerHandle | null = null;
  private heartbeatMs = 15_000;
  private resuming = false;

  constructor(
    private readonly opts: ReconnectOptions,
    private readonly connector: Connector
  ) {
    this.timers = opts.timers;
    this.backoff = new Backoff({ baseMs: opts.backoffBaseMs, capMs: opts.backoffCapMs, random: opts.random });
  }

  /** A reconnect attempt is scheduled. */
  get waiting(): boolean {
    return this.retryTimer !== null;
  }

  /** A connection is up. Returns true when it replaces one that dropped: its subscriptions resume. */
  opened(): boolean {
    const resumed = this.resuming;
    this.resuming = false;
    this.alive();
    return resumed;
  }

  /** The server's `hello`: its heartbeat interval sets the dead time. */
  hello(heartbeatMs: number): void {
    if (heartbeatMs > 0) {
      this.heartbeatMs = heartbeatMs;
    }
    this.alive();
  }

  /** A message arrived: the connection is alive. */
  alive(): void {
    this.clearDead();
    const ms = this.opts.deadAfterMs ?? this.heartbeatMs * 2 + 2000;
    this.deadTimer = this.timers.setTimeout(() => {
      this.deadTimer = null;
      this.connector.lost('no message within the heartbeat interval');
    }, ms);
  }

  /** Data arrived: the connection works, so the next drop starts the backoff over. */
  progress(): void {
    this.backoff.reset();
  }

  /** The connection dropped: the next attempt is scheduled; returns the status to report. */
  dropped(reason: string): ReconnectingStatus {
    this.clearDead();
    this.clearRetry();
    const delayMs = this.backoff.next();
    this.resuming = true;
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      this.connector.connect();
    }, delayMs);
    return { state: 'reconnecting', attempt: this.backoff.attempt, delayMs, reason };
  }

  /** The connection is closed on purpose (or dropped with nothing left to carry): no timer is left. */
  stop(): void {
    this.clearDead();
    this.clearRetry();
    this.resuming = false;
    this.backoff.reset();
  }

  private clearDead(): void {
    if (this.deadTimer !== null) {
      this.timers.clearTimeout(this.deadTimer);
      this.deadTimer = null;
    }
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) {
      this.timers.clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
  }
}
