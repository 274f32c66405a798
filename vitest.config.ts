import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // tfjs keeps global engine state (backend, tensor counts): one process per file.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    globalSetup: ['test/helpers/global-setup.ts'],
  },
});
