// The demo dashboard and plugin.json as Grafana 11–13 read them.
import fs from 'fs';
import path from 'path';
import { defaultDashboard } from '@grafana/schema';

import demo from './demo.json';
import plugin from '../plugin.json';

const KNOWN_PANELS = new Set(['gauge', 'timeseries', 'stat', 'table', 'barchart']);

describe('demo dashboard', () => {
  it('uses a schema version Grafana 11 to 13 import (they migrate older ones forward)', () => {
    // Grafana 11.0 writes schemaVersion 39; 13 still imports and migrates it.
    expect(demo.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(demo.schemaVersion).toBeLessThanOrEqual(41);
    expect(demo.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    expect(demo.title).toBeTruthy();
  });

  it('has only keys the dashboard schema knows', () => {
    const known = new Set([...Object.keys(defaultDashboard), 'uid', 'title', 'panels', 'templating', 'time',
      'timepicker', 'refresh', 'annotations', 'links', 'tags', 'version', 'id', 'description', 'weekStart',
      'liveNow']);
    for (const key of Object.keys(demo)) {
      expect(known).toContain(key);
    }
  });

  it('lays out panels on the 24-column grid with unique ids', () => {
    const ids = new Set<number>();
    for (const panel of demo.panels) {
      expect(KNOWN_PANELS).toContain(panel.type);
      expect(ids.has(panel.id)).toBe(false);
      ids.add(panel.id);
      const { x, y, w, h } = panel.gridPos;
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x + w).toBeLessThanOrEqual(24);
      expect(y).toBeGreaterThanOrEqual(0);
      expect(h).toBeGreaterThan(0);
    }
  });

  it('queries livedata through the datasource variable, with valid targets', () => {
    const variable = demo.templating.list.find((v) => v.type === 'datasource');
    expect(variable?.query).toBe(plugin.id);
    const channels = new Set<string>();
    for (const panel of demo.panels) {
      expect(panel.datasource).toEqual({ type: plugin.id, uid: `\${${variable?.name}}` });
      const refIds = new Set<string>();
      for (const target of panel.targets) {
        expect(target.datasource.type).toBe(plugin.id);
        expect(refIds.has(target.refId)).toBe(false);
        refIds.add(target.refId);
        expect(target.channel).toMatch(/^[A-Za-z0-9_\-./=]{1,160}$/);
        channels.add(target.channel);
      }
    }
    // the original gauge + time series on random-walk, several channels, and a pushed channel
    expect(demo.panels.some((p) => p.type === 'gauge' && p.targets[0].channel === 'random-walk')).toBe(true);
    expect(demo.panels.some((p) => p.targets.length >= 3)).toBe(true);
    expect(channels).toContain('demo/sensors');
  });
});

describe('plugin.json', () => {
  it('is a streaming datasource for Grafana 11, 12 and 13', () => {
    expect(plugin.type).toBe('datasource');
    expect(plugin.id).toBe('livedata-streaming-datasource');
    expect(plugin.streaming).toBe(true);
    // Grafana reads a `>=` range here; an upper bound would shut out future versions.
    const m = /^>=(\d+)\.(\d+)\.(\d+)$/.exec(plugin.dependencies.grafanaDependency);
    expect(m).not.toBeNull();
    const [major, minor] = [Number(m?.[1]), Number(m?.[2])];
    expect(major < 11 || (major === 11 && minor === 0)).toBe(true);
  });

  it('includes files that exist', () => {
    for (const include of plugin.includes) {
      expect(fs.existsSync(path.join(__dirname, '..', include.path))).toBe(true);
    }
    expect(fs.existsSync(path.join(__dirname, '..', plugin.info.logos.small))).toBe(true);
  });
});
