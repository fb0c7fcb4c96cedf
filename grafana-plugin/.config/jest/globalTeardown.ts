import type { RunningServer } from './livedataServer';

export default async function globalTeardown(): Promise<void> {
  const server = (globalThis as { __LIVEDATA_SERVER__?: RunningServer }).__LIVEDATA_SERVER__;
  if (server) {
    await server.stop();
  }
}
