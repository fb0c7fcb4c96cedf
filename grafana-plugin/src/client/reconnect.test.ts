import { ManualTimers } from '../testing/fakes';
import { ReconnectCore } from './reconnect';

function setup(opts: { deadAfterMs?: number } = {}) {
  const timers = new ManualTimers();
  const calls: string[] = [];
  const core = new ReconnectCore(
    { timers, random: () => 1, ...opts },
    { connect: () => calls.push('connect'), lost: (reason) => calls.push(`lost: ${reason}`) }
  );
  return { core, timers, calls };
}

describe('ReconnectCore', () => {
  test('a drop schedules the next attempt with a doubling delay; data starts it over', () => {
    const { core, timers, calls } = setup();
    expect(core.opened()).toBe(false);
    expect(core.dropped('connection lost')).toEqual({ state: 'reconnecting', attempt: 1, delayMs: 250, reason: 'connection lost' });
    expect(core.waiting).toBe(true);
    timers.advance(249);
    expect(calls).toEqual([]);
    timers.advance(1);
    expect(calls).toEqual(['connect']);
    expect(core.waiting).toBe(false);
    expect(core.dropped('x').delayMs).toBe(500);
    expect(core.dropped('x').delayMs).toBe(1000);
    core.progress();
    expect(core.dropped('x')).toMatchObject({ attempt: 1, delayMs: 250 });
    // Only one attempt is ever scheduled.
    timers.advance(10_000);
    expect(calls).toEqual(['connect', 'connect']);
  });

  test('the connection after a drop resumes; the first one does not', () => {
    const { core, timers } = setup();
    expect(core.opened()).toBe(false);
    core.dropped('x');
    timers.advance(250);
    expect(core.opened()).toBe(true);
    expect(core.opened()).toBe(false);
  });

  test('the dead time is two heartbeats and 2 s, re-armed by every message', () => {
    const { core, timers, calls } = setup();
    core.opened();
    core.hello(1000);
    timers.advance(3999);
    core.alive();
    timers.advance(3999);
    expect(calls).toEqual([]);
    timers.advance(1);
    expect(calls).toEqual(['lost: no message within the heartbeat interval']);
  });

  test('deadAfterMs overrides it; a zero heartbeat keeps the last one', () => {
    const { core, timers, calls } = setup({ deadAfterMs: 100 });
    core.opened();
    core.hello(0);
    timers.advance(100);
    expect(calls).toHaveLength(1);
    const other = setup();
    other.core.hello(0);
    other.timers.advance(31_999);
    expect(other.calls).toEqual([]);
    other.timers.advance(1);
    expect(other.calls).toHaveLength(1);
  });

  test('stop leaves no timer and starts the backoff over', () => {
    const { core, timers, calls } = setup();
    core.opened();
    core.dropped('x');
    core.dropped('x');
    core.stop();
    expect(timers.pending()).toBe(0);
    expect(core.waiting).toBe(false);
    timers.advance(60_000);
    expect(calls).toEqual([]);
    // The next connection is a fresh start, not a resume, and its backoff starts over.
    expect(core.opened()).toBe(false);
    expect(core.dropped('x').delayMs).toBe(250);
  });
});
