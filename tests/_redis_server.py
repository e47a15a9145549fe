"""A private ``redis-server`` for the tests: started on a free port, killed, paused, restarted.

The Redis store's tests never touch a shared server (a developer's, or the
machine's on 6379): each test session starts its own, with the append-only
file on (``appendfsync always``), in a temporary directory. Without the
binary the tests skip, saying why; with ``HARN_INBOX_REQUIRE_REDIS=1`` (what
``.ci/run`` sets) that skip is a failure, so CI always runs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from typing import IO, TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

#: Set (to anything but "" or "0") to make a missing redis-server fail the tests instead.
REQUIRE = "HARN_INBOX_REQUIRE_REDIS"


def find_redis_server() -> str:
    """The path of ``redis-server``; skip (or fail, under CI) without it."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = (
            "redis-server is not on PATH: the Redis store's tests start their own "
            "(install Redis 7, e.g. 'apt install redis-server')"
        )
        if os.environ.get(REQUIRE, "") not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE} is set, so this is a failure", pytrace=False)
        pytest.skip(reason)
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process of the tests' own, and what a fault test does to it."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def namespace(self) -> str:
        """A namespace no other test uses (the server is shared by the test session)."""
        return f"t{uuid.uuid4().hex[:12]}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._until_ready(self.process)

    @staticmethod
    def _until_ready(process: subprocess.Popen[bytes]) -> None:
        """Read the server's log until it says it accepts connections (after loading its AOF).

        An event, not a poll: the log line is written once the server listens.
        The rest of the log is read by a daemon thread, so the server never
        blocks on a full pipe.
        """
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if b"Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(
                f"redis-server exited with {process.wait()}: {b''.join(seen[-5:]).decode()!r}"
            )
        threading.Thread(target=_read_to_the_end, args=(process.stdout,), daemon=True).start()

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash (the append-only file keeps what was fsynced)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Kill it, then start it again on the same port and directory (it replays its AOF)."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def command(self, *words: str) -> bytes:
        """Send one command over a raw connection of our own; return the raw reply."""
        payload = f"*{len(words)}\r\n".encode() + b"".join(
            f"${len(word.encode())}\r\n{word}\r\n".encode() for word in words
        )
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(payload)
            return conn.recv(65536)

    def subscriptions(self, namespace: str, session_id: str = "s") -> int:
        """How many connections are subscribed to the session's wake channel."""
        return integer(self.command("PUBSUB", "NUMSUB", f"{namespace}:wake:{session_id}"))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            self.process.wait()


def integer(reply: bytes) -> int:
    """The integer that ends a raw RESP reply: ``:2``, or the count closing ``PUBSUB NUMSUB``."""
    return int(reply.rsplit(b":", 1)[1].strip())


def _read_to_the_end(stream: IO[bytes]) -> None:
    """Read the rest of a server's log (it ends when the server does), then close it."""
    with stream:
        stream.read()
