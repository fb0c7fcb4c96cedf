import { DataFrame, FieldType, getFieldDisplayName } from '@grafana/data';

import type { FrameFieldSchema } from './client/protocol';
import { FRAME_TYPE, FrameNaming, FrameView, channelName, displayName, frameName, frameNames, publishedName } from './frames';
import { FrameStore } from './store/FrameStore';
import { LiveQuery } from './types';

/** A store fed one schema message (and rows), as the server would send them. */
function store(fields: FrameFieldSchema[], values: unknown[][] = [], entities?: unknown[]): FrameStore {
  const s = new FrameStore({ missing: undefined });
  s.merge({
    frame: {
      schema: { fields: [{ name: 'time', type: 'time' }, ...fields] },
      data: { values: values.length ? values : [[], ...fields.map(() => [])], entities: entities as never },
    },
  });
  return s;
}

const numbered = (n: number): FrameFieldSchema[] => Array.from({ length: n }, (_, i) => ({ name: `series${i}`, type: 'number' }));

/** The server's wire names for a labelled field (core/frames.py `field_key`, `FieldDef.to_json`). */
function labelled(name: string, labels: Record<string, string>): FrameFieldSchema {
  const keys = Object.keys(labels).sort();
  const key = `${name} {${keys.map((k) => `${k}="${labels[k]}"`).join(',')}}`;
  return { name: key, type: 'number', labels, config: { displayNameFromDS: key } };
}

function frameOf(s: FrameStore, naming: Partial<FrameNaming> = {}): DataFrame {
  return new FrameView(s, { channel: 'ch', refId: 'A', ...naming }).frames()[0];
}

function displayNames(frames: DataFrame[]): string[] {
  return frames.flatMap((f) => f.fields.filter((x) => x.type !== FieldType.time).map((x) => getFieldDisplayName(x, f, frames)));
}

describe('alias templates', () => {
  const naming: FrameNaming = { channel: 'telegraf/cpu', refId: 'B' };
  const field = { name: 'usage_user', labels: { host: 'a', cpu: 'cpu0' } };

  test.each([
    ['{{channel}}: {{field}} on {{host}}', 'telegraf/cpu: usage_user on a'],
    ['{{ host }}/{{cpu}}', 'a/cpu0'],
    ['{{__name__}} {{refId}}', 'usage_user B'],
    // An unknown name is written as is, as Grafana's Prometheus and Loki legend formats do.
    ['{{region}} {{host}}', 'region a'],
    ['{{field}}-{{field}}', 'usage_user-usage_user'],
    // Not a template: plain text, which prefixes each of several fields.
    ['no {{ braces', 'no {{ braces usage_user'],
  ])('%s renders %s', (alias, expected) => {
    expect(displayName({ ...naming, alias }, field, 3)).toBe(expected);
  });

  test('a label named like a built-in wins (labels are the series identity)', () => {
    expect(displayName({ ...naming, alias: '{{field}}' }, { name: 'v', labels: { field: 'north' } }, 1)).toBe('north');
  });

  test('plain text names the only value field, prefixes several; empty or blank: none', () => {
    expect(displayName({ ...naming, alias: 'CPU' }, field, 1)).toBe('CPU');
    expect(displayName({ ...naming, alias: 'CPU' }, field, 2)).toBe('CPU usage_user');
    expect(displayName({ ...naming, alias: '' }, field, 1)).toBeUndefined();
    expect(displayName({ ...naming, alias: '   ' }, field, 1)).toBeUndefined();
    expect(displayName(naming, field, 1)).toBeUndefined();
  });

  test('the frame is named after the channel, or a plain alias; a template leaves the channel', () => {
    expect(frameName(naming)).toBe('telegraf/cpu');
    expect(frameName({ ...naming, alias: 'CPU' })).toBe('CPU');
    expect(frameName({ ...naming, alias: '{{host}}' })).toBe('telegraf/cpu');
    expect(frameName({ ...naming, alias: 'CPU', name: 'CPU (B)' })).toBe('CPU (B)');
  });

  test('channel names follow the server: params sorted, empty ones left out', () => {
    expect(channelName({ channel: 'random-walk', params: {} })).toBe('random-walk');
    expect(channelName({ channel: 'random-walk', params: { spread: 2, series: 3 } })).toBe('random-walk/series=3/spread=2');
    expect(channelName({ channel: 'sine', params: { period: '' } })).toBe('sine');
  });

  test('the published name is the wire name without its label suffix, and only that', () => {
    expect(publishedName(labelled('usage', { host: 'a', cpu: '0' }))).toBe('usage');
    expect(publishedName({ name: 'usage', labels: { host: 'a' } })).toBe('usage');
    expect(publishedName({ name: 'x {host="b"}', labels: { host: 'a' } })).toBe('x {host="b"}');
    expect(publishedName({ name: 'temp', labels: {} })).toBe('temp');
    expect(publishedName({ name: '{a="1"}', labels: { a: '1' } })).toBe('{a="1"}');
  });
});

describe('frame shapes', () => {
  test('a query is one wide frame: named, refId set, typed for the data plane', () => {
    const f = frameOf(store(numbered(2), [[1, 2], [1, 2], [3, 4]]), { channel: 'random-walk/series=2', refId: 'C' });
    expect(f.name).toBe('random-walk/series=2');
    expect(f.refId).toBe('C');
    expect(f.meta?.type).toBe(FRAME_TYPE);
    expect(f.meta?.type).toBe('timeseries-wide');
    expect(f.meta?.typeVersion).toEqual([0, 1]);
    expect(f.fields.map((x) => [x.name, x.type])).toEqual([
      ['time', FieldType.time],
      ['series0', FieldType.number],
      ['series1', FieldType.number],
    ]);
  });

  test('labelled fields carry their published name and labels; the server display name is dropped', () => {
    const f = frameOf(store([labelled('usage', { host: 'a' }), labelled('usage', { host: 'b' })]));
    expect(f.fields.slice(1).map((x) => [x.name, x.labels, x.config.displayNameFromDS])).toEqual([
      ['usage', { host: 'a' }, undefined],
      ['usage', { host: 'b' }, undefined],
    ]);
    expect(displayNames([f])).toEqual(['usage a', 'usage b']);
  });

  test('interleaved labelled rows: a missing cell is undefined, never null, whatever the wire said', () => {
    // host=a at 1 and 3, host=b at 2 and 4; the older wire's nulls and the entities' Undef alike.
    const s = store(
      [labelled('usage', { host: 'a' }), labelled('usage', { host: 'b' })],
      [
        [1, 2, 3, 4],
        [10, null, 11, null],
        [null, 20, 0, 21],
      ],
      [null, { Undef: [1, 3] }, { Undef: [0, 2] }]
    );
    const f = frameOf(s);
    expect(f.fields[1].values).toEqual([10, undefined, 11, undefined]);
    expect(f.fields[2].values).toEqual([undefined, 20, undefined, 21]);
    for (const field of f.fields) {
      expect(field.values.filter((v) => v === null)).toEqual([]);
    }
    // A field added later: its earlier rows are undefined too.
    s.merge({
      frame: {
        schema: { fields: [{ name: 'time', type: 'time' }, labelled('usage', { host: 'c' })] },
        data: { values: [[5], [30]] },
      },
    });
    const g = frameOf(s);
    expect(g.fields[3].values).toEqual([undefined, undefined, undefined, undefined, 30]);
    expect(g.fields[1].values).toEqual([10, undefined, 11, undefined, undefined]);
  });

  test('three queries of the issue: every display name is unique and says which query', () => {
    const targets: LiveQuery[] = [
      { refId: 'A', channel: 'random-walk', params: { series: 3 }, fields: [] },
      { refId: 'B', channel: 'sine', params: { series: 2 }, fields: [] },
      { refId: 'C', channel: 'random-walk', params: {}, fields: [] },
    ];
    const names = frameNames(targets);
    const stores = [store(numbered(3)), store(numbered(2)), store(numbered(1))];
    const frames = stores.map((s, i) =>
      frameOf(s, { channel: channelName(targets[i]), refId: targets[i].refId, name: names[i] })
    );
    const shown = displayNames(frames);
    expect(shown).toEqual([
      'random-walk/series=3 series0',
      'random-walk/series=3 series1',
      'random-walk/series=3 series2',
      'sine/series=2 series0',
      'sine/series=2 series1',
      'random-walk series0',
    ]);
    expect(new Set(shown).size).toBe(shown.length);
    // One query alone: Grafana leaves the frame name out.
    expect(displayNames([frames[1]])).toEqual(['series0', 'series1']);
  });

  test('two queries of one channel get their refId in the frame name, so names stay unique', () => {
    const targets: LiveQuery[] = [
      { refId: 'A', channel: 'random-walk', params: {}, fields: [] },
      { refId: 'B', channel: 'random-walk', params: {}, fields: [] },
      { refId: 'C', channel: 'sine', params: {}, fields: [] },
      { refId: 'D', channel: 'sine', params: {}, fields: [], alias: 'wave' },
    ];
    const names = frameNames(targets);
    expect(names).toEqual(['random-walk (A)', 'random-walk (B)', 'sine', 'wave']);
    const frames = names.map((name, i) => frameOf(store(numbered(1)), { channel: 'x', refId: targets[i].refId, name }));
    const shown = displayNames(frames);
    expect(new Set(shown).size).toBe(4);
  });

  test('an alias template names each labelled series through displayNameFromDS', () => {
    const f = frameOf(store([labelled('usage', { host: 'a' }), labelled('usage', { host: 'b' }), { name: 'load', type: 'number' }]), {
      channel: 'telegraf/cpu',
      alias: '{{channel}} {{field}} {{host}}',
    });
    expect(f.fields.slice(1).map((x) => x.config.displayNameFromDS)).toEqual([
      'telegraf/cpu usage a',
      'telegraf/cpu usage b',
      'telegraf/cpu load host',
    ]);
    expect(displayNames([f])).toEqual(['telegraf/cpu usage a', 'telegraf/cpu usage b', 'telegraf/cpu load host']);
  });

  test('names are worked out when the fields change, not on every packet', () => {
    const s = store(numbered(1), [[1], [1]]);
    const view = new FrameView(s, { channel: 'c', refId: 'A', alias: 'x' });
    const f = view.update();
    expect(f.packetInfo.schemaChanged).toBe(true);
    const config = f.fields[1].config;
    s.merge({ frame: { data: { values: [[2], [2]] } } });
    view.update();
    expect(f.packetInfo.schemaChanged).toBe(false);
    expect(f.fields[1].config).toBe(config);
    s.merge({ frame: { schema: { fields: [{ name: 'time', type: 'time' }, ...numbered(2)] }, data: { values: [[3], [3], [4]] } } });
    view.update();
    expect(f.packetInfo.schemaChanged).toBe(true);
    expect(f.fields.slice(1).map((x) => x.config.displayNameFromDS)).toEqual(['x series0', 'x series1']);
  });
});
