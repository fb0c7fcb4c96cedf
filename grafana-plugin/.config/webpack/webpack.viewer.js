// The live view page of `livedata serve` (GET /): a plain browser bundle, nothing external. It uses
// the plugin's protocol client (src/client), so the page and the plugin share one implementation.
// Output: ../src/livedata/server/static/dist/ (served at /static/, shipped in the Python wheel).
const path = require('path');
const CopyWebpackPlugin = require('copy-webpack-plugin');
const webpack = require('webpack');

const ROOT = path.resolve(__dirname, '..', '..');
const OUT = path.resolve(ROOT, '..', 'src', 'livedata', 'server', 'static', 'dist');

module.exports = (env = {}) => {
  const production = Boolean(env.production) || !env.development;
  return {
    name: 'viewer',
    mode: production ? 'production' : 'development',
    // Source maps for the script only (not for the copied style sheets).
    devtool: false,
    context: ROOT,
    target: 'web',
    entry: { viewer: path.join(ROOT, 'viewer', 'index.ts') },
    output: { clean: true, filename: '[name].js', path: OUT, publicPath: '/static/' },
    resolve: { extensions: ['.ts', '.js'] },
    module: {
      rules: [
        {
          test: /\.ts$/,
          exclude: /node_modules/,
          use: {
            loader: 'swc-loader',
            options: { jsc: { target: 'es2020', parser: { syntax: 'typescript' } } },
          },
        },
      ],
    },
    plugins: [
      new webpack.SourceMapDevToolPlugin({ test: /\.js$/, filename: '[file].map' }),
      new CopyWebpackPlugin({
        patterns: [
          { from: 'viewer/viewer.css', to: '.' },
          { from: require.resolve('uplot/dist/uPlot.min.css'), to: '.' },
        ],
      }),
    ],
    performance: { hints: false },
    stats: production ? 'errors-warnings' : 'minimal',
  };
};
