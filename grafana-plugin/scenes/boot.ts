/**
 * What Grafana's index page puts on `window` before any of its code runs: the boot data
 * `@grafana/runtime`'s `config` is made from. Imported first by main.tsx.
 */
(window as unknown as { grafanaBootData: unknown }).grafanaBootData = {
  settings: { buildInfo: { version: '13.1.0', edition: 'Open Source' }, featureToggles: {} },
  user: { theme: 'dark', timezone: 'browser', locale: 'en-US', language: 'en-US' },
  navTree: [],
};
