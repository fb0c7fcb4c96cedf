// Production build in the layout @grafana/create-plugin generates: dist/module.js (AMD, loaded by
// Grafana's SystemJS), dist/plugin.json, README, img/ and dashboards/ copied beside it.
const path = require('path');
const CopyWebpackPlugin = require('copy-webpack-plugin');

const ROOT = path.resolve(__dirname, '..', '..');
const SRC = path.join(ROOT, 'src');
const DIST = path.join(ROOT, 'dist');
const pluginJson = require(path.join(SRC, 'plugin.json'));
const pkg = require(path.join(ROOT, 'package.json'));

// Provided by Grafana at run time; never bundled.
const EXTERNALS = [
  'react',
  'react-dom',
  '@grafana/data',
  '@grafana/runtime',
  '@grafana/ui',
  '@grafana/schema',
  'rxjs',
  'rxjs/operators',
  'lodash',
  '@emotion/css',
  '@emotion/react',
];

module.exports = (env = {}) => {
  const production = Boolean(env.production) || !env.development;
  return {
    mode: production ? 'production' : 'development',
    devtool: production ? 'source-map' : 'eval-source-map',
    context: ROOT,
    entry: { module: path.join(SRC, 'module.ts') },
    externals: EXTERNALS,
    output: {
      clean: true,
      filename: '[name].js',
      path: DIST,
      library: { type: 'amd' },
      publicPath: `public/plugins/${pluginJson.id}/`,
      uniqueName: pluginJson.id,
    },
    resolve: {
      extensions: ['.ts', '.tsx', '.js', '.jsx', '.json'],
      modules: [SRC, 'node_modules'],
    },
    module: {
      rules: [
        {
          test: /\.[tj]sx?$/,
          exclude: /node_modules/,
          use: {
            loader: 'swc-loader',
            options: {
              jsc: {
                target: 'es2018',
                loose: false,
                parser: { syntax: 'typescript', tsx: true, decorators: false, dynamicImport: true },
                transform: { react: { runtime: 'classic' } },
              },
            },
          },
        },
        { test: /\.svg$/, type: 'asset/resource', generator: { filename: 'img/[name][ext]' } },
      ],
    },
    plugins: [
      new CopyWebpackPlugin({
        patterns: [
          { from: 'README.md', to: '.' },
          {
            from: 'src/plugin.json',
            to: '.',
            transform(content) {
              return content
                .toString()
                .replace(/%VERSION%/g, pkg.version)
                .replace(/%TODAY%/g, new Date().toISOString().substring(0, 10));
            },
          },
          { from: 'src/img', to: 'img' },
          // The README's pictures, so its links work in the built plugin too.
          { from: 'img', to: 'img' },
          { from: 'src/dashboards', to: 'dashboards' },
        ],
      }),
    ],
    performance: { hints: false },
    stats: production ? 'errors-warnings' : 'minimal',
  };
};
