import { startServer } from './livedataServer';

/** One real `livedata serve` for the integration suite; its URL goes to the workers by env. */
export default async function globalSetup(): Promise<void> {
  const server = await startServer();
  process.env.LIVEDATA_URL = server.url;
  (globalThis as { __LIVEDATA_SERVER__?: typeof server }).__LIVEDATA_SERVER__ = server;
}
