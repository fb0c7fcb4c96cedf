const path = require('path');

// ES-module-only packages that @grafana/data pulls in; Jest (CommonJS) must transform them.
const ESM_PACKAGES = ['d3', 'd3-[a-z-]+', 'internmap', 'ol', 'marked', 'marked-mangle', 'uuid', 'react-colorful'];

module.exports = {
  rootDir: path.resolve(__dirname, '..', '..'),
  testEnvironment: 'node',
  // setupWindow.ts puts a jsdom window on the global: keep it for the whole file.
  testEnvironmentOptions: { globalsCleanup: 'off' },
  transform: {
    '^.+\\.(t|j)sx?$|^.+\\.mjs$': [
      '@swc/jest',
      {
        jsc: {
          parser: { syntax: 'typescript', tsx: true },
          transform: { react: { runtime: 'classic' } },
          target: 'es2022',
        },
      },
    ],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_PACKAGES.join('|')})/)`],
  setupFiles: ['<rootDir>/.config/jest/setupWindow.ts'],
  moduleFileExtensions: ['ts', 'tsx', 'js', 'jsx', 'json', 'cjs', 'mjs'],
};
