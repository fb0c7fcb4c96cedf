import { checkServerMessage, parseChannelList, parseServerMessage } from './parse';
import { subscribeMessage } from './protocol';
import { streamUrl } from './url';

const frame = { schema: { fields: [{ name: 'time', type: 'time' }, { name: 'v', type: 'number', labels: { host: 'a' } }] }, data: { values: [[1, 2], [3, 4]] } };

describe('parseServerMessage', () => {
  test.each([
    { type: 'hello', version: '0.1.0', time: 1, heartbeat_ms: 15000 },
    { type: 'data', id: 'A', position: 'e:1', frame },
    { type: 'data', id: 'A', position: null, late: true, frame: { data: { values: [] } } },
    { type: 'data', id: 'A', frame: { data: { values: [[1], [null]], entities: [null, { Undef: [0] }] } } },
    { type: 'complete', id: 'A' },
    { type: 'error', message: 'bad publish', ack: 'p1' },
    { type: 'error', id: 'A', message: "unknown param 'colour'" },
    { type: 'notice', id: 'A', level: 'warning', text: '3 points lost', lost: 3 },
    { type: 'notice', level: 'info', text: 'hi' },
    { type: 'heartbeat', time: 5 },
    { type: 'pong', time: 5 },
    { type: 'ack', ack: 'p1' },
    { type: 'auth', ok: true },
  ])('accepts $type', (m) => {
    const p = parseServerMessage(JSON.stringify(m));
    expect(p).toEqual({ ok: true, msg: m });
  });

  test.each<[string, unknown, RegExp]>([
    ['not JSON', '{"type": "data",', /not JSON/],
    ['a list', [1, 2], /without a "type"/],
    ['null', null, /without a "type"/],
    ['a number type', { type: 5 }, /without a "type"/],
    ['hello without a heartbeat', { type: 'hello', version: 'x', time: 1 }, /"hello" message without a number "heartbeat_ms"/],
    ['data without a frame', { type: 'data', id: 'A' }, /without a "frame" object/],
    ['data without an id', { type: 'data', frame }, /without a string "id"/],
    ['data with a numeric position', { type: 'data', id: 'A', position: 7, frame }, /"position" is not a string/],
    ['data with late as a string', { type: 'data', id: 'A', late: 'yes', frame }, /"late" is not a boolean/],
    ['a schema without fields', { type: 'data', id: 'A', frame: { schema: {} } }, /no "fields" list/],
    ['a field without a name', { type: 'data', id: 'A', frame: { schema: { fields: [{ type: 'time' }] } } }, /schema field 0 has no "name"/],
    ['labels that are not strings', { type: 'data', id: 'A', frame: { schema: { fields: [{ name: 'v', labels: { a: 1 } }] } } }, /labels/],
    ['values that are not a list', { type: 'data', id: 'A', frame: { data: { values: 'x' } } }, /no "values" list/],
    ['a column that is not a list', { type: 'data', id: 'A', frame: { data: { values: [[1], 2] } } }, /column 1 is not a list/],
    ['ragged columns', { type: 'data', id: 'A', frame: { data: { values: [[1, 2], [3]] } } }, /differ in length \(2 and 1\)/],
    ['bad entities', { type: 'data', id: 'A', frame: { data: { values: [[1]], entities: [5] } } }, /entities/],
    ['error without a message', { type: 'error', id: 'A' }, /without a string "message"/],
    ['notice with a string lost', { type: 'notice', level: 'warning', text: 'x', lost: '3' }, /"lost" is not a number/],
    ['complete with a numeric id', { type: 'complete', id: 1 }, /without a string "id"/],
  ])('refuses %s, saying why', (_what, m, why) => {
    const p = typeof m === 'string' ? parseServerMessage(m) : checkServerMessage(m);
    expect(p.ok).toBe(false);
    if (!p.ok) {
      expect(p.error).toMatch(why);
      expect(p.error).toMatch(/is the URL a livedata server/);
      expect(p.unknownType).toBe(false);
    }
  });

  test('keeps the id of a malformed message, so its subscription can be told', () => {
    expect(checkServerMessage({ type: 'data', id: 's3', frame: 1 })).toMatchObject({ ok: false, id: 's3' });
  });

  test('an unknown type is reported as such (a newer server), with its id', () => {
    const p = checkServerMessage({ type: 'sparkle', id: 's1' });
    expect(p).toMatchObject({ ok: false, unknownType: true, id: 's1' });
    expect(!p.ok && p.error).toMatch(/unknown type "sparkle"; it was ignored/);
  });

  test('a huge message is quoted short', () => {
    const p = parseServerMessage(JSON.stringify({ type: 'data', id: 'A', frame: 'x'.repeat(100_000) }));
    expect(!p.ok && p.error.length).toBeLessThan(400);
  });
});

describe('parseChannelList', () => {
  test('keeps the documented facts with their types, drops the rest', () => {
    const list = parseChannelList({
      channels: [
        { name: 'a', schema: [{ name: 'time', type: 'time' }], last_time: null, points_per_s: 2, points: 9, generated: false },
        { name: 'random-walk', generated: true, params: { series: 1, spread: 1, bad: { x: 1 } }, points_per_s: 'fast' },
        { name: 'plant/line1', generated: false, source: 'plant' },
        { name: 'x', source: 7 },
      ],
    });
    expect(list).toEqual([
      { name: 'a', schema: [{ name: 'time', type: 'time' }], last_time: null, points_per_s: 2, points: 9, generated: false },
      { name: 'random-walk', generated: true, params: { series: 1, spread: 1 } },
      { name: 'plant/line1', generated: false, source: 'plant' },
      { name: 'x' },
    ]);
  });

  test.each([[{}], [{ channels: {} }], [{ channels: [{ schema: [] }] }], ['<html>']])('refuses %j with a sentence', (body) => {
    expect(() => parseChannelList(body)).toThrow(/\/api\/channels.*: is the URL a livedata server/);
  });
});

describe('subscribe message', () => {
  test('since wins over from; empty params and fields are left out', () => {
    const req = { channel: 'c', from: 'now-1m', params: {}, fields: [], interval: 100 };
    expect(subscribeMessage('s1', req)).toEqual({ type: 'subscribe', id: 's1', channel: 'c', from: 'now-1m', interval: 100 });
    expect(subscribeMessage('s1', req, 'p:1')).toEqual({ type: 'subscribe', id: 's1', channel: 'c', since: 'p:1', interval: 100 });
  });

  test('the HTTP stream carries the same keys', () => {
    const m = subscribeMessage('A', { channel: 'random-walk', params: { series: 3 }, fields: ['a', 'b'], to: 5, from: 1 }, 'e:9');
    const url = new URL(streamUrl('http://h:8080/', m));
    expect(url.pathname).toBe('/api/stream');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      channel: 'random-walk',
      id: 'A',
      since: 'e:9',
      to: '5',
      fields: 'a,b',
      series: '3',
    });
  });
});
