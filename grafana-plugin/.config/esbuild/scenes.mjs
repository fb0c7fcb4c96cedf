// The @grafana/scenes test page (scenes/): the real dashboard engine, @grafana/ui and the data
// source services, bundled with esbuild into dist-scenes/ (git-ignored). The browser tests
// (tests/browser/test_scenes.py) serve it beside the built plugin dist/module.js.
import { build } from 'esbuild';
import { copyFile, cp, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = path.join(ROOT, 'dist-scenes');

await mkdir(OUT, { recursive: true });
await build({
  entryPoints: [path.join(ROOT, 'scenes', 'main.tsx')],
  outfile: path.join(OUT, 'scenes.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  sourcemap: false,
  jsx: 'transform',
  define: { 'process.env.NODE_ENV': '"production"', global: 'window' },
  loader: { '.svg': 'text', '.woff': 'empty', '.woff2': 'empty', '.ttf': 'empty', '.png': 'empty' },
  logLevel: 'warning',
});
await copyFile(path.join(ROOT, 'scenes', 'index.html'), path.join(OUT, 'index.html'));
// The icons @grafana/ui fetches from Grafana's public/ folder.
await cp(path.join(ROOT, 'node_modules', '@grafana', 'ui', 'dist', 'public', 'img', 'icons'), path.join(OUT, 'public', 'build', 'img', 'icons'), {
  recursive: true,
});
