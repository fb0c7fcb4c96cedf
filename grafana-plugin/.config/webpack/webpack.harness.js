// The plugin test harness (harness/): a page that loads the BUILT plugin dist/module.js through a
// tiny AMD shim, with the real @grafana/data, rxjs and react bundled here in place of Grafana's.
// Test-only output: dist-harness/ (git-ignored); tests/browser serves it beside dist/module.js.
const path = require('path');
const CopyWebpackPlugin = require('copy-webpack-plugin');

const ROOT = path.resolve(__dirname, '..', '..');

module.exports = (env = {}) => {
  const production = Boolean(env.production) || !env.development;
  return {
    name: 'harness',
    mode: production ? 'production' : 'development',
    devtool: false,
    context: ROOT,
    target: 'web',
    entry: { harness: path.join(ROOT, 'harness', 'main.ts') },
    output: { clean: true, filename: '[name].js', path: path.join(ROOT, 'dist-harness') },
    resolve: { extensions: ['.ts', '.tsx', '.js', '.jsx', '.json'] },
    module: {
      rules: [
        {
          test: /\.tsx?$/,
          exclude: /node_modules/,
          use: {
            loader: 'swc-loader',
            options: { jsc: { target: 'es2020', parser: { syntax: 'typescript', tsx: true } } },
          },
        },
      ],
    },
    plugins: [new CopyWebpackPlugin({ patterns: [{ from: 'harness/index.html', to: '.' }] })],
    performance: { hints: false },
    stats: production ? 'errors-warnings' : 'minimal',
  };
};
