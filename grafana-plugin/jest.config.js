// Two projects: `unit` (fake WebSocket, no server) and `integration` (a real `livedata serve`,
// started once by .config/jest/globalSetup.ts on a free port).
const base = require('./.config/jest/jest.base.js');

module.exports = {
  testTimeout: 30000,
  projects: [
    {
      ...base,
      displayName: 'unit',
      testMatch: ['<rootDir>/src/**/*.test.ts'],
      testPathIgnorePatterns: ['/node_modules/', '<rootDir>/src/integration/'],
    },
    {
      ...base,
      displayName: 'integration',
      testMatch: ['<rootDir>/src/integration/**/*.test.ts'],
      globalSetup: '<rootDir>/.config/jest/globalSetup.ts',
      globalTeardown: '<rootDir>/.config/jest/globalTeardown.ts',
    },
  ],
};
