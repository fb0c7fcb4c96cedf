/** testDatasource() and metricFindQuery() against real servers, direct and through the proxy route. */
jest.mock('@grafana/runtime', () => jest.requireActual('../testing/runtime'));

import { RunningServer, freePort, startServer } from '../../.config/jest/livedataServer';
import { DataSource } from '../datasource';
import { collect, instanceSettings, makeRequest, serverUrl, waitFor } from '../testing/harness';
import { emulateCors, proxyFetch, resetRuntime, setProxyRoute } from '../testing/runtime';
import { LiveOptions } from '../types';

const PROXY = '/api/datasources/proxy/uid/livedata-test';

function direct(jsonData: Partial<LiveOptions>) {
  return new DataSource(instanceSettings({ url: serverUrl(), ...jsonData }));
}

function proxied(target: string, token?: string) {
  setProxyRoute({ prefix: `${PROXY}/livedata`, target, token });
  return new DataSource(instanceSettings({ url: target, access: 'proxy', throttleMs: 0 }, { url: PROXY }), {
    fetch: proxyFetch,
  });
}

afterEach(() => resetRuntime());

describe('testDatasource', () => {
  test('success names the version and the channels', async () => {
    const r = await direct({}).testDatasource();
    expect(r.status).toBe('success');
    expect(r.message).toMatch(/^livedata 0\.\d+\.\d+ is up at http:\/\/127\.0\.0\.1:\d+: \d+ channels\.$/);
  });

  test('connection refused says the server is not reachable', async () => {
    const port = await freePort();
    const r = await direct({ url: `http://127.0.0.1:${port}` }).testDatasource();
    expect(r.status).toBe('error');
    expect(r.message).toMatch(/^Cannot reach livedata at http:\/\/127\.0\.0\.1:\d+: connection refused/);
    expect(r.message).toMatch(/livedata serve/);
  });

  test('a wrong path says the URL must be the base URL', async () => {
    const r = await direct({ url: `${serverUrl()}/grafana` }).testDatasource();
    expect(r.status).toBe('error');
    expect(r.message).toMatch(/HTTP 404/);
    expect(r.message).toMatch(/base URL/);
  });

  test('a browser origin the server does not allow is reported as CORS', async () => {
    emulateCors('http://grafana.example:3000');
    const r = await direct({}).testDatasource();
    expect(r.status).toBe('error');
    expect(r.message).toMatch(/^Blocked by CORS/);
    expect(r.message).toMatch(/--cors-origin http:\/\/localhost:3000|--cors-origin/);
  });

  test('an allowed origin passes', async () => {
    emulateCors('http://localhost:3000');
    const r = await direct({}).testDatasource();
    expect(r.status).toBe('success');
  });

  test('through the proxy: unreachable target is a 502 turned into a sentence', async () => {
    const port = await freePort();
    const r = await proxied(`http://127.0.0.1:${port}`).testDatasource();
    expect(r.status).toBe('error');
    expect(r.message).toMatch(/^Grafana could not reach livedata/);
  });

  describe('with read tokens', () => {
    let server: RunningServer;
    beforeAll(async () => {
      server = await startServer({ args: ['--read-tokens', 'sesame'] });
    });
    afterAll(async () => {
      await server.stop();
    });

    test('direct access without a token says to use the proxy with a token', async () => {
      const r = await new DataSource(instanceSettings({ url: server.url })).testDatasource();
      expect(r.status).toBe('error');
      expect(r.message).toMatch(/wants a token \(HTTP 401\)/);
      expect(r.message).toMatch(/proxy/);
    });

    test('proxy with a wrong token says the token was refused', async () => {
      const r = await proxied(server.url, 'wrong').testDatasource();
      expect(r.status).toBe('error');
      expect(r.message).toMatch(/refused the token \(HTTP 401\)/);
    });

    test('proxy with the right token passes, and streams over HTTP through it', async () => {
      const ds = proxied(server.url, 'sesame');
      const r = await ds.testDatasource();
      expect(r.status).toBe('success');
      expect(r.message).toMatch(/through the Grafana proxy/);
      const c = collect(ds.query(makeRequest([{ channel: 'sine' }], { from: 'now-3s', to: 'now' })));
      try {
        const s = await waitFor(() => c.snapshots.find((x) => x.length > 20), 'data through the proxy');
        expect(s.fields).toEqual(['time', 'series0']);
      } finally {
        c.unsubscribe();
      }
    });

    test('streaming with a wrong token ends the query with an unauthorized error', async () => {
      const ds = proxied(server.url, 'wrong');
      const c = collect(ds.query(makeRequest([{ channel: 'sine' }], { from: 'now-3s', to: 'now' })));
      const s = await waitFor(() => c.snapshots.find((x) => x.error), 'error');
      expect(s.error).toMatch(/unauthorized \(HTTP 401\)/);
      c.unsubscribe();
    });
  });
});

describe('metricFindQuery', () => {
  test('lists channel names, filtered by substring or /regex/', async () => {
    const ds = direct({});
    const all = await ds.metricFindQuery('');
    const names = all.map((v) => v.text);
    expect(names).toEqual(expect.arrayContaining(['random-walk', 'sine']));
    expect((await ds.metricFindQuery('sin')).map((v) => v.text)).toContain('sine');
    expect((await ds.metricFindQuery('/^random/')).every((v) => String(v.text).startsWith('random'))).toBe(true);
  });
});
