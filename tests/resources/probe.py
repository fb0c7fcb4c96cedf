"""A health prober in its own process: ``python -m tests.resources.probe PORT OUT``.

Every 50 ms it opens a new connection, asks ``GET /api/health`` and writes the seconds the answer
took (or ``fail <reason>``) to OUT, as a load balancer's health check would; being another process,
the test's own work cannot delay it. Each line also has the time the same request took from a
*control*: a trivial HTTP server in a process of its own that does nothing else. The machine these
tests run on may be shared, and a busy machine delays every process; the control measures that
delay at the same moment, so the test can tell the server's own delays from the machine's.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

TIMEOUT_S = 5.0

CONTROL = r"""
import asyncio, sys
async def answer(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    body = b'{"status":"ok"}'
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def ask(port: int) -> str:
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                got = s.recv(4096)
                if not got:
                    break
                data += got
    except OSError as exc:
        return f"fail {type(exc).__name__}"
    took = time.perf_counter() - t0
    if not data.startswith(b"HTTP/1.1 200") or b'"status":"ok"' not in data:
        return f"fail {data[:60]!r}"
    return f"{took:.4f}"


def main() -> None:
    port, out = int(sys.argv[1]), sys.argv[2]
    control = subprocess.Popen([sys.executable, "-c", CONTROL], stdout=subprocess.PIPE, text=True)
    assert control.stdout is not None
    control_port = int(control.stdout.readline())

    def stop(*_: object) -> None:
        control.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(out, "w", buffering=1) as f:
        while True:
            target = ask(port)
            f.write(f"{target} {ask(control_port)}\n")
            time.sleep(0.05)


if __name__ == "__main__":
    main()
