/** Exponential backoff with jitter: base·2^attempt, capped, then scaled by a random factor in [0.5, 1]. */
export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
  random?: () => number;
}

export class Backoff {
  attempt = 0;
  private readonly baseMs: number;
  private readonly capMs: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? 250;
    this.capMs = opts.capMs ?? 10_000;
    this.random = opts.random ?? Math.random;
  }

  /** Delay before the next attempt; counts the attempt. */
  next(): number {
    const exp = Math.min(this.capMs, this.baseMs * Math.pow(2, this.attempt));
    this.attempt++;
    return Math.round(exp * (0.5 + 0.5 * this.random()));
  }

  reset(): void {
    this.attempt = 0;
  }
}
