/** Late points (`"late": true`) are inserted at their place in time, over both carriers. */
jest.mock('@grafana/runtime', () => jest.requireActual('../testing/runtime'));

import { DataSource } from '../datasource';
import {
  collect,
  instanceSettings,
  isSorted,
  makeRequest,
  push,
  recordingWebSocket,
  serverUrl,
  uniqueChannel,
  waitFor,
} from '../testing/harness';

describe.each(['ws', 'http'] as const)('late points over %s', (transport) => {
  test('a point older than the newest is inserted in time order', async () => {
    const rec = recordingWebSocket();
    const ds = new DataSource(instanceSettings({ url: serverUrl(), transport, throttleMs: 0 }), {
      WebSocket: rec.Ctor,
      client: { idleCloseMs: 0 },
    });
    const channel = uniqueChannel(`late-${transport}`);
    const t0 = Date.now() - 20_000;
    await push(serverUrl(), channel, [
      { time: t0, v: 1 },
      { time: t0 + 1000, v: 2 },
      { time: t0 + 2000, v: 3 },
    ]);
    const c = collect(ds.query(makeRequest([{ channel, interval: 0 }], { from: 'now-1m', to: 'now' })));
    try {
      await waitFor(() => c.last()?.length === 3, 'the three history points');
      await push(serverUrl(), channel, [{ time: t0 + 3000, v: 4 }]);
      await waitFor(() => c.last()?.length === 4, 'a live point');
      await push(serverUrl(), channel, [{ time: t0 + 500, v: 1.5 }]);
      const s = await waitFor(() => c.snapshots.find((x) => x.length === 5), 'the late point');
      expect(s.times).toEqual([t0, t0 + 500, t0 + 1000, t0 + 2000, t0 + 3000]);
      const frame = c.responses[c.responses.length - 1].data[0];
      expect(frame.fields[1].values).toEqual([1, 1.5, 2, 3, 4]);
      if (transport === 'ws') {
        expect(rec.sockets[0].received.some((m) => m.type === 'data' && m.late === true)).toBe(true);
      }
      // More on-time points still append after it.
      await push(serverUrl(), channel, [{ time: t0 + 4000, v: 5 }]);
      const after = await waitFor(() => c.snapshots.find((x) => x.length === 6), 'on-time point after the late one');
      expect(isSorted(after.times)).toBe(true);
    } finally {
      c.unsubscribe();
    }
  });
});
