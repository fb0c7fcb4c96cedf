/**
 * The plugin under Grafana's dashboard engine: an `EmbeddedScene` (`@grafana/scenes`) with a
 * `SceneTimeRange`, a time picker, a `SceneRefreshPicker`, a `SceneQueryRunner` and a `VizPanel`
 * drawing @grafana/ui's time series graph. The BUILT plugin (dist/module.js) is loaded through a
 * tiny AMD loader, as Grafana's SystemJS loads it, with the real `@grafana/data`, `runtime`, `ui`,
 * `react` and `rxjs` of this bundle. The page plays Grafana's shell: a data source service, a
 * template service, a `runRequest` (runRequest.ts) and a plugin import service.
 * tests/browser/test_scenes.py drives it through `window.scenes`.
 */
import './boot';

import * as grafanaData from '@grafana/data';
import * as runtime from '@grafana/runtime';
import {
  EmbeddedScene,
  SceneFlexItem,
  SceneFlexLayout,
  SceneQueryRunner,
  SceneRefreshPicker,
  SceneTimePicker,
  SceneTimeRange,
  VizPanel,
  sceneUtils,
} from '@grafana/scenes';
import * as ui from '@grafana/ui';
import * as emotionCss from '@emotion/css';
import * as emotionReact from '@emotion/react';
import lodash from 'lodash';
import React from 'react';
import * as ReactDom from 'react-dom';
import { createRoot } from 'react-dom/client';
import * as rxjs from 'rxjs';
import * as rxjsOperators from 'rxjs/operators';

import { installAmd } from '../harness/amd';
import { panelPlugin, renders } from './panel';
import { registerStandardOptions } from './registry';
import { runRequest } from './runRequest';

type Json = Record<string, unknown>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDataSource = any;

const PANEL_ID = 'livedata-test-timeseries';
const DS_UID = 'livedata-scenes';
const DS_TYPE = 'livedata-streaming-datasource';

// --- WebSocket recording: what the data source sends -------------------------------------------

const sent: Json[] = [];
const NativeWebSocket = window.WebSocket;
class RecordingWebSocket extends NativeWebSocket {
  override send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    try {
      sent.push({ ...(JSON.parse(String(data)) as Json), at: Math.round(performance.now()) });
    } catch {
      // not JSON
    }
    super.send(data);
  }
}
window.WebSocket = RecordingWebSocket;

// --- Grafana's shell -----------------------------------------------------------------------------

let dataSource: AnyDataSource = null;

function settings(url: string, jsonData: Json) {
  return {
    id: 1,
    uid: DS_UID,
    type: DS_TYPE,
    name: 'livedata',
    access: 'direct',
    readOnly: false,
    isDefault: true,
    meta: { id: DS_TYPE, name: 'livedata', type: 'datasource', info: {}, module: 'plugin/module.js', baseUrl: 'plugin' },
    jsonData: { url, transport: 'ws', access: 'direct', throttleMs: 100, maxPoints: 100_000, ...jsonData },
  };
}

runtime.setDataSourceSrv({
  get: async () => {
    if (!dataSource) {
      throw new Error('no data source yet');
    }
    return dataSource;
  },
  getInstanceSettings: () => dataSource?.instanceSettings,
  getList: () => (dataSource ? [dataSource.instanceSettings] : []),
  reload: async () => undefined,
  registerRuntimeDataSource: () => undefined,
} as unknown as runtime.DataSourceSrv);

runtime.setTemplateSrv({
  getVariables: () => [],
  replace: (target?: string) => target ?? '',
  containsTemplate: () => false,
  updateTimeRange: () => undefined,
} as unknown as runtime.TemplateSrv);

runtime.setRunRequest(runRequest);

// The app's event bus: panels publish and follow hover events on it.
runtime.setAppEvents(new grafanaData.EventBusSrv() as unknown as Parameters<typeof runtime.setAppEvents>[0]);

runtime.setPluginImportUtils({
  importPanelPlugin: (id: string) => Promise.reject(new Error(`no panel plugin ${id} on this page`)),
  getPanelPluginFromCache: () => undefined,
});

registerStandardOptions();
sceneUtils.registerRuntimePanelPlugin({ pluginId: PANEL_ID, plugin: panelPlugin });

// --- the plugin ----------------------------------------------------------------------------------

const load = installAmd({
  '@grafana/data': grafanaData,
  '@grafana/runtime': runtime,
  '@grafana/ui': ui,
  '@grafana/schema': {},
  react: React,
  'react-dom': ReactDom,
  rxjs,
  'rxjs/operators': rxjsOperators,
  lodash,
  '@emotion/css': emotionCss,
  '@emotion/react': emotionReact,
});

type DataSourceCtor = new (settings: unknown) => AnyDataSource;
let DataSourceClass: DataSourceCtor | undefined;
const state = { loaded: false, error: null as string | null };

const ready = load('plugin/module.js')
  .then((exports) => {
    const plugin = (exports as { plugin?: { DataSourceClass?: DataSourceCtor } }).plugin;
    if (!plugin?.DataSourceClass) {
      throw new Error('module.js did not export a DataSourcePlugin as `plugin`');
    }
    DataSourceClass = plugin.DataSourceClass;
    state.loaded = true;
  })
  .catch((err: unknown) => {
    state.error = err instanceof Error ? err.message : String(err);
  });

// --- the scene -----------------------------------------------------------------------------------

interface StartOptions {
  url: string;
  queries: Json[];
  from?: string;
  to?: string;
  throttleMs?: number;
  title?: string;
  height?: number;
}

const theme = grafanaData.createTheme({ colors: { mode: 'dark' } });
let scene: EmbeddedScene | null = null;
let timeRange: SceneTimeRange | null = null;
let refreshPicker: SceneRefreshPicker | null = null;

function start(opts: StartOptions): void {
  if (!DataSourceClass) {
    throw new Error(`the plugin is not loaded: ${state.error ?? 'still loading'}`);
  }
  dataSource = new DataSourceClass(settings(opts.url, { throttleMs: opts.throttleMs ?? 100 }));
  const queries = opts.queries.map((q, i) => ({
    refId: String.fromCharCode(65 + i),
    datasource: { uid: DS_UID, type: DS_TYPE },
    params: {},
    fields: [],
    ...q,
  }));
  timeRange = new SceneTimeRange({ from: opts.from ?? 'now-1m', to: opts.to ?? 'now' });
  refreshPicker = new SceneRefreshPicker({ intervals: ['5s', '1m'], refresh: '' });
  const runner = new SceneQueryRunner({ datasource: { uid: DS_UID, type: DS_TYPE }, queries, maxDataPoints: 1000 });
  scene = new EmbeddedScene({
    $timeRange: timeRange,
    controls: [new SceneTimePicker({}), refreshPicker],
    body: new SceneFlexLayout({
      direction: 'column',
      children: [
        new SceneFlexItem({
          height: opts.height ?? 420,
          body: new VizPanel({ pluginId: PANEL_ID, title: opts.title ?? 'livedata', $data: runner }),
        }),
      ],
    }),
  });
  const root = createRoot(document.getElementById('app')!);
  const Scene = scene.Component;
  root.render(
    <ui.ThemeContext.Provider value={theme}>
      <Scene model={scene} />
    </ui.ThemeContext.Provider>
  );
}

const api = {
  ready,
  get loaded() {
    return state.loaded;
  },
  get error() {
    return state.error;
  },
  start,
  /** A range change as the time picker makes it. */
  setRange(from: string, to = 'now'): void {
    const range = grafanaData.rangeUtil.convertRawToRange({ from, to });
    timeRange!.onTimeRangeChange(range);
  },
  /** What the refresh button does. */
  refresh(): void {
    refreshPicker!.onRefresh();
  },
  renders(from = 0) {
    return renders.slice(from);
  },
  renderCount(): number {
    return renders.length;
  },
  sent(type?: string): Json[] {
    return sent.filter((m) => !type || m.type === type);
  },
  /** The series names the legend shows (its e2e selectors). */
  legend(): string[] {
    const prefix = 'data-testid VizLegend series ';
    return [...document.querySelectorAll(`[data-testid^="${prefix}"]`)].map(
      (el) => el.getAttribute('data-testid')!.slice(prefix.length)
    );
  },
};

(window as unknown as { scenes: typeof api }).scenes = api;
