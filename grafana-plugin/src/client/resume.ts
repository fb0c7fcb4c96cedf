import { nextPosition } from './position';
import {
  DataMessage,
  StreamStatus,
  SubscribeMessage,
  SubscribeRequest,
  SubscriptionHandlers,
  frameLastTime,
  frameRows,
  subscribeMessage,
} from './protocol';
import { TimerHandle, Timers } from './timers';

/**
 * Per-subscription bookkeeping shared by both carriers: the last position (sent back as `since`
 * on reconnect, see position.ts) and the "resumed, N points recovered" report after a reconnect.
 *
 * A resumed subscription has caught up when a data message reaches the server time of the new
 * connection's `hello`, or when nothing more arrived for `settleMs` (a quiet pushed channel).
 */
export class SubState {
  position?: string;
  /** The bucket width of an aggregated subscription; 0 once raw points came; unknown before. */
  bucketMs?: number;
  private timeIndex = 0;
  private resuming?: { recovered: number; since?: string; catchUp: number; timer?: TimerHandle };

  constructor(
    readonly req: SubscribeRequest,
    readonly handlers: SubscriptionHandlers,
    private readonly timers: Timers,
    private readonly settleMs: number
  ) {}

  /** The `subscribe` message to send now: after the last position received, else as requested. */
  subscribeMessage(id: string): SubscribeMessage {
    return subscribeMessage(id, resumeRequest(this.req, this.position, this.bucketMs), this.position ?? this.req.since);
  }

  status(status: StreamStatus): void {
    this.handlers.onStatus?.(status);
  }

  /** Called when the subscription is sent again on a new connection. */
  startResume(catchUpTime: number): void {
    this.cancelResume();
    this.resuming = { recovered: 0, since: this.position, catchUp: catchUpTime };
    this.armSettle();
  }

  /** A new connection's hello: its server time is the catch-up mark. */
  setCatchUp(time: number): void {
    if (this.resuming) {
      this.resuming.catchUp = time;
    }
  }

  data(msg: DataMessage): void {
    const schema = msg.frame?.schema;
    if (schema) {
      const idx = schema.fields.findIndex((f) => f.type === 'time');
      this.timeIndex = idx >= 0 ? idx : 0;
    }
    this.position = nextPosition(this.position, msg);
    this.bucketMs = msg.bucket_ms ?? 0;
    this.handlers.onData(msg);
    const r = this.resuming;
    if (!r) {
      return;
    }
    r.recovered += frameRows(msg.frame);
    const last = frameLastTime(msg.frame, this.timeIndex);
    if (last !== undefined && last >= r.catchUp) {
      this.finishResume();
    } else {
      this.armSettle();
    }
  }

  cancelResume(): void {
    if (this.resuming?.timer !== undefined) {
      this.timers.clearTimeout(this.resuming.timer);
    }
    this.resuming = undefined;
  }

  private armSettle(): void {
    const r = this.resuming;
    if (!r) {
      return;
    }
    if (r.timer !== undefined) {
      this.timers.clearTimeout(r.timer);
    }
    r.timer = this.timers.setTimeout(() => this.finishResume(), this.settleMs);
  }

  private finishResume(): void {
    const r = this.resuming;
    if (!r) {
      return;
    }
    this.cancelResume();
    this.status({ state: 'resumed', recovered: r.recovered, since: r.since });
  }
}

/**
 * The request to resume after `position`: buckets keep the width they had (whatever the range has
 * become since), and a subscription that got raw points asks for raw points again.
 */
export function resumeRequest(req: SubscribeRequest, position: string | undefined, bucketMs: number | undefined): SubscribeRequest {
  if (!position || bucketMs === undefined || (req.max_points === undefined && req.resolution_ms === undefined)) {
    return req;
  }
  const out: SubscribeRequest = { ...req };
  delete out.max_points;
  delete out.resolution_ms;
  if (bucketMs > 0) {
    out.resolution_ms = bucketMs;
  }
  return out;
}
