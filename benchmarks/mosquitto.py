"""A real ``mosquitto`` broker subprocess for tests and benchmarks: a generated config, a free port, restarts.

Debian's ``mosquitto`` and ``mosquitto-clients`` (installed by ``make system-deps``). The broker
keeps its sessions and retained messages in a temporary directory (``persistence true``), so a
restart on the same port keeps what a real broker keeps across a restart.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """``mosquitto -c <generated config>`` on 127.0.0.1 and a free port."""

    def __init__(self, port: int | None = None, users: dict[str, str] | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.port = port or _free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="livedata-mosquitto-")
        self.dir = Path(self._tmp.name)
        self.users = users or {}
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        lines = [
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # as root, mosquitto would switch to 'mosquitto'
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"log_dest file {self.dir}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        if self.users:
            pw = self.dir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        lines += self.extra
        path = self.dir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self._config())],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
            if _accepts(self.port):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "mosquitto.log").read_text()[-3000:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its sessions, queued and retained messages, then exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, down_s: float = 0.0, timeout: float = 10.0) -> Mosquitto:
        self.stop()
        deadline = time.monotonic() + timeout
        while _accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(down_s)
        return self.start(timeout)

    def pub(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False,
            user: tuple[str, str] | None = None) -> None:
        """One message with ``mosquitto_pub`` (the Debian client)."""
        args = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-t", topic, "-q", str(qos), "-s"]
        if retain:
            args.append("-r")
        if user:
            args += ["-u", user[0], "-P", user[1]]
        data = payload.encode() if isinstance(payload, str) else payload
        subprocess.run(args, input=data, check=True, timeout=10, capture_output=True)

    def pub_lines(self, topic: str, lines: Sequence[str], qos: int = 1) -> None:
        """Each line a message, from one ``mosquitto_pub -l`` connection."""
        args = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-t", topic, "-q", str(qos), "-l"]
        subprocess.run(args, input="".join(f"{x}\n" for x in lines).encode(), check=True, timeout=30,
                       capture_output=True)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._tmp.cleanup()
