import { subscribeMessage } from './protocol';
import { resumeRequest } from './resume';

describe('resuming a subscription that asked for buckets', () => {
  const req = { channel: 'c', from: 'now-1h', max_points: 900, resolution_ms: 20 };

  test('before any data: the request as made', () => {
    expect(resumeRequest(req, undefined, undefined)).toBe(req);
    expect(resumeRequest(req, 'p1', undefined)).toBe(req);
  });

  test('after buckets: the width they have, whatever the range has become; the range for a lost position', () => {
    const again = resumeRequest(req, 'p1', 5000);
    expect(again).toEqual({ channel: 'c', from: 'now-1h', resolution_ms: 5000 });
    expect(subscribeMessage('A', again, 'p1')).toEqual({
      type: 'subscribe', id: 'A', channel: 'c', since: 'p1', from: 'now-1h', resolution_ms: 5000,
    });
  });

  test('after raw points: raw points again, and since alone', () => {
    const again = resumeRequest(req, 'p1', 0);
    expect(again).toEqual({ channel: 'c', from: 'now-1h' });
    expect(subscribeMessage('A', again, 'p1')).toEqual({ type: 'subscribe', id: 'A', channel: 'c', since: 'p1' });
  });
});
