/**
 * Start and stop a real `livedata serve` for the integration tests. The binary is
 * `../.venv/bin/livedata` (from grafana-plugin/) or $LIVEDATA_BIN.
 */
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';

export interface RunningServer {
  port: number;
  url: string;
  proc: ChildProcess;
  /** What the server printed, for failure messages. */
  output: () => string;
  stop: () => Promise<void>;
}

export function livedataBin(): string {
  const fromEnv = process.env.LIVEDATA_BIN;
  if (fromEnv) {
    return fromEnv;
  }
  return path.resolve(__dirname, '..', '..', '..', '.venv', 'bin', 'livedata');
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const resp = await fetch(`${url}/api/health`);
    if (!resp.ok) {
      return false;
    }
    const body = (await resp.json()) as { status?: string };
    return body.status === 'ok';
  } catch {
    return false;
  }
}

export async function startServer(opts: { port?: number; args?: string[]; timeoutMs?: number } = {}): Promise<RunningServer> {
  const bin = livedataBin();
  if (!fs.existsSync(bin)) {
    throw new Error(`livedata binary not found at ${bin}: create the venv (make install) or set LIVEDATA_BIN`);
  }
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  const args = ['serve', '--port', String(port), '--host', '127.0.0.1', '--log-level', 'warning', ...(opts.args ?? [])];
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  proc.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20000)));
  let exited: number | null = null;
  proc.on('exit', (code) => (exited = code ?? -1));

  const deadline = Date.now() + (opts.timeoutMs ?? 30000);
  while (!(await healthy(url))) {
    if (exited !== null) {
      throw new Error(`livedata serve exited with ${exited} before answering /api/health:\n${out}`);
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`livedata serve did not answer ${url}/api/health in time:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const stop = () =>
    new Promise<void>((resolve) => {
      if (exited !== null || proc.exitCode !== null) {
        resolve();
        return;
      }
      const killer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      proc.once('exit', () => {
        clearTimeout(killer);
        resolve();
      });
      proc.kill('SIGTERM');
    });
  return { port, url, proc, output: () => out, stop };
}
