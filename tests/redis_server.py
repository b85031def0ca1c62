"""A real ``redis-server`` of a test's own, as a subprocess on a free 127.0.0.1 port.

Debian's ``redis-server`` (``make setup``, scripts/install-tools.sh) runs with nothing on disk
(``--save ""``, ``--appendonly no``, its directory a fresh temporary one) and the DEBUG command
enabled for local clients (``DEBUG SLEEP`` makes it answer late). :meth:`RedisServer.kill` ends
it with SIGKILL, as a crash or an OOM kill would; :meth:`RedisServer.start` brings it back on
the same port, empty. Never shared: each test (or module) starts its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support import LOCALHOST, free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_SECONDS = 10.0


class RedisServer:
    def __init__(self, *extra_args: str) -> None:
        self.port = free_port()
        self.extra_args = extra_args
        self._dir = tempfile.mkdtemp(prefix="rk-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self) -> None:
        """Start it (again) on its port and wait until it answers PING."""
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                LOCALHOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--enable-debug-command",
                "local",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.01)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # "+PONG", or "-NOAUTH" from a server with a password: either way it is serving.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL, as a crash would: connections are reset, nothing is saved."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def redis_server(*extra_args: str) -> Iterator[RedisServer]:
    """A started server, killed and removed when the block exits."""
    server = RedisServer(*extra_args)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
