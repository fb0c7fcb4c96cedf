/**
 * @grafana/data (and react-use, which it imports) touch `window` and `document` when imported.
 * The tests run in Node so that real sockets and the real fetch/ReadableStream are used; jsdom
 * supplies only `window` and `document`.
 */
import { JSDOM } from 'jsdom';

const g = globalThis as Record<string, unknown>;

if (g.window === undefined) {
  const dom = new JSDOM('<!doctype html><html><head></head><body></body></html>', { url: 'http://localhost:3000/' });
  g.window = dom.window;
  g.document = dom.window.document;
}
